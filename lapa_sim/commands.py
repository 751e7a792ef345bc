"""The simulator layer's commands (see lapa_models.commands for the registry): the model layer's,
plus episode generation, closed-loop evaluation without ROS, the LAPA benchmark and the sim benchmark."""
from __future__ import annotations

from typing import List

from lapa_models.commands import MODEL_COMMANDS, Command


def _data_generate():
    from . import generate
    return generate.add_arguments, generate.main


def _policy_evaluate():
    from . import evaluate
    return evaluate.add_arguments, evaluate.main


def _benchmark():
    from .benchmark import run
    return run.add_arguments, run.main


def _bench_sim():
    from . import bench
    return bench.add_arguments, bench.main


SIM_COMMANDS: List[Command] = MODEL_COMMANDS + [
    Command(("data", "generate"), "run the scripted experts in simulation and write episodes", _data_generate),
    Command(("policy", "evaluate"), "closed-loop success of an exported policy in simulation (no ROS)",
            _policy_evaluate),
    Command(("benchmark",), "does latent pretraining beat scratch? scratch vs LAPA vs action-pretrained", _benchmark),
    Command(("bench", "sim"), "benchmark: sim step + render time, episode generation throughput", _bench_sim),
]
