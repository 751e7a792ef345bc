"""Running policies and measuring them.

    evaluate         `lapa eval` / `lapa eval-compare`: episodes in simulation or on a robot, videos, summary
    episode_runner   drives episodes through ROS (reset, arm, instruction, success) for evaluation and demos
    demo             `lapa demo`: the whole stack on the simulated arm
    demo_policy      `lapa demo-policy`: train / export the shipped demo policy with the LAPA pipeline
    bench            `lapa bench pipeline|recorder|soak`: latency, drops and memory of the running nodes (JSON)
"""
