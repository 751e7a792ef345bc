"""lapa_ros: LAPA policies on ROS 2 arms.

  lapa_ros.core         pure Python (no rclpy): images, safety, kinematics, joint limits, alignment, cameras
  lapa_ros.interfaces   ROS 2 plumbing every node shares: message conversion, QoS, parameters, main loop
  lapa_ros.nodes        ROS 2 nodes: thin glue that converts messages and calls the core
  lapa_ros.bringup      node graphs (launch files and `lapa bringup`), their supervision, paths, DDS
  lapa_ros.recording    demonstrations as bags, bags to training episodes and to a finetuned policy
  lapa_ros.evaluation   episodes through ROS: evaluation, the demo, the ROS benchmarks
  lapa_ros.teleop       operators: keyboard, SpaceMouse, gamepad, the scripted sim expert (from teleop/)
  lapa_ros.cli          the `lapa` command (its table of commands)
"""
__version__ = "0.1.0"
