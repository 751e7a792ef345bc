"""The simulated task catalogue: names, instructions, cameras and experts, read from tasks.yaml.

The list of tasks is data (``tasks.yaml`` beside this file); this module only parses and validates it.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

TASKS_FILE = Path(__file__).with_name("tasks.yaml")


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
class TaskSpec:
    name: str
    env: str
    expert: str
    instructions: Tuple[str, ...]
    max_steps: int
    camera: CameraSpec

    @property
    def instruction(self) -> str:
        """The canonical instruction (the first paraphrase)."""
        return self.instructions[0]


@dataclasses.dataclass(frozen=True)
class TaskCatalogue:
    tasks: Dict[str, TaskSpec]
    task_sets: Dict[str, Tuple[str, ...]]

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
        missing = {"env", "expert", "instructions"} - set(t)
        if missing:
            raise ValueError(f"task '{name}': missing {sorted(missing)}")
        instructions = tuple(str(s).strip() for s in t["instructions"] if str(s).strip())
        if not instructions:
            raise ValueError(f"task '{name}': needs at least one instruction")
        cam = CameraSpec.from_dict({**default_cam, **t.get("camera", {})})
        tasks[name] = TaskSpec(name=name, env=t["env"], expert=t["expert"], instructions=instructions,
                               max_steps=int(t.get("max_steps", defaults.get("max_steps", 100))),
                               camera=cam)
    sets: Dict[str, Tuple[str, ...]] = {}
    for set_name, members in (raw.get("task_sets") or {}).items():
        for m in members:
            if m not in tasks:
                raise ValueError(f"task set '{set_name}' names unknown task '{m}'")
        sets[set_name] = tuple(members)
    return TaskCatalogue(tasks=tasks, task_sets=sets)


@lru_cache(maxsize=4)
def load_catalogue(path: Optional[str] = None) -> TaskCatalogue:
    with open(path or TASKS_FILE) as f:
        return parse_catalogue(yaml.safe_load(f))


def get_task(name: str) -> TaskSpec:
    return load_catalogue().get(name)


def task_names() -> List[str]:
    return list(load_catalogue().tasks)
