"""The policy on a robot: `ros2 launch lapa_ros policy.launch.py model:=/path/to/export`.

Starts the camera (RealSense by default), the policy (ONNX Runtime) and the safety-gated arm
controller (MoveIt Servo by default). The controller starts DISARMED:
`ros2 service call /arm_controller/arm std_srvs/srv/Trigger` once the robot is clear.
Arguments: model, camera, camera_serial, camera_device, video_path, controller, robot_description,
providers (see `ros2 launch lapa_ros policy.launch.py --show-args`).
The node graph is declared once in lapa_ros.bringup.graph ("policy"); `lapa bringup policy` starts the same.
"""
from lapa_ros.bringup.launch_support import launch_description_for


def generate_launch_description():
    return launch_description_for("policy")
