"""lapa_ros: an ament_python package that also installs with pip into a virtual environment.

Python packages: lapa_ros (ROS 2 nodes + CLI), lapa_ros.teleop (from teleop/), lapa_models (pure
models, training, data) and lapa_sim (the simulated arm and its tasks). launch/, config/ and urdf/
go to share/lapa_ros as ROS tools expect.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lapa_ros"

# One console script per node and command; `ros2 run lapa_ros <name>` on a ROS machine.
NODES = {
    "sim_robot_node": "lapa_ros.nodes.sim_robot:main",
    "panda_sim_node": "lapa_ros.nodes.panda_sim:main",
    "scripted_expert_node": "lapa_ros.teleop.scripted_expert:main",
    "camera_node": "lapa_ros.nodes.camera:main",
    "policy_node": "lapa_ros.nodes.policy:main",
    "arm_controller_node": "lapa_ros.nodes.arm_controller:main",
    "recorder_node": "lapa_ros.nodes.recorder:main",
    "keyboard_teleop_node": "lapa_ros.teleop.keyboard:main",
    "gamepad_teleop_node": "lapa_ros.teleop.joy_teleop:main_gamepad",
    "spacemouse_teleop_node": "lapa_ros.teleop.joy_teleop:main_spacemouse",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description="LAPA latent action pretraining from videos, deployed on ROS 2 arms",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lapa_ros", "lapa_ros.*", "lapa_models", "lapa_models.*",
                                    "lapa_sim", "lapa_sim.*"]) + ["lapa_ros.teleop"],
    package_dir={"lapa_ros.teleop": "teleop"},
    package_data={"lapa_sim": ["*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in NODES.items()]
        + ["lapa = lapa_ros.cli:main"],
    },
)
