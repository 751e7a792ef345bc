"""What every node shares with ROS 2.

    messages     ROS messages <-> numpy (images of any encoding, poses, twists, stamps)
    ros_common   QoS profiles, parameters with descriptors (Param), the node main loop (run_node),
                 throttled logging and /diagnostics messages
    entry        where every node process starts: the table of executables (setup.py's console
                 scripts, `lapa bringup`), a Ctrl-C during the node's imports ends it quietly
"""
