"""Where every node process starts: the table of installed executables, and a start that takes Ctrl-C quietly.

A node's imports (rclpy, numpy, OpenCV, MuJoCo, ONNX Runtime) take up to a second or more. A SIGINT in
that time (Ctrl-C right after `ros2 launch`, `lapa bringup` stopping a graph that is still coming up)
raised KeyboardInterrupt inside some import and printed a traceback per node, and the process died of
the signal. Nothing has run by then (no node, no publisher, the arm never commanded), so there is nothing
to clean up: the process exits 0 with no output, as a running node does on SIGINT
(lapa_ros.interfaces.ros_common.run_node, which takes SIGINT over once rclpy is initialised).

This module imports nothing heavy, so it is in place before the node's own imports start:
  console scripts     `ros2 run lapa_ros policy_node` calls ``policy_node()`` here (setup.py reads NODES)
  python -m           `python -m lapa_ros.interfaces.entry policy_node --ros-args ...` (what `lapa bringup`
                      runs; the same executables, without an install step)
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, Optional, Sequence

# Installed executable -> the node's main function ("module:function"). setup.py reads this literal.
NODES: Dict[str, str] = {
    "sim_robot_node": "lapa_ros.nodes.sim_robot:main",
    "panda_sim_node": "lapa_ros.nodes.panda_sim:main",
    "scripted_expert_node": "lapa_ros.teleop.scripted_expert:main",
    "camera_node": "lapa_ros.nodes.camera:main",
    "policy_node": "lapa_ros.nodes.policy:main",
    "arm_controller_node": "lapa_ros.nodes.arm_controller:main",
    "recorder_node": "lapa_ros.nodes.recorder:main",
    "keyboard_teleop_node": "lapa_ros.teleop.keyboard:main",
    "gamepad_teleop_node": "lapa_ros.teleop.joy_teleop:main_gamepad",
    "spacemouse_teleop_node": "lapa_ros.teleop.joy_teleop:main_spacemouse",
}


def start(executable: str, args: Optional[Sequence[str]] = None) -> int:
    """Import the executable's node and run its main; SIGINT before the node takes it over: exit 0, no output."""
    try:
        target = NODES[executable]
    except KeyError:
        print(f"error: unknown node executable {executable!r}; known: {', '.join(NODES)}", file=sys.stderr)
        return 2
    module, function = target.split(":")
    try:
        main = getattr(importlib.import_module(module), function)
        # run_node installs its own SIGINT handler right after rclpy.init; an interrupt before that (or
        # after it has put the previous handler back, the node closed) ends the process the same way.
        return main(args)
    except KeyboardInterrupt:
        return 0


def _console_script(executable: str) -> Callable[[], int]:
    def main() -> int:
        return start(executable)
    main.__name__ = main.__qualname__ = executable
    main.__doc__ = f"`ros2 run lapa_ros {executable}`: {NODES[executable]}"
    return main


for _name in NODES:
    globals()[_name] = _console_script(_name)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print(f"usage: python -m lapa_ros.interfaces.entry EXECUTABLE [--ros-args ...]; EXECUTABLE one of "
              f"{', '.join(NODES)}", file=sys.stderr)
        raise SystemExit(2)
    _executable = sys.argv.pop(1)    # the node sees the argv it would have as a console script
    raise SystemExit(start(_executable))
