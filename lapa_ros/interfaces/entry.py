"""Where every node process starts: the table of installed executables, and a start that takes Ctrl-C quietly.

A node's imports (rclpy, numpy, OpenCV, MuJoCo, ONNX Runtime) take up to a second or more. A SIGINT in
that time (Ctrl-C right after `ros2 launch`, `lapa bringup` stopping a graph that is still coming up)
raised KeyboardInterrupt inside some import and printed a traceback per node, and the process died of
the signal; or, raised where some library's import catches every exception, it was swallowed and the node
started and ran on as if never asked to stop. Nothing has run by then (no node, no publisher, the arm never
commanded), so there is nothing to clean up. So the first SIGINT only marks the process as interrupted; the
imports finish, and the process exits 0 with no output instead of starting the node, as a running node
does on SIGINT (lapa_ros.interfaces.ros_common.run_node takes SIGINT over once rclpy is initialised, and
stops at once if the mark was set meanwhile). A second SIGINT interrupts whatever runs.

This module imports nothing heavy, so it is in place before the node's own imports start:
  console scripts     `ros2 run lapa_ros policy_node` calls ``policy_node()`` here (setup.py reads NODES)
  python -m           `python -m lapa_ros.interfaces.entry policy_node --ros-args ...` (what `lapa bringup`
                      runs; the same executables, without an install step)
"""
from __future__ import annotations

import importlib
import signal
import sys
import threading
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


_interrupted = False   # a plain flag: a signal handler must not take a lock the main thread may hold


def _on_sigint(signum, frame) -> None:
    global _interrupted
    if _interrupted:   # a second Ctrl-C: stop what runs now
        raise KeyboardInterrupt
    _interrupted = True


def interrupted() -> bool:
    """Whether a SIGINT came before the node took SIGINT over (run_node asks, and stops at once)."""
    return _interrupted


def start(executable: str, args: Optional[Sequence[str]] = None) -> int:
    """Import the executable's node and run its main; SIGINT before the node takes it over: exit 0, no output."""
    try:
        target = NODES[executable]
    except KeyError:
        print(f"error: unknown node executable {executable!r}; known: {', '.join(NODES)}", file=sys.stderr)
        return 2
    module, function = target.split(":")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        main = getattr(importlib.import_module(module), function)
        if _interrupted:
            return 0   # asked to stop while importing: never start the node
        return main(args)
    except KeyboardInterrupt:   # the second Ctrl-C
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
