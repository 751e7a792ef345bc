"""Record teleoperated demonstrations on a robot: `ros2 launch lapa_ros record.launch.py teleop:=spacemouse`.

Camera + safety-gated arm controller + recorder (+ the gamepad or SpaceMouse teleop node reading
the `joy` / `spacenav` driver). For the keyboard, run `ros2 run lapa_ros keyboard_teleop_node` in
its own terminal. Arm the controller (gamepad RB, keyboard m, or the arm_controller/arm service),
then start/save/discard episodes from the device or the recorder/* services.
Declared once in lapa_ros.bringup.graph ("record"); `lapa bringup record` starts the same.
"""
from lapa_ros.bringup.launch_support import launch_description_for


def generate_launch_description():
    return launch_description_for("record")
