"""`lapa instruct "close the drawer"`: send the robot's instruction from a shell.

Publishes std_msgs/String on `instruction` (reliable, transient local: the policy keeps it even if
it starts later, as long as this publisher is alive). By default waits until a subscriber (the
policy) has received it, then exits; `--keep` stays alive holding it latched until Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
import time


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:   # also NaN
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got '{text}'")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instruction", help="what the robot should do, in words")
    p.add_argument("--topic", default="instruction")
    p.add_argument("--wait", type=_seconds, default=10.0, help="seconds to wait for a subscriber")
    p.add_argument("--keep", action="store_true", help="stay alive holding the instruction for late subscribers")


def check_instruction(text: str) -> str:
    """The instruction as the policy will act on it (lapa_models.text.clean_instruction); ValueError
    saying why when the policy would refuse it (empty, no words, too long) or it is not UTF-8 text."""
    from lapa_models.text import clean_instruction, printable

    try:
        text.encode("utf-8")
    except UnicodeEncodeError:   # bytes the locale could not decode (argv's surrogate escapes)
        raise ValueError(f"the instruction is not valid UTF-8 text: \"{printable(text, 60)}\"") from None
    return clean_instruction(text)


def main(args: argparse.Namespace) -> int:
    from lapa_models.text import printable

    try:
        text = check_instruction(args.instruction)
    except ValueError as e:   # refused here, not silently by the policy after "sent"
        print(f"lapa instruct: {e}", file=sys.stderr)
        return 2

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from std_msgs.msg import String

    from lapa_ros.interfaces.ros_common import LATCHED_QOS

    rclpy.init()
    node = rclpy.create_node("lapa_instruct")
    delivered = stopped = False

    def spin(timeout: float) -> None:
        """spin_once, or ExternalShutdownException once a signal (SIGTERM: rclpy's handler) shut rclpy down."""
        if not rclpy.ok():
            raise ExternalShutdownException()
        rclpy.spin_once(node, timeout_sec=timeout)

    try:
        pub = node.create_publisher(String, args.topic, LATCHED_QOS)
        pub.publish(String(data=text))
        deadline = time.monotonic() + args.wait
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            spin(0.05)
        if pub.get_subscription_count() == 0:
            print(f"lapa instruct: nobody subscribes to '{args.topic}' yet (is the policy running? same "
                  f"ROS_DOMAIN_ID?); use --keep to hold the instruction until it starts", file=sys.stderr)
            if not args.keep:
                return 1
        else:
            pub.wait_for_all_acked(rclpy.duration.Duration(seconds=2.0))
            delivered = True
            print(f"sent to {pub.get_subscription_count()} subscriber(s): \"{printable(text)}\"")
        if args.keep:
            print("holding the instruction (Ctrl-C to stop)")
            while True:
                spin(0.5)
                delivered = delivered or pub.get_subscription_count() > 0
    except (KeyboardInterrupt, ExternalShutdownException):   # Ctrl-C; SIGTERM shuts rclpy down
        stopped = True
    except Exception:
        if rclpy.ok():
            raise
        stopped = True   # SIGTERM shut rclpy down in the middle of a call (an RCLError "context is not valid")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if stopped and not delivered:
        print("lapa instruct: stopped before any subscriber received the instruction", file=sys.stderr)
        return 1
    return 0
