"""scripted_expert: the task's scripted policy acting as the operator of the simulated arm.

It plays the part a human plays with a keyboard or SpaceMouse on a real robot: it reads the
simulator's privileged state (object and goal positions, `sim/privileged_state`) and the current task
(`sim/task`), takes the task's expert from the task catalogue (Meta-World's for the Sawyer tasks,
lapa_sim.panda's for the Panda's: lapa_sim.tasks.make_command_expert), and publishes the same
commands every teleop device publishes:
  twist_cmd    geometry_msgs/TwistStamped, end-effector velocity [m/s] in `base_frame`
               (stamped with the state it answers, so lockstep simulation and latency checks work)
  gripper_cmd  std_msgs/Float64, 0 open .. 1 closed
By default these go to the arm controller (arm_controller/twist_cmd, arm_controller/gripper_cmd);
remap them to drive the simulated arm directly.
"""
from __future__ import annotations

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from geometry_msgs.msg import TwistStamped

from lapa_sim.tasks import UnknownTaskError, get_task, make_command_expert

from lapa_ros.interfaces.messages import twist_msg
from lapa_ros.interfaces.ros_common import COMMAND_QOS, LATCHED_QOS, Param, declare_params, run_node

PARAMS = (
    Param("base_frame", "world", "frame_id of published twists.", read_only=True),
    Param("enabled", True, "Publish commands (false: listen only)."),
)


class ScriptedExpertNode(Node):
    def __init__(self, **kwargs):
        super().__init__("scripted_expert", **kwargs)
        self.p = declare_params(self, PARAMS)
        self._expert = None
        self._task = None
        self.pub_twist = self.create_publisher(TwistStamped, "arm_controller/twist_cmd", COMMAND_QOS)
        self.pub_gripper = self.create_publisher(Float64, "arm_controller/gripper_cmd", COMMAND_QOS)
        self.create_subscription(String, "sim/task", self._on_task, LATCHED_QOS)
        self.create_subscription(JointState, "sim/privileged_state", self._on_state, COMMAND_QOS)

    def _on_task(self, msg: String) -> None:
        try:
            spec = get_task(msg.data)
            self._expert = make_command_expert(spec)
        except (UnknownTaskError, ValueError) as e:
            self.get_logger().error(f"no expert: {e}")
            self._expert = None
            return
        self._task = spec.name
        self.get_logger().info(f"expert for task '{spec.name}'")

    def _on_state(self, msg: JointState) -> None:
        if self._expert is None or not self.get_parameter("enabled").value:
            return
        obs = np.asarray(msg.position, dtype=np.float64)
        if not np.all(np.isfinite(obs)):
            self.get_logger().warning("privileged state has NaN/Inf: no command", throttle_duration_sec=1.0)
            return
        try:
            velocity, gripper = self._expert(list(msg.name), obs)
        except ValueError as e:   # a state that does not fit the task's expert (e.g. another robot's)
            self.get_logger().warning(f"no command: {e}", throttle_duration_sec=1.0)
            return
        # Gripper first: the twist is what a lockstep simulator waits for.
        self.pub_gripper.publish(Float64(data=gripper))
        self.pub_twist.publish(twist_msg(velocity, msg.header.stamp, self.p.base_frame))


def main(args=None) -> int:
    return run_node(ScriptedExpertNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
