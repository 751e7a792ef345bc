"""`lapa bringup` refuses bad launch arguments and parameter files with one line before any node starts,
and a graph that cannot be started completely leaves no node running."""
import pytest

from lapa_ros.bringup.graph import NodeSpec, build_graph
from lapa_ros.bringup.supervisor import NodeProcesses, check_parameter_file, parse_launch_arguments

# A "node" that runs until stopped and ignores its --ros-args: a shell sleeping.
SLEEPER = NodeSpec("sleeper", "sleeper", "sleeper", prefix=("sh", "-c", "sleep 60", "sh"))


def test_launch_arguments_that_are_not_name_value_or_not_text_are_named():
    assert parse_launch_arguments(["task:=a:=b"]) == {"task": "a:=b"}
    with pytest.raises(ValueError, match="name:=value, got 'task=push'"):
        parse_launch_arguments(["task=push"])
    undecodable = b"task:=\xff\xfe".decode("utf-8", "surrogateescape")   # what argv holds for such bytes
    with pytest.raises(ValueError, match="launch argument 'task': not valid UTF-8"):
        parse_launch_arguments([undecodable])


def test_a_bad_boolean_argument_is_named():
    with pytest.raises(ValueError, match="real_time must be true or false, got 'maybe'"):
        build_graph("sim_teleop", {"real_time": "maybe"})


def test_parameter_files_are_checked(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    check_parameter_file(empty)   # rcl reads an empty file
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera:\n  ros__parameters:\n    backend: [unclosed\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid YAML at line 4"):
        check_parameter_file(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a parameter file maps node names"):
        check_parameter_file(listed)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        check_parameter_file(tmp_path / "missing.yaml")


def test_a_bad_parameter_file_starts_no_node(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: [1, 2\n")
    graph = NodeProcesses([SLEEPER, NodeSpec("second", "second", "second", config=(str(bad),))],
                          log_dir=tmp_path / "logs")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid YAML"):
        with graph:
            pass
    assert graph.procs == {}


def test_a_node_that_cannot_be_started_stops_those_already_started(tmp_path):
    graph = NodeProcesses([SLEEPER, NodeSpec("second", "second", "second", prefix=(str(tmp_path / "no-such-program"),))],
                          log_dir=tmp_path / "logs")
    with pytest.raises(FileNotFoundError):
        with graph:
            pass
    assert graph.procs["sleeper"].poll() is not None, "a node left running after bringup failed to start the graph"


def test_lapa_instruct_refuses_what_the_policy_would_refuse_and_bad_waits():
    import argparse
    import math

    from lapa_ros.bringup.instruct import _seconds, check_instruction

    assert check_instruction("  close \x1b[31mthe\tdrawer ") == "close the drawer"
    undecodable = b"go \xff".decode("utf-8", "surrogateescape")
    for bad, why in (("", "empty"), (" \t\n", "empty"), ("...", "without a word"), ("a" * 5000, "5000 characters"),
                     (undecodable, "not valid UTF-8")):
        with pytest.raises(ValueError, match=why):
            check_instruction(bad)
    for bad in ("-1", "nan", "-inf", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match="seconds >= 0"):
            _seconds(bad)
    assert _seconds("0") == 0 and _seconds("2.5") == 2.5 and math.isinf(_seconds("inf"))
