"""Pure-Python core of the ROS side (no rclpy import): image conversion, safety gate, URDF kinematics and
joint limits, time alignment and clock checks, event logging, camera backends (action chunking lives with
the policy: lapa_models.policy.chunking). Nodes in lapa_ros.nodes convert messages and call these; tests
call them directly. Import the submodules (lapa_ros.core.safety, ...): this package imports nothing."""
