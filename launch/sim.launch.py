"""The simulated arm run by the policy: `ros2 launch lapa_ros sim.launch.py model:=<export> task:=reach`.

Same policy and arm controller as on a robot, with the simulated arm publishing the camera. The
node graph is declared once in lapa_ros.bringup.graph ("sim_policy"); `lapa bringup sim_policy` starts the same.
"""
from lapa_ros.bringup.launch_support import launch_description_for


def generate_launch_description():
    return launch_description_for("sim_policy")
