"""The simulated arm operated through the arm controller: `ros2 launch lapa_ros sim_teleop.launch.py`.

The scripted expert plays the operator (what a keyboard, SpaceMouse or gamepad does on a robot).
Declared once in lapa_ros.bringup.graph ("sim_teleop"); `lapa bringup sim_teleop` starts the same.
"""
from lapa_ros.bringup.launch_support import launch_description_for


def generate_launch_description():
    return launch_description_for("sim_teleop")
