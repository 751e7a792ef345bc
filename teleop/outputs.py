"""What every teleop node sends: commands to the arm controller, e-stop, arm, recorder services."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from std_msgs.msg import Bool, Float64
from std_srvs.srv import SetBool, Trigger

from lapa_ros.interfaces.messages import twist_msg
from lapa_ros.interfaces.ros_common import COMMAND_QOS


class TeleopOutputs:
    """Publishers and service clients shared by the keyboard, SpaceMouse and gamepad nodes."""

    def __init__(self, node: Node, base_frame: str):
        self.node, self.base_frame = node, base_frame
        self.pub_twist = node.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        self.pub_gripper = node.create_publisher(Float64, "arm_controller/gripper_cmd", COMMAND_QOS)
        self.pub_estop = node.create_publisher(Bool, "arm_controller/estop", COMMAND_QOS)
        self.triggers = {"arm": node.create_client(Trigger, "arm_controller/arm"),
                         "start": node.create_client(Trigger, "recorder/start"),
                         "save": node.create_client(Trigger, "recorder/stop"),
                         "discard": node.create_client(Trigger, "recorder/discard")}
        self.mark = node.create_client(SetBool, "recorder/mark_success")

    def command(self, linear: np.ndarray, angular: np.ndarray, gripper: float) -> None:
        stamp = self.node.get_clock().now().to_msg()
        self.pub_gripper.publish(Float64(data=float(gripper)))
        self.pub_twist.publish(twist_msg(linear, stamp, self.base_frame, angular))

    def event(self, name: str) -> None:
        """Act on a device event; service answers are logged when they arrive."""
        log = self.node.get_logger()
        if name == "estop":
            self.pub_estop.publish(Bool(data=True))
            log.error("E-STOP sent")
            return
        if name in ("success", "failure"):
            client, request = self.mark, SetBool.Request(data=name == "success")
        else:
            client, request = self.triggers[name], Trigger.Request()
        if not client.service_is_ready():
            log.warning(f"'{name}': service {client.srv_name} is not available (is it running?)")
            return
        future = client.call_async(request)
        future.add_done_callback(lambda f: log.info(f"{name}: {f.result().message}" if f.result() else
                                                    f"{name}: no answer"))
