"""The ROS package itself: manifest, entry points, configs, launch files, colcon build, pure modules."""
import ast
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from lapa_ros.bringup.graph import GRAPHS, build_graph
from lapa_ros.interfaces.entry import NODES as NODE_TABLE

ROOT = Path(__file__).resolve().parents[1]


def _entry_points():
    """Console scripts as setup.py declares them: each node through lapa_ros.interfaces.entry, and `lapa`."""
    eps = {name: f"lapa_ros.interfaces.entry:{name}" for name in NODE_TABLE}
    eps["lapa"] = "lapa_ros.cli:main"
    return eps


def test_package_xml_is_format_3_ament_python_with_the_expected_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "lapa_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "trajectory_msgs", "std_srvs",
                "diagnostic_msgs", "lifecycle_msgs", "launch_ros"):
        assert dep in deps, dep
    assert (ROOT / "resource" / "lapa_ros").is_file()


def test_every_console_script_points_at_a_main_function():
    for name, target in {**_entry_points(), **NODE_TABLE}.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_graph_nodes_use_installed_executables_and_valid_parameter_files():
    eps = _entry_points()
    for graph in GRAPHS:
        for spec in build_graph(graph):
            assert spec.executable in eps and NODE_TABLE[spec.executable].split(":")[0] == spec.module, spec
            module = importlib.import_module(spec.module)
            node_params = getattr(module, "PARAMS_BY_EXECUTABLE", {}).get(spec.executable) or module.PARAMS
            declared = {p.name: p for p in node_params}
            for i, path in enumerate(spec.config_paths()):
                doc = yaml.safe_load(path.read_text())
                assert list(doc) == [f"/**/{spec.name}"], path
                params = doc[f"/**/{spec.name}"]["ros__parameters"]
                if i == 0:  # the node's own file lists every parameter with the node's default
                    assert set(params) == set(declared), f"{path}: {set(params) ^ set(declared)}"
                for key, value in params.items():
                    assert key in declared, f"{path}: '{key}' is not a parameter of {spec.name}"
                    assert type(value) is type(declared[key].default), f"{path}: '{key}' has the wrong type"
                    if i == 0:
                        assert value == declared[key].default, f"{path}: '{key}' differs from the node's default"
            for key in spec.parameters:
                assert key in declared or key == "use_sim_time", f"graph {graph}: {spec.name} has no parameter '{key}'"


def test_launch_files_build_their_graph_from_the_shared_declaration():
    launch_files = sorted((ROOT / "launch").glob("*.launch.py"))
    assert launch_files
    for path in launch_files:
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "launch_description_for"]
        assert len(calls) == 1, path
        assert calls[0].args[0].value in GRAPHS, path
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def _walk(package):
    mod = importlib.import_module(package)
    yield package
    if hasattr(mod, "__path__"):
        for info in pkgutil.walk_packages(mod.__path__, package + "."):
            yield info.name


@pytest.mark.timeout(300)
def test_colcon_build_installs_executables_launch_config_and_urdf(tmp_path):
    colcon = Path(sys.executable).with_name("colcon")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src" / "lapa_ros"
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    subprocess.run([str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(tmp_path / "src"),
                    "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    prefix = tmp_path / "install" / "lapa_ros"
    for exe in _entry_points():
        assert (prefix / "lib" / "lapa_ros" / exe).is_file(), exe
    share = prefix / "share" / "lapa_ros"
    for sub in ("launch/sim.launch.py", "config/sim_robot.yaml", "package.xml"):
        assert (share / sub).is_file(), sub
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "lapa_ros").is_file()
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "lapa_ros" / "teleop" / "scripted_expert.py").is_file()
    assert (site / "lapa_sim" / "tasks.yaml").is_file()
    # Installed, the package finds its share directory through the ament index.
    out = subprocess.run([sys.executable, "-c", "from lapa_ros.bringup.paths import share_dir; print(share_dir())"],
                         env={**env, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(prefix)}, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == share


def test_every_command_of_the_registry_loads_and_builds_its_parser():
    """The command table is the only routing: every row imports, gives two callables, and its options
    parse; `python -m lapa_models` (the model layer alone) and `python -m lapa_ros` run the same tables."""
    import argparse

    from lapa_models.commands import MODEL_COMMANDS
    from lapa_ros.cli import COMMANDS
    from lapa_sim.commands import SIM_COMMANDS

    words = [c.words for c in COMMANDS]
    assert len(set(words)) == len(words)
    assert {c.words for c in MODEL_COMMANDS} <= {c.words for c in SIM_COMMANDS} <= set(words)
    for command in COMMANDS:
        add_arguments, main = command.load()
        assert callable(main), command.words
        add_arguments(argparse.ArgumentParser(prog="lapa " + " ".join(command.words)))
    for module, command in (("lapa_models", ["laq", "train"]), ("lapa_ros", ["bags", "info"])):
        out = subprocess.run([sys.executable, "-m", module, *command, "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "lapa_models", "bags", "info"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "invalid choice" in out.stderr   # ROS commands are not in the model layer
