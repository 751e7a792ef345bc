"""Pure-Python core of the ROS side (no rclpy import): image conversion, safety, action chunking,
time alignment, URDF kinematics. Nodes in lapa_ros.nodes convert messages and call these; tests call
them directly. Import the submodules (lapa_ros.core.safety, ...): this package imports nothing."""
