"""The node graphs, declared once.

`launch/*.launch.py` (for `ros2 launch` on a robot with a full ROS 2 install) and `lapa bringup` /
`lapa demo` (which start the same nodes as processes where `ros2 launch` is not available) both read
these declarations, so the two cannot drift apart. No rclpy import: launch files import this too.

A graph is a function of its launch arguments (all strings, as `ros2 launch` passes them) returning
NodeSpecs. Each argument is declared once, with its default, in a table (name, default, description);
the functions take every argument by keyword and have no defaults of their own (build_graph fills them).

  policy       robot: camera + policy + arm_controller (ros2 launch lapa_ros policy.launch.py)
  sim_policy   simulated arm + policy + arm_controller (what `make demo` runs)
  sim_teleop   simulated arm + arm_controller + an operator (the scripted expert in simulation)
  record       robot: camera + arm_controller + recorder + a teleop device (ros2 launch lapa_ros record.launch.py)
  sim_record   sim_teleop + recorder: demonstrations recorded to bags in simulation

The sim graphs take `robot`: sawyer (sim_robot: Meta-World, end-effector twists, the arm controller's
`sim` backend) or panda (panda_sim: a Franka behind ros2_control's joint topics, the arm controller's
`controller` backend, joint_trajectory or forward_position, with IK on urdf/panda.urdf); `auto`, the
default, is the robot of `task` in the task catalogue. Either simulated arm runs as node `sim_robot`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from lapa_ros.bringup.paths import config_file


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    name: str                       # node name
    executable: str                 # console script: `ros2 run lapa_ros <executable>`
    module: str                     # the module holding the node, its main() and its PARAMS
    config: Tuple[str, ...] = ()    # YAML parameter files in config/: the node's own first, then overrides
    parameters: Mapping[str, object] = dataclasses.field(default_factory=dict)  # overrides, applied last
    remappings: Tuple[Tuple[str, str], ...] = ()
    namespace: str = ""
    prefix: Tuple[str, ...] = ()    # command prefix (e.g. a debugger or `prlimit`), as launch_ros' `prefix`
    respawn: bool = False           # restart the node when it exits, as launch_ros' `respawn`; else the
    respawn_delay: float = 2.0      #   graph is brought down ([s] before restarting)
    stop_last: bool = False         # stopped after every other node (the arm controller: it holds the arm
                                    #   while the nodes that command it go away)

    def config_paths(self) -> List[Path]:
        return [config_file(c) for c in self.config]


@dataclasses.dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


def _bool(value: str, name: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got '{value}'")


def _sim_time(real_time: bool) -> Dict[str, object]:
    return {} if real_time else {"use_sim_time": True}


SIM_ROBOTS = ("sawyer", "panda")
PANDA_CONTROLLERS = ("joint_trajectory", "forward_position")


def sim_robot_choice(robot: str, task: str) -> str:
    """The simulated robot of a sim graph: `robot` (sawyer, panda), or with `auto` the robot of `task` in
    the task catalogue (a task of another robot than the one asked for is an error)."""
    if robot not in SIM_ROBOTS + ("auto",):
        raise ValueError(f"robot must be auto, {' or '.join(SIM_ROBOTS)}, got '{robot}'")
    from lapa_sim.tasks import UnknownTaskError, get_task

    try:
        task_robot = get_task(task).robot
    except UnknownTaskError:
        return "sawyer" if robot == "auto" else robot   # the node refuses the task with the list of valid ones
    if robot != "auto" and task_robot != robot:
        raise ValueError(f"task '{task}' runs on the {task_robot}, not the {robot}: choose a {robot} task "
                         f"(lapa_sim/tasks.yaml) or robot:={task_robot}")
    return task_robot


# --------------------------------------------------------------------------- nodes
def sim_robot_node(task: str, real_time: bool, lockstep: bool = False) -> NodeSpec:
    return NodeSpec(name="sim_robot", executable="sim_robot_node", module="lapa_ros.nodes.sim_robot",
                    config=("sim_robot.yaml",),
                    parameters={"task": task, "real_time": real_time, "lockstep": lockstep})


def panda_sim_node(task: str, real_time: bool, lockstep: bool = False) -> NodeSpec:
    """The simulated Panda, named sim_robot like the Sawyer: episode runner, evaluation and tests address either."""
    return NodeSpec(name="sim_robot", executable="panda_sim_node", module="lapa_ros.nodes.panda_sim",
                    config=("panda_sim.yaml",),
                    parameters={"task": task, "real_time": real_time, "lockstep": lockstep})


def simulated_arm_node(robot: str, task: str, real_time: bool, lockstep: bool = False) -> NodeSpec:
    return (panda_sim_node if robot == "panda" else sim_robot_node)(task, real_time, lockstep)


def arm_controller_node(sim: bool, backend: str = "", real_time: bool = True, robot: str = "sawyer",
                        **overrides) -> NodeSpec:
    """sim: the simulated `robot` (sawyer: backend sim at its 20 Hz; panda: the given joint backend)."""
    params: Dict[str, object] = {**_sim_time(real_time), **overrides}
    if backend:
        params["backend"] = backend
    sim_config = ("arm_controller_panda_sim.yaml",) if robot == "panda" else ("arm_controller_sim.yaml",)
    return NodeSpec(name="arm_controller", executable="arm_controller_node", module="lapa_ros.nodes.arm_controller",
                    config=("arm_controller.yaml",) + (sim_config if sim else ()),
                    parameters=params, stop_last=True)


def sim_arm_controller_node(robot: str, controller: str, real_time: bool) -> NodeSpec:
    if robot != "panda":
        return arm_controller_node(sim=True, real_time=real_time)
    if controller not in PANDA_CONTROLLERS:
        raise ValueError(f"controller must be {' or '.join(PANDA_CONTROLLERS)} for the simulated Panda, "
                         f"got '{controller}'")
    return arm_controller_node(sim=True, backend=controller, real_time=real_time, robot="panda")


def policy_node(model_dir: str, sim: bool, real_time: bool = True, robot: str = "sawyer", **overrides) -> NodeSpec:
    """sim: the simulated Sawyer's settings (its base frame); the simulated Panda takes the robot defaults."""
    return NodeSpec(name="policy", executable="policy_node", module="lapa_ros.nodes.policy",
                    config=("policy.yaml",) + (("policy_sim.yaml",) if sim and robot != "panda" else ()),
                    parameters={"model_dir": model_dir, **_sim_time(real_time), **overrides})


def camera_node(backend: str, serial: str = "", device: str = "0", video_path: str = "") -> NodeSpec:
    # A camera driver that dies (USB reset) is restarted; meanwhile the policy gets no frames and the arm holds.
    return NodeSpec(name="camera", executable="camera_node", module="lapa_ros.nodes.camera", config=("camera.yaml",),
                    parameters={"backend": backend, "serial": serial, "device": device, "video_path": video_path},
                    respawn=True)


def recorder_node(output_dir: str, operator: str = "", real_time: bool = True, sim_robot: str = "") -> NodeSpec:
    """sim_robot: the simulated robot whose gripper mapping goes into each bag (else recorder.yaml's)."""
    params: Dict[str, object] = {"output_dir": output_dir, "operator": operator, **_sim_time(real_time)}
    if sim_robot:
        from lapa_sim.tasks import robot_gripper

        g = robot_gripper(sim_robot)
        params.update(gripper_joint=g.joint, gripper_open_position=float(g.open_position),
                      gripper_closed_position=float(g.closed_position))
    return NodeSpec(name="recorder", executable="recorder_node", module="lapa_ros.nodes.recorder",
                    config=("recorder.yaml",), parameters=params)


def joy_teleop_node(profile: str, device: str = "") -> NodeSpec:
    # A teleop device that dies stops commanding (the controller's watchdog holds); it is restarted.
    return NodeSpec(name=f"{profile}_teleop", executable=f"{profile}_teleop_node", module="lapa_ros.teleop.joy_teleop",
                    config=(f"{profile}_teleop.yaml",), parameters={"device": device} if device else {},
                    respawn=True)


def scripted_expert_node(real_time: bool = True, robot: str = "sawyer") -> NodeSpec:
    # Twists in the arm controller's base frame: the Sawyer world's, or the Panda's base link.
    frame = {"base_frame": "panda_link0"} if robot == "panda" else {}
    return NodeSpec(name="scripted_expert", executable="scripted_expert_node",
                    module="lapa_ros.teleop.scripted_expert", config=("scripted_expert.yaml",),
                    parameters={**_sim_time(real_time), **frame})


# --------------------------------------------------------------------------- graphs
# Arguments the robot graphs (policy, record) share.
CAMERA_ARG = LaunchArgument("camera", "realsense", "Camera backend: realsense, v4l2 or video.")
CAMERA_SERIAL_ARG = LaunchArgument("camera_serial", "", "RealSense serial number (empty: the only camera).")
ROBOT_CONTROLLER_ARG = LaunchArgument("controller", "servo",
                                      "Arm backend: servo (MoveIt Servo), joint_trajectory or forward_position.")

POLICY_ARGS = (
    LaunchArgument("model", "", "Exported policy folder (lapa policy export)."),
    CAMERA_ARG,
    CAMERA_SERIAL_ARG,
    LaunchArgument("camera_device", "0", "V4L2 device index or path."),
    LaunchArgument("video_path", "", "Video file for camera:=video."),
    ROBOT_CONTROLLER_ARG,
    LaunchArgument("robot_description", "panda.urdf", "URDF for IK and joint limits (file in urdf/ or a path)."),
    LaunchArgument("providers", "auto", "ONNX Runtime execution providers, e.g. tensorrt,cuda,cpu."),
)


def policy_graph(*, model: str, camera: str, camera_serial: str, camera_device: str, video_path: str,
                 controller: str, robot_description: str, providers: str) -> List[NodeSpec]:
    """On the robot: camera + policy + safety-gated arm controller."""
    return [camera_node(camera, camera_serial, camera_device, video_path),
            policy_node(model, sim=False, providers=providers),
            arm_controller_node(sim=False, backend=controller, robot_description_file=robot_description)]


SIM_ROBOT_ARGS = (
    LaunchArgument("robot", "auto", "Simulated arm: sawyer (Meta-World, twists), panda (Franka behind ros2_control "
                                    "joint topics), or auto: the robot of the task (lapa_sim/tasks.yaml)."),
    LaunchArgument("controller", "joint_trajectory", "Arm controller backend for robot:=panda: joint_trajectory or "
                                                     "forward_position (the Sawyer takes twists: backend sim)."),
)

SIM_POLICY_ARGS = (
    LaunchArgument("model", "", "Exported policy folder (lapa policy export)."),
    LaunchArgument("task", "reach", "Simulated task to start with (lapa_sim/tasks.yaml)."),
    LaunchArgument("real_time", "true", "Step the simulated arm on the wall clock (false: sim time, /clock)."),
    LaunchArgument("lockstep", "false", "With real_time false: each step waits for the command answering the last image."),
) + SIM_ROBOT_ARGS


def sim_policy_graph(*, model: str, task: str, real_time: str, lockstep: str, robot: str,
                     controller: str) -> List[NodeSpec]:
    """The simulated arm run by the policy, behind the same controller and safety gate as a robot."""
    rt = _bool(real_time, "real_time")
    robot = sim_robot_choice(robot, task)
    return [simulated_arm_node(robot, task, rt, _bool(lockstep, "lockstep")),
            policy_node(model, sim=True, real_time=rt, robot=robot),
            sim_arm_controller_node(robot, controller, rt)]


SIM_TELEOP_ARGS = (
    LaunchArgument("task", "push", "Simulated task to start with (lapa_sim/tasks.yaml)."),
    LaunchArgument("real_time", "true", "Step the simulated arm on the wall clock (false: sim time, /clock)."),
    LaunchArgument("lockstep", "false", "With real_time false: each step waits for the command answering the last image."),
) + SIM_ROBOT_ARGS


def sim_teleop_graph(*, task: str, real_time: str, lockstep: str, robot: str, controller: str) -> List[NodeSpec]:
    """The simulated arm operated through the arm controller by the scripted expert."""
    rt = _bool(real_time, "real_time")
    robot = sim_robot_choice(robot, task)
    return [simulated_arm_node(robot, task, rt, _bool(lockstep, "lockstep")), sim_arm_controller_node(robot, controller, rt),
            scripted_expert_node(rt, robot)]


RECORD_ARGS = (
    LaunchArgument("teleop", "gamepad", "Operator device: gamepad, spacemouse, or none (run keyboard_teleop_node "
                                        "in its own terminal)."),
    LaunchArgument("teleop_device", "", "Read this /dev/input/eventN instead of the joy/spacenav driver's topic."),
    LaunchArgument("output_dir", "bags", "Folder for the episode bags."),
    LaunchArgument("operator", "", "Operator name stored in each bag."),
    CAMERA_ARG,
    CAMERA_SERIAL_ARG,
    ROBOT_CONTROLLER_ARG,
)


def record_graph(*, teleop: str, teleop_device: str, output_dir: str, operator: str, camera: str, camera_serial: str,
                 controller: str) -> List[NodeSpec]:
    """Teleoperated demonstrations on the robot: camera + arm controller + recorder (+ a joy device)."""
    nodes = [camera_node(camera, camera_serial), arm_controller_node(sim=False, backend=controller),
             recorder_node(output_dir, operator)]
    if teleop in ("gamepad", "spacemouse"):
        nodes.append(joy_teleop_node(teleop, teleop_device))
    elif teleop not in ("none", "keyboard"):
        raise ValueError(f"teleop must be gamepad, spacemouse, keyboard or none, got '{teleop}'")
    return nodes


SIM_RECORD_ARGS = SIM_TELEOP_ARGS + (
    LaunchArgument("output_dir", "bags", "Folder for the episode bags."),
)


def sim_record_graph(*, task: str, real_time: str, lockstep: str, robot: str, controller: str,
                     output_dir: str) -> List[NodeSpec]:
    """The simulated arm operated by the scripted expert, recorded to bags."""
    return sim_teleop_graph(task=task, real_time=real_time, lockstep=lockstep, robot=robot, controller=controller) + \
        [recorder_node(output_dir, "scripted_expert", _bool(real_time, "real_time"), sim_robot=sim_robot_choice(robot, task))]


GRAPHS: Dict[str, Tuple[Callable[..., List[NodeSpec]], Sequence[LaunchArgument]]] = {
    "record": (record_graph, RECORD_ARGS),
    "sim_record": (sim_record_graph, SIM_RECORD_ARGS),
    "policy": (policy_graph, POLICY_ARGS),
    "sim_policy": (sim_policy_graph, SIM_POLICY_ARGS),
    "sim_teleop": (sim_teleop_graph, SIM_TELEOP_ARGS),
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
