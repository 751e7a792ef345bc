"""lapa_sim: the simulated arms behind lapa_ros's interfaces (no ROS import).

    tasks       the task catalogue (tasks.yaml: robot, environment, expert, instructions, cameras)
    world       the Meta-World Sawyer (end-effector velocity control, 20 Hz)
    panda/      a joint-level Franka Panda in MuJoCo, built from urdf/panda.urdf (ros2_control semantics)
    generate    `lapa data generate`: scripted-expert episodes (demonstrations or unlabelled video)
    evaluate    `lapa policy evaluate`: closed-loop success of an exported policy, in process
    benchmark/  `lapa benchmark`: scratch vs LAPA vs action-pretrained
    commands    the simulator layer's rows of the command table
"""
from .tasks import CameraSpec, TaskSpec, UnknownTaskError, get_task, load_catalogue, task_names

__all__ = ["CameraSpec", "TaskSpec", "UnknownTaskError", "get_task", "load_catalogue", "task_names"]
