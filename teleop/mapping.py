"""Teleop device input -> end-effector command. Plain Python (no ROS): tested without a device.

Every device (keyboard, SpaceMouse, gamepad) ends in the same command the arm controller takes:
an end-effector twist in the base frame and a gripper position (0 open .. 1 closed), plus edge-
triggered events for the recorder and the safety layer (start/save/discard an episode, mark it a
success or failure, e-stop, arm).
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

EVENTS = ("start", "save", "discard", "success", "failure", "estop", "arm")


@dataclasses.dataclass(frozen=True)
class Axis:
    index: int          # axis index in the device's axes
    target: int         # 0..2 linear x, y, z; 3..5 angular x, y, z
    scale: float = 1.0  # sign and gain (device units -> fraction of the max speed)


@dataclasses.dataclass(frozen=True)
class JoyProfile:
    """How one kind of device maps to commands. Axes in [-1, 1]; buttons 0/1."""

    name: str
    axes: Tuple[Axis, ...]
    gripper_close_button: Optional[int] = None   # hold to close (gamepad) ...
    gripper_toggle_button: Optional[int] = None  # ... or press to toggle (SpaceMouse)
    buttons: Tuple[Tuple[int, str], ...] = ()    # button index -> event
    deadzone: float = 0.1


# Xbox-style layout as published by the `joy` driver (sensor_msgs/Joy): left stick x/y, right stick
# for z / yaw; A closes the gripper while held; Start/Back/X/Y/B/LB for the recorder and safety.
GAMEPAD = JoyProfile(
    name="gamepad",
    axes=(Axis(1, 0, 1.0), Axis(0, 1, 1.0), Axis(4, 2, 1.0), Axis(3, 5, 1.0)),
    gripper_close_button=0,
    buttons=((7, "start"), (6, "save"), (2, "discard"), (3, "success"), (1, "failure"), (4, "estop"), (5, "arm")),
)
# 3Dconnexion SpaceMouse as published by the `spacenav` driver (6 axes, 2 buttons): push = translate,
# twist = rotate; left button toggles the gripper, right button starts/saves episodes.
SPACEMOUSE = JoyProfile(
    name="spacemouse",
    axes=(Axis(0, 0, 1.0), Axis(1, 1, 1.0), Axis(2, 2, 1.0), Axis(3, 3, 1.0), Axis(4, 4, 1.0), Axis(5, 5, 1.0)),
    gripper_toggle_button=0,
    buttons=((1, "start"),),
    deadzone=0.05,
)
PROFILES = {p.name: p for p in (GAMEPAD, SPACEMOUSE)}


class JoyMapper:
    """State across calls: gripper toggle and button edges."""

    def __init__(self, profile: JoyProfile, max_linear: float, max_angular: float):
        self.profile, self.max_linear, self.max_angular = profile, float(max_linear), float(max_angular)
        self.gripper = 0.0
        self._previous: Dict[int, bool] = {}
        self._recording = False

    def _deadzone(self, v: float) -> float:
        dz = self.profile.deadzone
        if abs(v) <= dz:
            return 0.0
        return float(np.sign(v) * (abs(v) - dz) / (1.0 - dz))  # continuous at the edge of the deadzone

    def update(self, axes: Sequence[float], buttons: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, float, List[str]]:
        """(linear [m/s], angular [rad/s], gripper, events pressed since the last call)."""
        twist = np.zeros(6)
        for a in self.profile.axes:
            if a.index < len(axes):
                v = float(axes[a.index])
                if np.isfinite(v):
                    twist[a.target] += self._deadzone(float(np.clip(v, -1.0, 1.0))) * a.scale
        twist = np.clip(twist, -1.0, 1.0)
        pressed = {i for i, b in enumerate(buttons) if b}
        edges = {i for i in pressed if not self._previous.get(i, False)}
        self._previous = {i: i in pressed for i in range(len(buttons))}
        p = self.profile
        if p.gripper_close_button is not None:
            self.gripper = 1.0 if p.gripper_close_button in pressed else 0.0
        if p.gripper_toggle_button is not None and p.gripper_toggle_button in edges:
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
        events = []
        for index, event in p.buttons:
            if index in edges:
                if event == "start" and p.name == "spacemouse":  # one button: start, then save
                    event = "save" if self._recording else "start"
                if event == "start":
                    self._recording = True
                elif event in ("save", "discard"):
                    self._recording = False
                events.append(event)
        return twist[:3] * self.max_linear, twist[3:] * self.max_angular, self.gripper, events


# ----------------------------------------------------------------------------- keyboard
KEY_HELP = """\
  w/s  +x/-x     a/d  +y/-y     r/f  up/down     g  open/close gripper
  space  E-STOP (latched)       m  arm the controller
  1 start episode   2 save   3 discard   4 mark success   5 mark failure     Ctrl-C quit"""

_KEY_MOTION = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
_KEY_EVENTS = {" ": "estop", "m": "arm", "1": "start", "2": "save", "3": "discard", "4": "success", "5": "failure"}


class KeyboardMapper:
    """Terminal keys -> command. A motion key moves for `hold` seconds after its last repeat, so the
    arm stops on its own shortly after the key is released (terminals send no key-up events)."""

    def __init__(self, max_linear: float, hold: float = 0.6):
        self.max_linear, self.hold = float(max_linear), float(hold)
        self.gripper = 0.0
        self._until = np.full(3, -np.inf)
        self._direction = np.zeros(3)

    def key(self, ch: str, now: float) -> Optional[str]:
        """Feed one key; returns an event name if the key is one."""
        if ch in _KEY_MOTION:
            axis, sign = _KEY_MOTION[ch]
            self._direction[axis] = sign
            self._until[axis] = now + self.hold
            return None
        if ch == "g":
            self.gripper = 0.0 if self.gripper > 0.5 else 1.0
            return None
        return _KEY_EVENTS.get(ch)

    def velocity(self, now: float) -> np.ndarray:
        return np.where(now <= self._until, self._direction, 0.0) * self.max_linear

    def stop(self) -> None:
        self._until[:] = -np.inf


# ----------------------------------------------------------------------------- evdev
# struct input_event on 64-bit Linux: timeval (2 x long), type (u16), code (u16), value (s32).
_EVENT = struct.Struct("llHHi")
EV_KEY, EV_REL, EV_ABS = 0x01, 0x02, 0x03


class EvdevState:
    """Axes and buttons of a Linux input device (/dev/input/event*) from its raw event stream, so a
    gamepad or SpaceMouse works without the `joy`/`spacenav` ROS drivers."""

    def __init__(self, axis_codes: Sequence[int], button_codes: Sequence[int], axis_range: float = 350.0,
                 abs_ranges: Optional[Dict[int, Tuple[int, int]]] = None):
        self.axis_codes, self.button_codes = list(axis_codes), list(button_codes)
        self.axis_range = float(axis_range)           # SpaceMouse (EV_REL/EV_ABS) full deflection
        self.abs_ranges = abs_ranges or {}            # gamepad: code -> (min, max) from EVIOCGABS
        self.axes = [0.0] * len(self.axis_codes)
        self.buttons = [0] * len(self.button_codes)
        self._relative: Dict[int, float] = {}         # axis index -> when its last EV_REL event came

    def feed(self, data: bytes, now: float = 0.0) -> int:
        """Parse whole input_event records from `data` (read at time `now` [s]); returns how many bytes were
        consumed."""
        n = len(data) // _EVENT.size
        for i in range(n):
            _, _, etype, code, value = _EVENT.unpack_from(data, i * _EVENT.size)
            if etype in (EV_ABS, EV_REL) and code in self.axis_codes:
                lo, hi = self.abs_ranges.get(code, (-self.axis_range, self.axis_range))
                index = self.axis_codes.index(code)
                self.axes[index] = float(np.clip(2.0 * (value - lo) / (hi - lo) - 1.0, -1, 1))
                if etype == EV_REL:
                    self._relative[index] = now
                else:
                    self._relative.pop(index, None)
            elif etype == EV_KEY and code in self.button_codes:
                self.buttons[self.button_codes.index(code)] = 1 if value else 0
        return n * _EVENT.size

    def axes_at(self, now: float, relative_hold: float) -> List[float]:
        """The axes at time `now`. An absolute axis (a gamepad stick) keeps its last value: the kernel sends an
        event whenever it changes. A relative one (a SpaceMouse) reads as zero once it has not been reported for
        `relative_hold` seconds: the kernel drops zero-valued relative events, so a puck back at rest, or an
        axis no longer pushed while another is, is never reported as zero."""
        return [0.0 if i in self._relative and now - self._relative[i] > relative_hold else v
                for i, v in enumerate(self.axes)]


def pack_events(events: Sequence[Tuple[int, int, int]]) -> bytes:
    """(type, code, value) records as the kernel writes them (for tests and replay)."""
    return b"".join(_EVENT.pack(0, 0, t, c, v) for t, c, v in events)
