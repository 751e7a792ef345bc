"""ROS 2 glue shared by every node: parameter tables with descriptors, QoS profiles, and main().

Works with rclpy from Humble (Python 3.10) to Kilted: no `with rclpy.init()`, no parameter client
helpers newer than Humble.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import rclpy
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from lapa_ros.interfaces import entry

# Cameras: best effort, keep last 5, on both ends (a reliable subscriber never hears a best-effort camera).
SENSOR_QOS = qos_profile_sensor_data
# A subscriber that only ever uses the newest frame (the policy): best effort, keep last 1, so the
# middleware holds at most one frame per subscription (a burst of huge frames cannot pile up in memory).
LATEST_FRAME_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                              durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)
# Instructions: reliable + transient local, so a node that starts late still gets the current one.
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
# Commands and states: reliable, keep the latest few (what MoveIt Servo and ros2_control use).
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)


class StartupError(RuntimeError):
    """Raised in a node's constructor when it cannot run: the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One node parameter: its default (which fixes the type), what it means, and its limits."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        d = ParameterDescriptor(name=self.name, description=text, read_only=self.read_only)
        if isinstance(self.default, str) and self.read_only:
            # Text set once at start may come typed as a number: a RealSense serial or a device index from
            # `-p serial:=123` or a launch argument (both parse values as YAML). declare_params reads it as text.
            d.dynamic_typing = True
        if self.range is not None:
            lo, hi = self.range
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        return d


class ParamValues(SimpleNamespace):
    """A node's parameter values by attribute (``p.max_input_age``). Read-only parameters are the values read
    at start; writable ones are read from the node at each access, so a change that the node accepted through
    rcl_interfaces/srv/SetParameters (`ros2 param set`) takes effect at once. A snapshot of them accepted the
    change, showed it in `ros2 param get`, and went on using the old value."""

    def __init__(self, node: Node, fixed: Mapping[str, Any], writable: Sequence[str]):
        super().__init__(**fixed)
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_writable", frozenset(writable))

    def __getattr__(self, name: str) -> Any:   # only for names not stored: the writable ones
        if name in self.__dict__.get("_writable", ()):
            return self.__dict__["_node"].get_parameter(name).value
        raise AttributeError(name)


def declare_params(node: Node, table: Sequence[Param]) -> ParamValues:
    """Declare every parameter of ``table`` with its descriptor; return their values (see ParamValues: writable
    ones follow later changes).

    String parameters with ``choices`` are checked on every later change, and so are ranges (rclpy
    enforces those itself)."""
    values = {}
    for p in table:
        try:
            values[p.name] = node.declare_parameter(p.name, p.default, p.descriptor()).value
        except ParameterException as e:  # wrong type or out of range, from a YAML file or -p
            raise StartupError(f"{node.get_name()}: bad value for parameter '{p.name}' "
                               f"(expected {type(p.default).__name__}, e.g. {p.default!r}): {e}") from e
        if isinstance(p.default, str) and not isinstance(values[p.name], str):
            value = values[p.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StartupError(f"{node.get_name()}: bad value for parameter '{p.name}' (expected text, e.g. "
                                   f"{p.default!r}): {value!r}")
            values[p.name] = str(value)
            node.get_logger().warning(f"parameter '{p.name}' came as the number {value!r}, read as the text "
                                      f"'{value}' (quote it, e.g. {p.name}:=\"'{value}'\", to keep leading zeros)")
        if p.choices and values[p.name] not in p.choices:
            raise StartupError(f"{node.get_name()}: parameter '{p.name}' = {values[p.name]!r}; "
                               f"must be one of {', '.join(p.choices)}")
    by_name = {p.name: p for p in table}

    def check_choices(params) -> SetParametersResult:
        for prm in params:
            spec = by_name.get(prm.name)
            if spec and spec.choices and prm.value not in spec.choices:
                return SetParametersResult(successful=False,
                                           reason=f"'{prm.name}' must be one of {', '.join(spec.choices)}")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check_choices)
    writable = [p.name for p in table if not p.read_only]
    return ParamValues(node, {k: v for k, v in values.items() if k not in writable}, writable)


def log_at(logger, level: str, message: str) -> None:
    """Log at a level chosen at run time. rclpy ties a severity to each call site (a second severity from
    the same line raises ValueError), so each level has its own line here."""
    if level == "error":
        logger.error(message)
    elif level == "info":
        logger.info(message)
    else:
        logger.warning(message)


PARAMETER_TYPE_NAMES = {ParameterType.PARAMETER_BOOL: bool, ParameterType.PARAMETER_INTEGER: int,
                        ParameterType.PARAMETER_DOUBLE: float, ParameterType.PARAMETER_STRING: str}


def run_node(make_node: Callable[[], Node], args: Optional[Sequence[str]] = None) -> int:
    """The body of every node's main(): init, spin until SIGINT/SIGTERM or shutdown, clean up, exit code.

    A node that cannot come up (bad parameter, missing model file) logs one clear line and exits 1
    instead of running half-configured.

    SIGINT (Ctrl-C) and SIGTERM (what `kill`, systemd, docker and `lapa bringup` send) end the spin
    while the ROS context is still alive, so the node's ``close()`` can still publish (the arm
    controller commands a hold there); only then is the context shut down. rclpy's own handlers
    would shut the context down first.

    Single-threaded: long work gets its own thread, as the sim, policy and
    recorder nodes do: rclpy's MultiThreadedExecutor busy-polls while a callback runs (py-spy: ~70% of
    the policy node's main thread), which held camera frames back from the policy by 20-180 ms."""
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        rclpy.init(args=list(sys.argv if args is None else args), signal_handler_options=SignalHandlerOptions.NO)
        previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        if entry.interrupted():   # Ctrl-C while the process was still starting (lapa_ros.interfaces.entry)
            stop.set()
    else:   # signal handlers can only be set from the main thread
        rclpy.init(args=list(sys.argv if args is None else args))
        previous = {}
    node = None
    code = 0
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as e:
        rclpy.logging.get_logger("lapa_ros").fatal(str(e))
        code = 1
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def diagnostics_message(node: Node, name: str, level: int, message: str, values: Mapping[str, Any],
                        hardware_id: str = ""):
    """One diagnostic_msgs/DiagnosticArray with one status (level 0 OK, 1 WARN, 2 ERROR), every value as
    text, stamped now: what each node publishes on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(level=bytes([int(level)]), name=name, hardware_id=hardware_id, message=message)
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


def call_service(client, request, timeout: float, resend_after: Optional[float] = 3.0):
    """Call a service from a thread other than the one spinning the client's node; return the response.

    A server can be discovered (wait_for_service is true) before its response writer has matched this
    client's response reader; a request sent in that window is served but its answer never arrives.
    For idempotent requests (arm, set a parameter, read a state) the request is therefore sent again
    when no answer came within `resend_after` seconds (then twice that, and so on), and the first answer
    to any of them is taken; pass resend_after=None for requests that must run once. Raises TimeoutError
    when the service is not there or nothing answers within `timeout`."""
    deadline = time.monotonic() + timeout
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {client.srv_name} is not available")
    futures = [client.call_async(request)]
    wait = resend_after
    resend_at = time.monotonic() + wait if wait else float("inf")
    try:
        while True:
            for future in futures:
                if future.done():
                    return future.result()
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"service {client.srv_name} did not answer within {timeout:.0f} s"
                                   f" ({len(futures)} request{'s' if len(futures) > 1 else ''} sent)")
            if now > resend_at:
                futures.append(client.call_async(request))
                wait *= 2
                resend_at = now + wait
            time.sleep(0.005)
    finally:
        for future in futures:   # answers still to come are dropped, not kept forever
            if not future.done():
                client.remove_pending_request(future)
