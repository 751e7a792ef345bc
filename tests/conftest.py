"""Shared fixtures: isolated ROS 2 domains, in-test rclpy contexts, node graphs as processes, sim data.

Every test that touches DDS gets its own ROS_DOMAIN_ID and keeps discovery on localhost, so tests
never hear each other (or anything else on the network).
"""
from __future__ import annotations

import itertools
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from lapa_ros.bringup.dds import dds_defaults

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
dds_defaults()

# Domain ids 1..100, starting at a different place per pytest process. Each test holds an exclusive lock
# on its domain id for its duration (a file lock, released when the test or the process ends), so two test
# runs on one machine (a developer's and CI's, two checkouts) never share a domain: their nodes would hear
# each other, e.g. another test's simulated arm answering this test's commands.
_domain_ids = itertools.cycle(range(1 + random.Random(os.getpid()).randrange(100), 101))
_LOCK_DIR = Path(tempfile.gettempdir()) / "lapa_ros_test_domains"


@pytest.fixture
def ros_domain() -> Iterator[int]:
    import fcntl

    _LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(100 * 50):
        domain = next(_domain_ids) % 100 + 1
        f = open(_LOCK_DIR / f"{domain}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:   # another test run holds it
            f.close()
            if _ % 100 == 99:
                time.sleep(0.1)
            continue
        try:
            yield domain
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        return
    raise RuntimeError("no free ROS domain id in 1..100: are 100 test runs going at once?")


@pytest.fixture
def ros_env(ros_domain) -> dict:
    """Environment for node processes of this test (its own domain, localhost discovery)."""
    return {"ROS_DOMAIN_ID": str(ros_domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_BUILTIN_TRANSPORTS": os.environ["FASTDDS_BUILTIN_TRANSPORTS"],
            "FASTDDS_DEFAULT_PROFILES_FILE": os.environ["FASTDDS_DEFAULT_PROFILES_FILE"], "MUJOCO_GL": "egl"}


class RosTestContext:
    """An rclpy context on the test's domain with one node spun in a background thread."""

    def __init__(self, domain_id: int, name: str = "test_probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        # Single-threaded: rclpy's multi-threaded executor busy-polls and would take a core from the
        # node processes under test. Tests wait on futures from their own thread (see call()).
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # An exception in a test's callback ends the spin: keep it, so that the test fails with it
        # (wait_for, call and close raise it) instead of timing out waiting for what never comes.
        # Exceptions after close() began (the context shutting down under the executor) are not errors.
        try:
            self.executor.spin()
        except BaseException as e:   # noqa: BLE001 - re-raised in the test's thread
            if not self._closing:
                self.error = e

    def check(self) -> None:
        """Raise the exception that stopped the test's executor, if any."""
        if self.error is not None:
            raise AssertionError(f"a callback of the test node raised: {self.error!r}") from self.error

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.01)

    def call(self, client, request, timeout: float = 15.0):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f"answer from {client.srv_name}")
        return future.result()

    def close(self) -> None:
        import rclpy

        self._closing = True
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.check()


@pytest.fixture
def ros(ros_domain) -> Iterator[RosTestContext]:
    ctx = RosTestContext(ros_domain)
    yield ctx
    ctx.close()


@pytest.fixture
def start_graph(ros_env, tmp_path):
    """start_graph(specs) -> NodeProcesses running in this test's domain; stopped at teardown."""
    from lapa_ros.bringup.supervisor import NodeProcesses

    running = []

    def start(specs):
        g = NodeProcesses(specs, env=ros_env, log_dir=tmp_path / "logs").start()
        running.append(g)
        return g

    yield start
    for g in running:
        g.stop()


@pytest.fixture
def lapa(monkeypatch, capsys):
    """lapa(*argv) -> (exit code, stdout, stderr) of the `lapa` command line, run in this process."""
    import sys

    from lapa_ros import cli

    monkeypatch.setattr(sys, "argv", ["lapa"])  # cli.main replaces it; restored after the test

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


@pytest.fixture(scope="session")
def sim_dataset_64(tmp_path_factory) -> Path:
    """A small labelled sim dataset at 64x64 (3 easy tasks x 4 expert episodes), shared by tests."""
    from lapa_sim.generate import generate

    out = tmp_path_factory.mktemp("sim64") / "dataset"
    generate(out, tasks="reach,drawer-close,button-press-topdown", episodes_per_task=4, image_size=(64, 64),
             workers=1, progress=False)
    return out


def _export_tiny(out: Path, use_state: bool) -> Path:
    """A tiny LapaPolicy (random weights, real architecture) exported with its model card."""
    import numpy as np
    import torch

    from lapa_models.policy.configuration import get_config
    from lapa_models.policy.export import export_policy
    from lapa_models.policy.modeling import LapaPolicy
    from lapa_models.policy.normalization import NormalizationStats
    from lapa_sim.world import GRIPPER   # the simulated arm's: the sim graph tests run this export

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    actions = np.concatenate([rng.uniform(-0.3, 0.3, (200, 3)) + [0.0, 0.2, 0.0], rng.integers(0, 2, (200, 1))], 1)
    states = rng.uniform([-0.2, 0.5, 0.05, 0.0], [0.2, 0.8, 0.3, 1.0], (200, 4)) if use_state else None
    config = get_config("tiny").replace(latent_head=False, action_names=["vx", "vy", "vz", "gripper"],
                                        state_names=["ee_x", "ee_y", "ee_z", "gripper"] if use_state else None,
                                        control_rate_hz=20.0, use_state=use_state, data_frame_size=[64, 64],
                                        gripper=GRIPPER.to_json() if use_state else None)
    policy = LapaPolicy(config, NormalizationStats.from_data(actions, states)).eval()
    export_policy(policy, out, precisions=("fp32",))
    return out


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """Tiny exported policies (random weights, real architecture), with and without robot state."""
    root = tmp_path_factory.mktemp("tiny_policy")
    return {"state": _export_tiny(root / "with_state", True), "no_state": _export_tiny(root / "no_state", False)}
