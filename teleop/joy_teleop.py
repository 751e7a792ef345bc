"""gamepad / SpaceMouse teleop: device axes -> end-effector twist + gripper, buttons -> recorder/safety.

Input, either:
  joy                   sensor_msgs/Joy from the standard drivers (`ros2 run joy joy_node` for a
                        gamepad, `ros2 run spacenav spacenav_node` for a SpaceMouse; remap as needed)
  or `device`           a Linux input device (/dev/input/eventN) read directly, when those drivers
                        are not installed
Output: arm_controller/twist_cmd, arm_controller/gripper_cmd at `rate`, through the arm
controller's safety layer like every other command; buttons start/save/discard episodes on the
recorder, mark them, e-stop and arm (button layout: teleop/mapping.py).
"""
from __future__ import annotations

import os
import select
import threading

from rclpy.node import Node
from sensor_msgs.msg import Joy

from lapa_ros.interfaces.ros_common import COMMAND_QOS, Param, StartupError, declare_params, run_node

from .mapping import PROFILES, EvdevState, JoyMapper
from .outputs import TeleopOutputs

# Linux input event codes: ABS_X.. ABS_RZ / REL_X.. REL_RZ are 0..5; BTN_SOUTH.. (gamepad) and
# BTN_0/BTN_1 (SpaceMouse buttons).
_AXIS_CODES = {"gamepad": [0, 1, 2, 3, 4, 5], "spacemouse": [0, 1, 2, 3, 4, 5]}
_BUTTON_CODES = {"gamepad": [0x130, 0x131, 0x133, 0x134, 0x136, 0x137, 0x13a, 0x13b],
                 "spacemouse": [0x100, 0x101]}


def _params(profile: str):
    return (
        Param("profile", profile, "Device layout.", read_only=True, choices=tuple(PROFILES)),
        Param("device", "", "Read /dev/input/eventN directly instead of the `joy` topic.", read_only=True),
        Param("max_linear_speed", 0.1, "Speed at full deflection [m/s].", range=(0.0, 2.0)),
        Param("max_angular_speed", 0.5, "Angular speed at full deflection [rad/s].", range=(0.0, 5.0)),
        Param("rate", 20.0, "Command rate [Hz].", read_only=True, range=(1.0, 500.0)),
        Param("base_frame", "panda_link0", "Frame of the published twist.", read_only=True),
        Param("joy_timeout", 0.5, "No Joy message (or, read directly, no device event) for this long [s]: stop "
              "commanding (the arm holds).", range=(0.01, 10.0)),
        Param("relative_axis_hold", 0.1, "Device read directly: a relative axis (SpaceMouse) not reported for this "
              "long [s] reads as zero (the kernel sends no event when it returns to rest).", range=(0.01, 2.0)),
    )


# The parameters each installed executable declares (its profile's defaults), for tools and tests.
PARAMS_BY_EXECUTABLE = {f"{profile}_teleop_node": _params(profile) for profile in PROFILES}


class JoyTeleopNode(Node):
    def __init__(self, name: str = "joy_teleop", profile: str = "gamepad", **kwargs):
        super().__init__(name, **kwargs)
        self.p = declare_params(self, _params(profile))
        self.mapper = JoyMapper(PROFILES[self.p.profile], self.p.max_linear_speed, self.p.max_angular_speed)
        self.out = TeleopOutputs(self, self.p.base_frame)
        self._axes, self._buttons, self._last_input = [], [], -1e9
        self._lock = threading.Lock()
        self._running = True
        if self.p.device:
            try:
                self._fd = os.open(self.p.device, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as e:
                raise StartupError(f"{name}: cannot open input device {self.p.device}: {e} "
                                   "(permissions? add yourself to the `input` group)") from e
            self._evdev = EvdevState(_AXIS_CODES[self.p.profile], _BUTTON_CODES[self.p.profile])
            self._device_open = True
            threading.Thread(target=self._read_device, daemon=True).start()
        else:
            self.create_subscription(Joy, "joy", self._on_joy, COMMAND_QOS)
        self.create_timer(1.0 / self.p.rate, self._tick)
        self.get_logger().info(f"{self.p.profile} teleop from {self.p.device or 'the joy topic'}, "
                               f"max {self.p.max_linear_speed} m/s")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            self._axes, self._buttons, self._last_input = list(msg.axes), list(msg.buttons), self._now()

    def _read_device(self) -> None:
        pending = b""
        while self._running:
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self._fd, 24 * 64)
            except BlockingIOError:
                continue
            except OSError as e:
                self._device_closed(f"lost ({e})")
                return
            if not chunk:   # end of file: the device (or the pipe feeding it) is gone; its last axes must not repeat
                self._device_closed("closed")
                return
            pending += chunk
            with self._lock:
                used = self._evdev.feed(pending, self._now())
                if used:
                    self._last_input = self._now()
            pending = pending[used:]

    def _device_closed(self, how: str) -> None:
        with self._lock:
            self._device_open = False
        self.get_logger().error(f"input device {self.p.device} {how}: no more commands, the arm holds")

    def _tick(self) -> None:
        now = self._now()
        with self._lock:
            if now - self._last_input > self.p.joy_timeout or (self.p.device and not self._device_open):
                return  # device silent or gone: send nothing, the controller's watchdog holds
            if self.p.device:   # relative axes not reported lately are at rest (see EvdevState.axes_at)
                axes, buttons = self._evdev.axes_at(now, self.p.relative_axis_hold), list(self._evdev.buttons)
            else:
                axes, buttons = self._axes, self._buttons
        # Speeds changed at run time (`ros2 param set`) apply from this tick: the mapper was made with the start values.
        self.mapper.max_linear, self.mapper.max_angular = self.p.max_linear_speed, self.p.max_angular_speed
        linear, angular, gripper, events = self.mapper.update(axes, buttons)
        for e in events:
            self.out.event(e)
        self.out.command(linear, angular, gripper)

    def close(self) -> None:
        self._running = False


def main_gamepad(args=None) -> int:
    return run_node(lambda: JoyTeleopNode("gamepad_teleop", "gamepad"), args)


def main_spacemouse(args=None) -> int:
    return run_node(lambda: JoyTeleopNode("spacemouse_teleop", "spacemouse"), args)


main = main_gamepad

if __name__ == "__main__":
    raise SystemExit(main())
