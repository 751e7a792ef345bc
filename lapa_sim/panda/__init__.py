"""The Franka Panda at a table in MuJoCo, from urdf/panda.urdf: world, joint trajectory follower, tasks, experts.

A second simulated embodiment beside the Meta-World Sawyer (lapa_sim.world): joint-level, driven
like ros2_control drives a real Franka (lapa_ros.nodes.panda_sim puts it behind
joint_trajectory_controller / forward_position_controller topics). Plain Python, no ROS import.
"""
from .model import ARM_JOINTS, FINGER_JOINTS, GRIPPER, Q_HOME, build_model, build_spec, find_urdf
from .trajectory import JointTrajectoryFollower, TrajectoryError
from .world import PandaWorld

__all__ = ["ARM_JOINTS", "FINGER_JOINTS", "GRIPPER", "Q_HOME", "JointTrajectoryFollower", "PandaWorld",
           "TrajectoryError", "build_model", "build_spec", "find_urdf"]
