"""Demonstrations as bags, and bags to a finetuned policy.

    bags             rosbag2/MCAP episode bags: writer, episode facts, recovery of cut-short bags
    bag_convert      `lapa bags convert`: bags -> training episodes, aligned on header stamps
    bag_tools        `lapa bags info` / `lapa bags recover`
    record_session   `lapa record sim`: record demonstrations in simulation through ROS
    finetune_bags    `lapa finetune-bags`: bags -> finetuned, exported policy in one command
"""
