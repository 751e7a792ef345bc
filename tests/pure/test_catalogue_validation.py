"""The task catalogue is checked field by field when it is read: a malformed entry is a clear error that
names the task (or set, view), the field and what it must be, before any simulator or worker starts.
Nothing here depends on the shipped task names."""
import math

import pytest
import yaml

from lapa_sim.tasks import TASKS_FILE, load_catalogue, parse_catalogue

GOOD = {"env": "reach-v3", "expert": "SawyerReachV3Policy", "instructions": ["tap the dot", "touch the dot"]}


def _catalogue(**task):
    return {"tasks": {"my-task": {**GOOD, **task}}}


def test_the_shipped_catalogue_and_a_well_formed_file_load():
    assert load_catalogue(str(TASKS_FILE)).tasks
    spec = parse_catalogue(_catalogue(max_steps=40, camera={"distance": 2, "lookat": [0, 1, 0.5]})).get("my-task")
    assert spec.instructions == ("tap the dot", "touch the dot") and spec.max_steps == 40
    assert spec.camera.distance == 2.0 and spec.camera.lookat == (0.0, 1.0, 0.5)


@pytest.mark.parametrize("task, field, expected", [
    # a string instead of a list used to become one instruction per character
    ({"instructions": "reach my goal"}, "instructions", "list of strings"),
    ({"instructions": ["ok", 7]}, "instructions[1]", "non-empty string"),
    ({"instructions": ["ok", "  "]}, "instructions[1]", "non-empty string"),
    ({"instructions": ["same", "same"]}, "instructions repeat", "each paraphrase once"),
    ({"instructions": []}, "at least one instruction", ""),
    # max_steps: 0 and negative values used to be accepted
    ({"max_steps": 0}, "max_steps", ">= 1"),
    ({"max_steps": -5}, "max_steps", ">= 1"),
    ({"max_steps": 2.5}, "max_steps", "whole number"),
    ({"max_steps": "100"}, "max_steps", "whole number"),
    ({"max_steps": True}, "max_steps", "whole number"),
    # camera values of the wrong type used to crash a generate worker (pybind TypeError)
    ({"camera": {"distance": "far"}}, "camera.distance", "number > 0"),
    ({"camera": {"distance": -1}}, "camera.distance", "number > 0"),
    ({"camera": {"azimuth": "left"}}, "camera.azimuth", "a number"),
    ({"camera": {"elevation": math.nan}}, "camera.elevation", "[-90, 90]"),
    ({"camera": {"fovy": 0}}, "camera.fovy", "(0, 180)"),
    ({"camera": {"lookat": [0, 1]}}, "camera.lookat", "3 numbers"),
    ({"camera": {"lookat": "middle"}}, "camera.lookat", "3 numbers"),
    ({"camera": {"name": 3}}, "camera.name", "a string"),
    ({"camera": {"zoom": 2}}, "camera: unknown keys ['zoom']", "expected some of"),
    ({"camera": "top"}, "camera", "a mapping"),
    ({"env": 5}, "env", "a string"),
    ({"env": ""}, "env", "a string"),
    ({"expert": ["SawyerReachV3Policy"]}, "expert", "a string"),
    ({"robot": "r2d2"}, "unknown robot 'r2d2'", "sawyer, panda"),
    ({"max_step": 50}, "unknown keys ['max_step']", "expected some of"),
])
def test_a_malformed_task_field_is_an_error_naming_the_task_the_field_and_what_is_expected(task, field, expected):
    with pytest.raises(ValueError) as err:
        parse_catalogue(_catalogue(**task))
    message = str(err.value)
    assert message.startswith("task 'my-task'") and field in message and expected in message, message


@pytest.mark.parametrize("raw, message", [
    ({"tasks": {"my-task": "reach-v3"}}, "task 'my-task': expected a mapping"),
    ({"tasks": ["my-task"]}, "tasks must be a mapping"),
    ({"tasks": {"a,b": GOOD}}, "task name 'a,b'"),
    ({"tasks": {"all": GOOD}}, "task name 'all'"),
    ({"defaults": {"max_steps": 0}, "tasks": {"my-task": GOOD}}, "defaults.max_steps must be a whole number"),
    ({"defaults": {"camera": {"fovy": "wide"}}, "tasks": {"my-task": GOOD}}, "defaults.camera.fovy must be"),
    ({"defaults": {"max_stpes": 5}, "tasks": {}}, "defaults: unknown keys ['max_stpes']"),
    ({"task": {"my-task": GOOD}}, "unknown top-level keys ['task']"),
    ({"tasks": {"my-task": GOOD}, "task_sets": {"s": "my-task"}}, "task set 's' must be a list of task names"),
    ({"tasks": {"my-task": GOOD}, "task_sets": {"my-task": ["my-task"]}}, "task set 'my-task': a task is named so"),
    ({"tasks": {}, "views": {"v": {"light": {"ambient": "dark"}}}}, "view 'v': light.ambient must be 3 values"),
    ({"tasks": {}, "views": {"v": {"light": {"scale": "x"}}}}, "view 'v': light.scale must be a number"),
    ({"tasks": {}, "views": {"v": {"camera": {"azimuth": "left"}}}}, "view 'v': camera.azimuth must be a number"),
    ({"tasks": {}, "views": {"v": {"camera": "left"}}}, "view 'v': camera must be a mapping"),
])
def test_malformed_catalogue_structure_sets_and_views_are_errors_naming_them(raw, message):
    with pytest.raises(ValueError) as err:
        parse_catalogue(raw)
    assert message in str(err.value), str(err.value)


def test_a_catalogue_file_with_a_bad_entry_fails_at_load_time_naming_the_file(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": {"my-task": {**GOOD, "instructions": "reach my goal"}}}))
    with pytest.raises(ValueError) as err:
        load_catalogue(str(path))
    assert str(path) in str(err.value) and "task 'my-task': instructions must be a list" in str(err.value)
    assert "instructions: [reach my goal]" in str(err.value)   # how to write one instruction


def test_the_record_of_a_task_holds_every_field_and_does_not_depend_on_how_numbers_are_written():
    a = parse_catalogue(_catalogue(camera={"distance": 2, "lookat": [0, 1, 0]})).get("my-task").record()
    b = parse_catalogue(_catalogue(camera={"distance": 2.0, "lookat": [0.0, 1.0, 0.0]})).get("my-task").record()
    assert a == b
    assert set(a) == {"env", "expert", "instructions", "max_steps", "camera", "robot"}
    c = parse_catalogue(_catalogue(max_steps=20)).get("my-task").record()
    assert c != a and c["max_steps"] == 20
