"""keyboard teleop: drive the arm from a terminal (works over SSH; no X server, no root).

    ros2 run lapa_ros keyboard_teleop_node          (or: python -m lapa_ros.teleop.keyboard)

Reads keys from the terminal in raw mode and publishes arm_controller/twist_cmd and
arm_controller/gripper_cmd at `rate` through the arm controller's safety layer. A motion key moves
the arm while it is held (and `key_hold` seconds after its last repeat, since terminals send no
key-up); space sends the e-stop; digits drive the recorder. The key table is printed at start.
"""
from __future__ import annotations

import os
import select
import sys
import threading

from rclpy.node import Node

from lapa_ros.interfaces.ros_common import Param, StartupError, declare_params, run_node

from .mapping import KEY_HELP, KeyboardMapper
from .outputs import TeleopOutputs

PARAMS = (
    Param("max_linear_speed", 0.05, "Speed of a held motion key [m/s].", range=(0.0, 2.0)),
    Param("key_hold", 0.6, "Motion continues this long [s] after the last key repeat.", range=(0.05, 5.0)),
    Param("rate", 20.0, "Command rate [Hz].", read_only=True, range=(1.0, 500.0)),
    Param("base_frame", "panda_link0", "Frame of the published twist.", read_only=True),
)


class KeyboardTeleopNode(Node):
    def __init__(self, stream=None, **kwargs):
        super().__init__("keyboard_teleop", **kwargs)
        self.p = declare_params(self, PARAMS)
        self.stream = stream if stream is not None else sys.stdin
        if not self.stream.isatty():
            raise StartupError("keyboard_teleop needs a terminal on stdin (run it in its own terminal or over SSH)")
        self.mapper = KeyboardMapper(self.p.max_linear_speed, self.p.key_hold)
        self.out = TeleopOutputs(self, self.p.base_frame)
        self._fd = self.stream.fileno()
        import termios
        import tty

        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)  # keys arrive one by one, Ctrl-C still interrupts
        self._running = True
        self._thread = threading.Thread(target=self._read_keys, daemon=True)
        self._thread.start()
        self.create_timer(1.0 / self.p.rate, self._tick)
        print("keyboard teleop (through the arm controller's safety layer):\n" + KEY_HELP, flush=True)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _read_keys(self) -> None:
        while self._running:
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(self._fd, 32)
            if not data:
                return
            for ch in data.decode(errors="ignore"):
                event = self.mapper.key(ch, self._now())
                if event:
                    if event == "estop":
                        self.mapper.stop()
                    self.out.event(event)

    def _tick(self) -> None:
        # Changed at run time (`ros2 param set`): from this tick on; the mapper was made with the start values.
        self.mapper.max_linear, self.mapper.hold = self.p.max_linear_speed, self.p.key_hold
        self.out.command(self.mapper.velocity(self._now()), [0.0, 0.0, 0.0], self.mapper.gripper)

    def close(self) -> None:
        import termios

        self._running = False
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)


def main(args=None) -> int:
    return run_node(KeyboardTeleopNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
