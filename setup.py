"""lapa_ros: an ament_python package that also installs with pip into a virtual environment.

Python packages: lapa_ros (ROS 2 nodes + CLI), lapa_ros.teleop (from teleop/), lapa_models (pure
models, training, data) and lapa_sim (the simulated arm and its tasks). launch/, config/ and urdf/
go to share/lapa_ros as ROS tools expect.
"""
import ast
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "lapa_ros"


def _node_executables():
    """The node executables, from the table in lapa_ros/interfaces/entry.py (read as a literal: setup.py
    imports nothing of the package), where each console script starts."""
    tree = ast.parse((Path(__file__).resolve().parent / "lapa_ros" / "interfaces" / "entry.py").read_text())
    table = next(n.value for n in tree.body if isinstance(n, ast.AnnAssign) and n.target.id == "NODES")
    return list(ast.literal_eval(table))


# One console script per node: `ros2 run lapa_ros <name>` on a ROS machine.
NODES = {name: f"lapa_ros.interfaces.entry:{name}" for name in _node_executables()}

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
