"""lapa_ros: LAPA policies on ROS 2 arms.

  lapa_ros.core    pure Python (no rclpy): images, safety, chunking, alignment
  lapa_ros.nodes   ROS 2 nodes: thin glue that converts messages and calls the core
  lapa_ros.teleop  operators: keyboard, SpaceMouse, gamepad, the scripted sim expert
  lapa_ros.cli     the `lapa` command
"""
__version__ = "0.1.0"
