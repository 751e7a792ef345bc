"""Start a node graph as separate processes: what `ros2 launch` does, for machines without it.

    lapa bringup sim_teleop task:=door-open
    lapa bringup policy model:=runs/policy/export camera:=realsense

Each node of the graph (lapa_ros.graph) runs as `python -m <module> --ros-args ...` with the same
parameter files, overrides and remappings that the launch file gives `ros2 launch`. Ctrl-C stops
them all (SIGINT, then SIGTERM, then SIGKILL). If one node exits, the others are stopped too.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import yaml

from .dds import dds_defaults
from .graph import GRAPHS, NodeSpec, build_graph


def node_command(spec: NodeSpec, overrides_file: Optional[Path]) -> List[str]:
    cmd = list(spec.prefix) + [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        cmd += ["-r", f"__ns:={spec.namespace}"]
    for path in spec.config_paths():
        cmd += ["--params-file", str(path)]
    if overrides_file is not None:
        cmd += ["--params-file", str(overrides_file)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def default_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    dds_defaults(env)  # 640x480 images without drops
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class NodeProcesses:
    """A running graph. Use as a context manager; ``stop()`` is idempotent."""

    def __init__(self, specs: Sequence[NodeSpec], env: Optional[Mapping[str, str]] = None,
                 log_dir: Optional[Path] = None, echo: bool = False):
        self.specs = list(specs)
        self.env = default_env(env)
        self.echo = echo
        self._tmp = tempfile.TemporaryDirectory(prefix="lapa_bringup_")
        self.log_dir = Path(log_dir) if log_dir else Path(self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: Dict[str, subprocess.Popen] = {}
        self._threads: List[threading.Thread] = []

    def start(self) -> "NodeProcesses":
        for spec in self.specs:
            overrides = None
            if spec.parameters:
                overrides = Path(self._tmp.name) / f"{spec.name}_overrides.yaml"
                overrides.write_text(yaml.safe_dump({f"/**/{spec.name}": {"ros__parameters": dict(spec.parameters)}}))
            log = open(self.log_dir / f"{spec.name}.log", "wb")
            proc = subprocess.Popen(node_command(spec, overrides), env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self.procs[spec.name] = proc
            t = threading.Thread(target=self._pump, args=(spec.name, proc, log), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _pump(self, name: str, proc: subprocess.Popen, log) -> None:
        with log:
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if self.echo:
                    sys.stderr.write(f"[{name}] {line.decode(errors='replace')}")

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dead(self) -> Dict[str, int]:
        """Nodes that have exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def check_alive(self) -> None:
        dead = self.dead()
        if dead:
            name, code = next(iter(dead.items()))
            tail = "\n".join(self.log(name).strip().splitlines()[-15:])
            raise RuntimeError(f"node '{name}' exited with code {code}:\n{tail}")

    def stop(self, timeout: float = 8.0) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in self.procs.values() if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            for p in alive:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for t in self._threads:
            t.join(timeout=2.0)

    def __enter__(self) -> "NodeProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._tmp.cleanup()


# --------------------------------------------------------------------------- command
def parse_launch_arguments(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        if ":=" not in item:
            raise SystemExit(f"launch arguments look like name:=value, got '{item}'")
        k, v = item.split(":=", 1)
        out[k] = v
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", choices=sorted(GRAPHS), help="node graph to start")
    p.add_argument("arguments", nargs="*", help="launch arguments, name:=value")
    p.add_argument("--log-dir", default=None, help="write each node's output to <log-dir>/<node>.log")


def main(args: argparse.Namespace) -> int:
    specs = build_graph(args.graph, parse_launch_arguments(args.arguments))
    _, declared = GRAPHS[args.graph]
    print(f"starting graph '{args.graph}': {', '.join(s.name for s in specs)} (Ctrl-C stops)", file=sys.stderr)
    for a in declared:
        print(f"  {a.name}:={parse_launch_arguments(args.arguments).get(a.name, a.default)}  # {a.description}",
              file=sys.stderr)
    with NodeProcesses(specs, log_dir=args.log_dir, echo=True) as graph:
        try:
            while not graph.dead():
                time.sleep(0.2)
            graph.check_alive()
        except KeyboardInterrupt:
            return 0
        except RuntimeError as e:
            print(f"bringup: {e}", file=sys.stderr)
            return 1
    return 0
