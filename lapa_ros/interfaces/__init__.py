"""What every node shares with ROS 2.

    messages     ROS messages <-> numpy (images of any encoding, poses, twists, stamps)
    ros_common   QoS profiles, parameters with descriptors (Param), the node main loop (run_node),
                 throttled logging and /diagnostics messages
"""
