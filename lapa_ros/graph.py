"""The node graphs, declared once.

`launch/*.launch.py` (for `ros2 launch` on a robot with a full ROS 2 install) and `lapa bringup` /
`lapa demo` (which start the same nodes as processes where `ros2 launch` is not available) both read
these declarations, so the two cannot drift apart. No rclpy import: launch files import this too.

A graph is a function of its launch arguments (all strings, as `ros2 launch` passes them) returning
NodeSpecs. Each argument is declared once in a table (name, default, description).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from .paths import config_file


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    name: str                       # node name
    executable: str                 # console script: `ros2 run lapa_ros <executable>`
    module: str                     # the same node as `python -m <module>`
    config: Tuple[str, ...] = ()    # YAML parameter files in config/, applied in order
    parameters: Mapping[str, object] = dataclasses.field(default_factory=dict)  # overrides, applied last
    remappings: Tuple[Tuple[str, str], ...] = ()
    namespace: str = ""

    def config_paths(self) -> List[Path]:
        return [config_file(c) for c in self.config]


@dataclasses.dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


def _bool(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got '{value}'")


# --------------------------------------------------------------------------- nodes
def sim_robot(task: str, real_time: bool, lockstep: bool = False) -> NodeSpec:
    return NodeSpec(name="sim_robot", executable="sim_robot_node", module="lapa_ros.nodes.sim_robot",
                    config=("sim_robot.yaml",),
                    parameters={"task": task, "real_time": real_time, "lockstep": lockstep})


def scripted_expert(remap_to_robot: bool) -> NodeSpec:
    remaps = (("arm_controller/twist_cmd", "servo_node/delta_twist_cmds"),
              ("arm_controller/gripper_cmd", "gripper/command")) if remap_to_robot else ()
    return NodeSpec(name="scripted_expert", executable="scripted_expert_node",
                    module="lapa_ros.teleop.scripted_expert", config=("scripted_expert.yaml",), remappings=remaps)


# --------------------------------------------------------------------------- graphs
SIM_EXPERT_ARGS = (
    LaunchArgument("task", "push", "Simulated task to start with (lapa_sim/tasks.yaml)."),
    LaunchArgument("real_time", "true", "Step the simulated arm on the wall clock (false: as fast as possible, /clock)."),
    LaunchArgument("lockstep", "false", "With real_time false: each step waits for the command answering the last image."),
)


def sim_expert_graph(task: str = "push", real_time: str = "true", lockstep: str = "false") -> List[NodeSpec]:
    """The simulated arm driven by its scripted expert (no policy, no controller)."""
    return [sim_robot(task, _bool(real_time), _bool(lockstep)), scripted_expert(remap_to_robot=True)]


GRAPHS: Dict[str, Tuple[Callable[..., List[NodeSpec]], Sequence[LaunchArgument]]] = {
    "sim_expert": (sim_expert_graph, SIM_EXPERT_ARGS),
}


def build_graph(name: str, arguments: Mapping[str, str] | None = None) -> List[NodeSpec]:
    """The NodeSpecs of graph ``name`` with launch arguments (defaults for those not given)."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph '{name}'; graphs: {', '.join(GRAPHS)}")
    fn, declared = GRAPHS[name]
    known = {a.name: a.default for a in declared}
    unknown = set(arguments or {}) - set(known)
    if unknown:
        raise ValueError(f"graph '{name}' has no argument(s) {sorted(unknown)}; arguments: {', '.join(known)}")
    return fn(**{**known, **(arguments or {})})
