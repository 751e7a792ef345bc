"""Starting and supervising node graphs.

    graph            the node graphs, declared once (read by launch/*.launch.py and `lapa bringup`)
    launch_support   graph -> launch_ros LaunchDescription (for `ros2 launch lapa_ros ...`)
    supervisor       `lapa bringup`: the graph's nodes as supervised processes (stop order, respawn)
    paths            where config/, urdf/ and launch/ are (source tree or installed share/)
    dds              DDS environment defaults (localhost discovery, large-data transport)
    instruct         `lapa instruct`: send the running robot an instruction
"""
