"""Start a node graph as separate processes: what `ros2 launch` does, for machines without it.

    lapa bringup sim_teleop task:=door-open
    lapa bringup policy model:=runs/policy/export camera:=realsense

Each node of the graph (lapa_ros.bringup.graph) runs as `python -m lapa_ros.interfaces.entry <executable>
--ros-args ...` (what `ros2 run lapa_ros <executable>` runs) with the same parameter files, overrides and
remappings that the launch file gives `ros2 launch`.

Supervision, as `ros2 launch` does it:
  * Ctrl-C or SIGTERM (systemd, docker, `kill`) stops the graph in order: every node but the arm
    controller first (SIGINT, then SIGTERM, then SIGKILL for those that do not exit), the arm
    controller last, so it holds the arm while the nodes that command it go away; its own exit
    commands a final hold. bringup exits 0.
  * A node that exits on its own is reported (name, exit code or signal, its last log lines). A node
    declared with `respawn` (the camera, teleop devices) is restarted after `respawn_delay`; any other
    brings the graph down in the same order, and bringup exits 1.
  * A respawned node that exits again within START_WINDOW s of starting failed to start: each such
    restart waits twice as long as the one before (respawn_delay, 2x, 4x, ... at most MAX_RESPAWN_DELAY),
    and after MAX_FAILED_STARTS failed starts in a row bringup gives up on it (a missing camera, a wrong
    serial or video file): it is reported and the graph brought down as for any other node (exit 1).
    A node that ran longer (a USB reset after minutes of work) is restarted after respawn_delay again.
    (launch_ros' `respawn` restarts forever; systemd gives up after a burst of failures, as here.)
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

from lapa_ros.bringup.dds import dds_defaults
from lapa_ros.bringup.graph import GRAPHS, NodeSpec, build_graph

START_WINDOW = 30.0        # [s] a respawned node that exits sooner than this after starting failed to start
MAX_FAILED_STARTS = 5      # failed starts in a row after which a respawning node is given up
MAX_RESPAWN_DELAY = 30.0   # [s] the longest wait before a restart (the delay doubles per failed start)


def check_parameter_file(path: Path) -> None:
    """Raise naming ``path`` when it is missing, unreadable, not YAML or not a mapping: what rcl would
    refuse, each node with its own traceback, after some nodes of the graph had started."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"parameter file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: unreadable parameter file ({e})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from e
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: a parameter file maps node names to ros__parameters, got a "
                         f"{type(data).__name__}")


def node_command(spec: NodeSpec, overrides_file: Optional[Path]) -> List[str]:
    # `ros2 run lapa_ros <executable>` without an install step; lapa_ros.interfaces.entry takes a Ctrl-C that
    # lands while the node is still importing (no traceback, exit 0).
    cmd = list(spec.prefix) + [sys.executable, "-m", "lapa_ros.interfaces.entry", spec.executable,
                               "--ros-args", "-r", f"__node:={spec.name}"]
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


def describe_exit(code: int) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


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
        self.respawns: Dict[str, int] = {}
        self.started: Dict[str, float] = {}   # monotonic start time of each node's current process
        self._threads: List[threading.Thread] = []

    def start(self) -> "NodeProcesses":
        """Start every node, once every parameter file has been checked (nothing starts if one is bad)."""
        for spec in self.specs:
            for path in spec.config_paths():
                check_parameter_file(path)
        for spec in self.specs:
            self._spawn(spec)
        return self

    def _spawn(self, spec: NodeSpec) -> None:
        overrides = None
        if spec.parameters:
            overrides = Path(self._tmp.name) / f"{spec.name}_overrides.yaml"
            overrides.write_text(yaml.safe_dump({f"/**/{spec.name}": {"ros__parameters": dict(spec.parameters)}}))
        log = open(self.log_dir / f"{spec.name}.log", "ab")
        proc = subprocess.Popen(node_command(spec, overrides), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[spec.name] = proc
        self.started[spec.name] = time.monotonic()
        t = threading.Thread(target=self._pump, args=(spec.name, proc, log), daemon=True)
        t.start()
        self._threads.append(t)

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

    def exit_report(self, name: str, code: int) -> str:
        tail = "\n".join(self.log(name).strip().splitlines()[-15:])
        return f"node '{name}' {describe_exit(code)}:\n{tail}"

    def check_alive(self) -> None:
        dead = self.dead()
        if dead:
            name, code = next(iter(dead.items()))
            raise RuntimeError(self.exit_report(name, code))

    def supervise(self, stop: threading.Event, say=print, poll: float = 0.2,
                  max_failed_starts: int = MAX_FAILED_STARTS, start_window: float = START_WINDOW,
                  max_delay: float = MAX_RESPAWN_DELAY) -> Optional[str]:
        """Watch the nodes until ``stop`` is set (returns None) or a node that is not respawned exits
        (returns its report). Nodes declared with ``respawn`` are restarted after their delay, doubled
        for each failed start in a row (an exit within ``start_window`` s of starting); after
        ``max_failed_starts`` of them the node is given up (its report is returned)."""
        due: Dict[str, float] = {}   # respawn time of each dead respawning node
        failed: Dict[str, int] = {}  # failed starts in a row of each respawning node
        by_name = {s.name: s for s in self.specs}
        while not stop.wait(poll):
            for name, code in self.dead().items():
                spec = by_name[name]
                if not spec.respawn:
                    return self.exit_report(name, code)
                if name not in due:
                    ran = time.monotonic() - self.started.get(name, 0.0)
                    failed[name] = failed.get(name, 0) + 1 if ran < start_window else 0
                    if failed[name] >= max_failed_starts:
                        return (f"node '{name}' failed to start {failed[name]} times in a row (each exited within "
                                f"{start_window:g} s); not respawning it again. Last: {self.exit_report(name, code)}")
                    delay = spec.respawn_delay * 2 ** max(0, failed[name] - 1)
                    delay = min(delay, max(max_delay, spec.respawn_delay))
                    tries = f" (failed start {failed[name]} of {max_failed_starts})" if failed[name] else ""
                    say(f"bringup: node '{name}' {describe_exit(code)}; respawning in {delay:g} s{tries}")
                    due[name] = time.monotonic() + delay
                elif time.monotonic() >= due[name]:
                    del due[name]
                    self.respawns[name] = self.respawns.get(name, 0) + 1
                    self._spawn(spec)
        return None

    def stop(self, timeout: float = 8.0) -> None:
        """Stop every node but the ``stop_last`` ones, then those (SIGINT, SIGTERM, SIGKILL as needed)."""
        last = {s.name for s in self.specs if s.stop_last}
        for group in ([p for n, p in self.procs.items() if n not in last], [p for n, p in self.procs.items() if n in last]):
            self._stop_group(group, timeout)
        for t in self._threads:
            t.join(timeout=2.0)

    @staticmethod
    def _stop_group(procs: Sequence[subprocess.Popen], timeout: float) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in procs if p.poll() is None]
            if not alive:
                return
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

    def __enter__(self) -> "NodeProcesses":
        try:
            return self.start()
        except BaseException:   # a node that could not be started: stop those that were
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        self._tmp.cleanup()


# --------------------------------------------------------------------------- command
def parse_launch_arguments(items: Sequence[str]) -> Dict[str, str]:
    from lapa_models.text import printable

    out = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"launch arguments look like name:=value, got '{printable(item)}'")
        k, v = item.split(":=", 1)
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:   # bytes the locale could not decode: no node could read them
            raise ValueError(f"launch argument '{printable(k)}': not valid UTF-8 text ('{printable(v)}')") from None
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
    stop = threading.Event()
    received: List[str] = []

    def on_signal(signum, frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with NodeProcesses(specs, log_dir=args.log_dir, echo=True) as graph:
            failure = graph.supervise(stop, say=lambda m: print(m, file=sys.stderr))
            if failure:
                print(f"bringup: {failure}\nbringup: stopping the graph (the arm controller last, holding)",
                      file=sys.stderr)
            else:
                print(f"bringup: {received[0] if received else 'stop'} received: stopping the graph "
                      f"(the arm controller last, holding)", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failure else 0
