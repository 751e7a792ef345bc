"""The simulated task catalogue: names, robots, instructions, cameras and experts, read from tasks.yaml.

The list of tasks is data (``tasks.yaml`` beside this file, or the file named by the environment
variable ``LAPA_TASKS_FILE``); this module only parses and validates it. A task runs on one robot
(``robot``: ``sawyer``, the default, for Meta-World environments; ``panda`` for lapa_sim.panda's) and
needs an environment of that robot and instructions; its scripted expert is optional in the file, and
a command that needs one (episode generation, the benchmark) says so when it is missing.
"""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

TASKS_FILE = Path(__file__).with_name("tasks.yaml")
# The simulated robots: sawyer (Meta-World, lapa_sim.world, ROS node sim_robot) and panda (lapa_sim.panda,
# ROS node panda_sim, behind ros2_control's joint topics).
ROBOTS = ("sawyer", "panda")


class UnknownTaskError(ValueError):
    """A task (or task set) name that the catalogue does not have."""

    def __init__(self, name: str, valid: Sequence[str]):
        self.name = name
        self.valid = sorted(valid)
        super().__init__(f"unknown task '{name}'; valid tasks: {', '.join(self.valid)}")


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """Either a free camera (lookat, distance, azimuth, elevation) or a camera named in the model."""

    lookat: Tuple[float, float, float] = (0.0, 0.65, 0.1)
    distance: float = 1.2
    azimuth: float = 135.0
    elevation: float = -30.0
    fovy: float = 45.0
    name: Optional[str] = None

    @classmethod
    def from_dict(cls, d: dict) -> "CameraSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"camera: unknown keys {sorted(extra)}; expected some of {sorted(known)}")
        d = dict(d)
        if "lookat" in d:
            d["lookat"] = tuple(float(v) for v in d["lookat"])
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """A variation of the scene for cross-environment experiments: camera changes and lighting.

    camera: fields of CameraSpec replaced on the task's own (free) camera, e.g. {azimuth: 100};
    light:  headlight ``ambient`` / ``diffuse`` RGB and ``scale`` (multiplies the model's own lights)."""

    name: str
    camera: Tuple[Tuple[str, object], ...] = ()
    light: Tuple[Tuple[str, object], ...] = ()

    LIGHT_KEYS = ("ambient", "diffuse", "scale")

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "ViewSpec":
        d = dict(d or {})
        extra = set(d) - {"camera", "light"}
        if extra:
            raise ValueError(f"view '{name}': unknown keys {sorted(extra)}; expected camera and/or light")
        camera = dict(d.get("camera") or {})
        CameraSpec.from_dict({**dataclasses.asdict(CameraSpec()), **camera})   # validates the keys
        light = dict(d.get("light") or {})
        bad = set(light) - set(cls.LIGHT_KEYS)
        if bad:
            raise ValueError(f"view '{name}': unknown light keys {sorted(bad)}; expected {list(cls.LIGHT_KEYS)}")
        for key in ("ambient", "diffuse"):
            if key in light and (len(light[key]) != 3 or not all(0 <= float(v) <= 1 for v in light[key])):
                raise ValueError(f"view '{name}': light.{key} must be 3 values in [0, 1], got {light[key]}")
        if "scale" in light and not 0 <= float(light["scale"]) <= 10:
            raise ValueError(f"view '{name}': light.scale must be in [0, 10], got {light['scale']}")
        freeze = lambda m: tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in m.items()))  # noqa
        return cls(name=name, camera=freeze(camera), light=freeze(light))

    def apply_camera(self, camera: CameraSpec) -> CameraSpec:
        changes = dict(self.camera)
        if "lookat" in changes:
            changes["lookat"] = tuple(float(v) for v in changes["lookat"])
        return dataclasses.replace(camera, **changes) if changes else camera


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    env: str
    expert: Optional[str]
    instructions: Tuple[str, ...]
    max_steps: int
    camera: CameraSpec
    robot: str = "sawyer"

    @property
    def instruction(self) -> str:
        """The canonical instruction (the first paraphrase)."""
        return self.instructions[0]


@dataclasses.dataclass(frozen=True)
class TaskCatalogue:
    tasks: Dict[str, TaskSpec]
    task_sets: Dict[str, Tuple[str, ...]]
    views: Dict[str, ViewSpec] = dataclasses.field(default_factory=dict)

    def view(self, name: Optional[str]) -> Optional[ViewSpec]:
        """A named view, or None for the tasks' own scene ('' / 'default' / None)."""
        if name in (None, "", "default"):
            return None
        if name not in self.views:
            raise ValueError(f"unknown view '{name}'; views in the catalogue: {', '.join(sorted(self.views)) or 'none'}")
        return self.views[name]

    def get(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise UnknownTaskError(name, self.tasks)
        return self.tasks[name]

    def resolve(self, names: str | Sequence[str]) -> List[TaskSpec]:
        """Task specs for a comma-separated list of task and task-set names ('mt10', 'push,reach')."""
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        out: List[TaskSpec] = []
        for n in names:
            if n == "all":
                out.extend(self.tasks.values())
            elif n in self.task_sets:
                out.extend(self.tasks[t] for t in self.task_sets[n])
            elif n in self.tasks:
                out.append(self.tasks[n])
            else:
                raise UnknownTaskError(n, list(self.tasks) + [f"{s} (set)" for s in self.task_sets])
        seen = set()
        return [t for t in out if not (t.name in seen or seen.add(t.name))]


def parse_catalogue(raw: dict) -> TaskCatalogue:
    defaults = raw.get("defaults", {})
    default_cam = defaults.get("camera", {})
    tasks: Dict[str, TaskSpec] = {}
    for name, t in (raw.get("tasks") or {}).items():
        missing = {"env", "instructions"} - set(t)
        if missing:
            raise ValueError(f"task '{name}': missing {sorted(missing)}")
        instructions = tuple(str(s).strip() for s in t["instructions"] if str(s).strip())
        if not instructions:
            raise ValueError(f"task '{name}': needs at least one instruction")
        cam = CameraSpec.from_dict({**default_cam, **t.get("camera", {})})
        expert = str(t["expert"]).strip() if t.get("expert") else None
        robot = str(t.get("robot", defaults.get("robot", "sawyer")))
        if robot not in ROBOTS:
            raise ValueError(f"task '{name}': unknown robot '{robot}'; robots: {', '.join(ROBOTS)}")
        tasks[name] = TaskSpec(name=name, env=t["env"], expert=expert, instructions=instructions,
                               max_steps=int(t.get("max_steps", defaults.get("max_steps", 100))),
                               camera=cam, robot=robot)
    sets: Dict[str, Tuple[str, ...]] = {}
    for set_name, members in (raw.get("task_sets") or {}).items():
        for m in members:
            if m not in tasks:
                raise ValueError(f"task set '{set_name}' names unknown task '{m}'")
        sets[set_name] = tuple(members)
    views = {name: ViewSpec.from_dict(name, v) for name, v in (raw.get("views") or {}).items()}
    return TaskCatalogue(tasks=tasks, task_sets=sets, views=views)


def catalogue_path() -> Path:
    """The catalogue in use: $LAPA_TASKS_FILE when set, else tasks.yaml beside this module."""
    return Path(os.environ.get("LAPA_TASKS_FILE") or TASKS_FILE)


def load_catalogue(path: Optional[str] = None) -> TaskCatalogue:
    return _load(str(Path(path) if path else catalogue_path()))


@lru_cache(maxsize=8)
def _load(path: str) -> TaskCatalogue:
    if not Path(path).is_file():
        raise FileNotFoundError(f"task catalogue {path} does not exist")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"task catalogue {path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"task catalogue {path}: expected a mapping with 'tasks'")
    return parse_catalogue(raw)


def check_runnable(spec: TaskSpec) -> None:
    """Raise a clear ValueError unless the task's robot has its environment and scripted expert."""
    if spec.robot == "panda":
        from .panda.envs import ENVS
        from .panda.experts import EXPERTS

        if spec.env not in ENVS:
            raise ValueError(f"task '{spec.name}': the Panda has no environment '{spec.env}' ({', '.join(ENVS)})")
        if not spec.expert:
            raise ValueError(f"task '{spec.name}' has no scripted expert in the catalogue: episodes (video and "
                             "demonstrations) cannot be generated for it; add `expert: <class in "
                             "lapa_sim.panda.experts>`")
        if spec.expert not in EXPERTS:
            raise ValueError(f"task '{spec.name}': lapa_sim.panda.experts has no expert '{spec.expert}'")
        return
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs
    import metaworld.policies as policies

    if f"{spec.env}-goal-observable" not in envs:
        raise ValueError(f"task '{spec.name}': Meta-World has no environment '{spec.env}'")
    if not spec.expert:
        raise ValueError(f"task '{spec.name}' has no scripted expert in the catalogue: episodes (video and "
                         "demonstrations) cannot be generated for it; add `expert: <class in metaworld.policies>`")
    if getattr(policies, spec.expert, None) is None:
        raise ValueError(f"task '{spec.name}': metaworld.policies has no expert '{spec.expert}'")


def get_task(name: str) -> TaskSpec:
    return load_catalogue().get(name)


def task_names(robot: Optional[str] = None) -> List[str]:
    """Every task of the catalogue, or those of one robot."""
    return [name for name, spec in load_catalogue().tasks.items() if robot is None or spec.robot == robot]


def robot_gripper(robot: str):
    """The GripperMapping of a simulated robot's joint_states (which finger joint, open and closed)."""
    if robot == "panda":
        from .panda.model import GRIPPER
        return GRIPPER
    if robot == "sawyer":
        from .world import GRIPPER
        return GRIPPER
    raise ValueError(f"unknown robot '{robot}'; robots: {', '.join(ROBOTS)}")


def make_world(task: str | TaskSpec, **kwargs):
    """The simulated world of a task's robot: lapa_sim.world.SimWorld (sawyer) or lapa_sim.panda.PandaWorld.

    kwargs: seed, image_size, render, view, camera; ``substeps`` (Meta-World steps per control step)
    applies to the Sawyer only."""
    spec = get_task(task) if isinstance(task, str) else task
    if spec.robot == "panda":
        from .panda.world import PandaWorld

        kwargs.pop("substeps", None)
        return PandaWorld(spec, **kwargs)
    from .world import SimWorld

    return SimWorld(spec, **kwargs)


def make_command_expert(task: str | TaskSpec):
    """The scripted expert of a task as ``expert(names, values) -> (linear velocity [m/s] in the robot's
    base frame, gripper 0 open..1 closed)``, from the simulator's named privileged state
    (``sim/privileged_state``). Raises ValueError when the task has none."""
    spec = get_task(task) if isinstance(task, str) else task
    if not spec.expert:
        raise ValueError(f"task '{spec.name}' has no scripted expert in the catalogue")
    if spec.robot == "panda":
        from .panda.experts import make_expert as make_panda_expert

        return make_panda_expert(spec.expert)
    from .world import MAX_SPEED, expert_action_to_command, make_expert

    act = make_expert(spec)

    def sawyer_expert(names, values):
        import numpy as np

        return expert_action_to_command(act(np.asarray(values, dtype=np.float64)), MAX_SPEED)

    return sawyer_expert
