"""The simulated arm driven by its scripted expert: `ros2 launch lapa_ros sim.launch.py task:=door-open`.

The node graph is declared once in lapa_ros.graph (graph "sim_expert"); `lapa bringup sim_expert`
starts the same nodes with the same parameters where `ros2 launch` is not available.
"""
from lapa_ros.launch_support import launch_description_for


def generate_launch_description():
    return launch_description_for("sim_expert")
