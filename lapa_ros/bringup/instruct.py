"""`lapa instruct "close the drawer"`: send the robot's instruction from a shell.

Publishes std_msgs/String on `instruction` (reliable, transient local: the policy keeps it even if
it starts later, as long as this publisher is alive). By default waits until a subscriber (the
policy) has received it, then exits; `--keep` stays alive holding it latched until Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instruction", help="what the robot should do, in words")
    p.add_argument("--topic", default="instruction")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a subscriber")
    p.add_argument("--keep", action="store_true", help="stay alive holding the instruction for late subscribers")


def main(args: argparse.Namespace) -> int:
    import rclpy
    from std_msgs.msg import String

    from lapa_ros.interfaces.ros_common import LATCHED_QOS

    text = args.instruction.strip()
    if not text:
        print("lapa instruct: the instruction is empty", file=sys.stderr)
        return 2
    rclpy.init()
    node = rclpy.create_node("lapa_instruct")
    try:
        pub = node.create_publisher(String, args.topic, LATCHED_QOS)
        pub.publish(String(data=text))
        deadline = time.monotonic() + args.wait
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        if pub.get_subscription_count() == 0:
            print(f"lapa instruct: nobody subscribes to '{args.topic}' yet (is the policy running? same "
                  f"ROS_DOMAIN_ID?); use --keep to hold the instruction until it starts", file=sys.stderr)
            if not args.keep:
                return 1
        else:
            pub.wait_for_all_acked(rclpy.duration.Duration(seconds=2.0))
            print(f"sent to {pub.get_subscription_count()} subscriber(s): \"{text}\"")
        if args.keep:
            print("holding the instruction (Ctrl-C to stop)")
            while True:
                rclpy.spin_once(node, timeout_sec=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
