"""The simulated task catalogue: names, robots, instructions, cameras and experts, read from tasks.yaml.

The list of tasks is data (``tasks.yaml`` beside this file, or the file named by the environment
variable ``LAPA_TASKS_FILE``); this module only parses and validates it. A task runs on one robot
(``robot``: ``sawyer``, the default, for Meta-World environments; ``panda`` for lapa_sim.panda's) and
needs an environment of that robot and instructions; its scripted expert is optional in the file, and
a command that needs one (episode generation, the benchmark) says so when it is missing.
"""
from __future__ import annotations

import dataclasses
import json
import math
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

    # what each value must be: (check, what is expected), for the errors
    RANGES = {"distance": (lambda v: v > 0, "a number > 0 (metres)"),
              "azimuth": (lambda v: True, "a number (degrees)"),
              "elevation": (lambda v: -90 <= v <= 90, "a number in [-90, 90] (degrees)"),
              "fovy": (lambda v: 0 < v < 180, "a number in (0, 180) (degrees)")}

    @classmethod
    def from_dict(cls, d: dict, where: str = "camera") -> "CameraSpec":
        """Checked and typed: ``where`` names the camera in the errors (e.g. "task 'reach': camera")."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping of {sorted(f.name for f in dataclasses.fields(cls))}, "
                             f"got {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = set(d) - known
        if extra:
            raise ValueError(f"{where}: unknown keys {sorted(extra)}; expected some of {sorted(known)}")
        d = dict(d)
        for key, (ok, expected) in cls.RANGES.items():
            if key in d:
                value = _number(d[key])
                if value is None or not ok(value):
                    raise ValueError(f"{where}.{key} must be {expected}, got {d[key]!r}")
                d[key] = value
        if "lookat" in d:
            values = d["lookat"] if isinstance(d["lookat"], (list, tuple)) else None
            typed = [_number(v) for v in values] if values is not None else []
            if len(typed) != 3 or any(v is None for v in typed):
                raise ValueError(f"{where}.lookat must be 3 numbers [x, y, z] (metres), got {d['lookat']!r}")
            d["lookat"] = tuple(typed)
        if d.get("name") is not None and not (isinstance(d["name"], str) and d["name"].strip()):
            raise ValueError(f"{where}.name must be the name of a camera in the model (a string), got {d['name']!r}")
        return cls(**d)


def _number(value) -> Optional[float]:
    """A finite int or float as a float; None for anything else (strings, booleans, NaN, lists)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


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
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"view '{name}': expected a mapping with camera and/or light, got {d!r}")
        d = dict(d or {})
        extra = set(d) - {"camera", "light"}
        if extra:
            raise ValueError(f"view '{name}': unknown keys {sorted(extra)}; expected camera and/or light")
        for key in ("camera", "light"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise ValueError(f"view '{name}': {key} must be a mapping, got {d[key]!r}")
        camera = dict(d.get("camera") or {})
        # validates the keys and values; the changes are kept typed (floats, lookat a tuple)
        typed = CameraSpec.from_dict({**dataclasses.asdict(CameraSpec()), **camera}, where=f"view '{name}': camera")
        camera = {k: getattr(typed, k) for k in camera}
        light = dict(d.get("light") or {})
        bad = set(light) - set(cls.LIGHT_KEYS)
        if bad:
            raise ValueError(f"view '{name}': unknown light keys {sorted(bad)}; expected {list(cls.LIGHT_KEYS)}")
        for key in ("ambient", "diffuse"):
            if key in light:
                values = light[key] if isinstance(light[key], (list, tuple)) else []
                rgb = [_number(v) for v in values]
                if len(rgb) != 3 or not all(v is not None and 0 <= v <= 1 for v in rgb):
                    raise ValueError(f"view '{name}': light.{key} must be 3 values in [0, 1], got {light[key]!r}")
                light[key] = tuple(rgb)
        if "scale" in light:
            scale = _number(light["scale"])
            if scale is None or not 0 <= scale <= 10:
                raise ValueError(f"view '{name}': light.scale must be a number in [0, 10], got {light['scale']!r}")
            light["scale"] = scale
        freeze = lambda m: tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in m.items()))  # noqa
        return cls(name=name, camera=freeze(camera), light=freeze(light))

    def record(self) -> dict:
        """What the view is, as plain JSON values (``lapa benchmark`` records it with the video made from it)."""
        return {"camera": {k: list(v) if isinstance(v, tuple) else v for k, v in self.camera},
                "light": {k: list(v) if isinstance(v, tuple) else v for k, v in self.light}}

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

    def record(self) -> dict:
        """Everything the catalogue says about the task, as plain JSON values: what episodes generated for
        it, and their evaluation, depend on (``lapa benchmark`` records it in its folder)."""
        d = dataclasses.asdict(self)
        d.pop("name")
        return json.loads(json.dumps(d))


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


TASK_KEYS = ("env", "expert", "instructions", "max_steps", "camera", "robot")
DEFAULT_KEYS = ("camera", "max_steps", "robot")
TOP_KEYS = ("defaults", "task_sets", "views", "tasks")


def _text(value, where: str, expected: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be {expected}, got {value!r}")
    return value.strip()


def _max_steps(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a whole number of control steps >= 1, got {value!r}")
    return value


def _mapping(value, where: str, expected: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be {expected}, got {value!r}")
    return value


def parse_catalogue(raw: dict) -> TaskCatalogue:
    """The catalogue of a parsed tasks.yaml, every field checked: a ValueError names the task (or set,
    view), the field and what it must be."""
    raw = _mapping(raw, "the catalogue", "a mapping with 'tasks'")
    extra = sorted(set(raw) - set(TOP_KEYS))
    if extra:
        raise ValueError(f"unknown top-level keys {extra}; expected some of {list(TOP_KEYS)}")
    defaults = _mapping(raw.get("defaults"), "defaults", f"a mapping of some of {list(DEFAULT_KEYS)}")
    extra = sorted(set(defaults) - set(DEFAULT_KEYS))
    if extra:
        raise ValueError(f"defaults: unknown keys {extra}; expected some of {list(DEFAULT_KEYS)}")
    default_cam = _mapping(defaults.get("camera"), "defaults.camera", "a mapping (lookat, distance, ...)")
    CameraSpec.from_dict({**dataclasses.asdict(CameraSpec()), **default_cam}, where="defaults.camera")
    default_steps = _max_steps(defaults.get("max_steps", 100), "defaults.max_steps")
    default_robot = defaults.get("robot", "sawyer")
    if default_robot not in ROBOTS:
        raise ValueError(f"defaults.robot: unknown robot {default_robot!r}; robots: {', '.join(ROBOTS)}")
    tasks: Dict[str, TaskSpec] = {}
    for name, t in _mapping(raw.get("tasks"), "tasks", "a mapping of task name -> task").items():
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name or name == "all":
            raise ValueError(f"task name {name!r}: expected a non-empty string without commas or surrounding "
                             "spaces, other than 'all'")
        where = f"task '{name}'"
        if not isinstance(t, dict):
            raise ValueError(f"{where}: expected a mapping with env and instructions, got {t!r}")
        missing = {"env", "instructions"} - set(t)
        if missing:
            raise ValueError(f"{where}: missing {sorted(missing)}")
        extra = sorted(set(t) - set(TASK_KEYS))
        if extra:
            raise ValueError(f"{where}: unknown keys {extra}; expected some of {list(TASK_KEYS)}")
        env = _text(t["env"], f"{where}: env", "the name of an environment (a string)")
        given = t["instructions"]
        if not isinstance(given, list):
            hint = f" (for one instruction write instructions: [{given.strip()}])" if isinstance(given, str) else ""
            raise ValueError(f"{where}: instructions must be a list of strings (paraphrases, the first one "
                             f"canonical), got {given!r}{hint}")
        instructions = tuple(_text(s, f"{where}: instructions[{i}]", "a non-empty string")
                             for i, s in enumerate(given))
        if not instructions:
            raise ValueError(f"{where}: needs at least one instruction")
        repeated = sorted({s for s in instructions if instructions.count(s) > 1})
        if repeated:
            raise ValueError(f"{where}: instructions repeat {repeated}; each paraphrase once")
        camera = _mapping(t.get("camera"), f"{where}: camera", "a mapping (lookat, distance, ...)")
        cam = CameraSpec.from_dict({**default_cam, **camera}, where=f"{where}: camera")
        expert = t.get("expert")
        if expert is not None:
            expert = _text(expert, f"{where}: expert", "the name of a scripted expert class (a string)")
        robot = t.get("robot", default_robot)
        if robot not in ROBOTS:
            raise ValueError(f"{where}: unknown robot {robot!r}; robots: {', '.join(ROBOTS)}")
        max_steps = _max_steps(t.get("max_steps", default_steps), f"{where}: max_steps")
        tasks[name] = TaskSpec(name=name, env=env, expert=expert, instructions=instructions, max_steps=max_steps,
                               camera=cam, robot=robot)
    sets: Dict[str, Tuple[str, ...]] = {}
    for set_name, members in _mapping(raw.get("task_sets"), "task_sets", "a mapping of set name -> tasks").items():
        if set_name in tasks or set_name == "all":
            raise ValueError(f"task set '{set_name}': a task is named so too (or 'all'): give the set another name")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError(f"task set '{set_name}' must be a list of task names, got {members!r}")
        for m in members:
            if m not in tasks:
                raise ValueError(f"task set '{set_name}' names unknown task '{m}'")
        sets[set_name] = tuple(members)
    views = {name: ViewSpec.from_dict(name, v)
             for name, v in _mapping(raw.get("views"), "views", "a mapping of view name -> view").items()}
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
    try:
        return parse_catalogue(raw)
    except ValueError as e:
        raise ValueError(f"task catalogue {path}: {e}") from e


def check_runnable(spec: TaskSpec, need_expert: bool = True) -> None:
    """Raise a clear ValueError unless the task's robot has its environment and (``need_expert``) its
    scripted expert (play episodes need the scene only)."""
    if spec.robot == "panda":
        from .panda.envs import ENVS
        from .panda.experts import EXPERTS

        if spec.env not in ENVS:
            raise ValueError(f"task '{spec.name}': the Panda has no environment '{spec.env}' ({', '.join(ENVS)})")
        if not need_expert:
            return
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
    if not need_expert:
        return
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
