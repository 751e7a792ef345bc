"""`lapa`: one command line for the whole workflow.

    lapa demo                         the whole stack on the simulated arm (the README's first command)
    lapa data generate ...            expert episodes from simulation
    lapa data info DIR                what a dataset holds
    lapa bench sim                    simulator step/render time and generation throughput (JSON)

Each subcommand lives in the module that owns the work; this file only routes to it, importing the
module when the command runs so that `lapa --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional, Tuple

# (command words, module with add_arguments(parser) and main(args) -> int, one-line help);
# "module:name" means functions add_<name>_arguments and <name>_main in that module.
COMMANDS: List[Tuple[Tuple[str, ...], str, str]] = [
    (("demo",), "lapa_ros.demo", "run the stack on the simulated arm: episodes, success, rollout video"),
    (("bringup",), "lapa_ros.bringup", "start a node graph (what `ros2 launch` starts) without ros2 launch"),
    (("instruct",), "lapa_ros.instruct", "send the robot an instruction (std_msgs/String on `instruction`)"),
    (("data", "generate"), "lapa_sim.generate", "run the scripted experts in simulation and write episodes"),
    (("data", "info"), "lapa_models.data.tools", "summarize an episode dataset"),
    (("data", "import-videos"), "lapa_models.data.import_videos", "turn a folder of videos into unlabelled episodes"),
    (("data", "export-lerobot"), "lapa_models.data.lerobot", "export an episode dataset as a LeRobotDataset v3"),
    (("laq", "train"), "lapa_models.laq.train", "train latent action quantization (LAPA stage 1) on episodes or videos"),
    (("laq", "label"), "lapa_models.laq.label", "write the LAQ latent action tokens of every transition next to a dataset"),
    (("laq", "evaluate"), "lapa_models.laq.evaluate", "evaluate LAQ: reconstruction vs copy baseline, codebook, action probe"),
    (("laq", "show"), "lapa_models.laq.show", "see what each latent action does: decoded grids, video, codebook usage"),
    (("policy", "pretrain"), "lapa_models.policy.pretrain", "stage 2: latent pretraining on LAQ-labelled episodes"),
    (("policy", "finetune"), "lapa_models.policy.finetune", "stage 3: action finetuning from a pretrained checkpoint or scratch"),
    (("policy", "export"), "lapa_models.policy.export", "export a finetuned policy to ONNX (fp32 + fp16) with its model card"),
    (("policy", "evaluate"), "lapa_sim.evaluate", "closed-loop success of an exported policy in simulation (no ROS)"),
    (("record", "sim"), "lapa_ros.record_session", "record demonstrations in simulation through ROS (expert operator)"),
    (("bags", "convert"), "lapa_ros.bag_convert", "convert episode bags to training episodes (aligned on stamps)"),
    (("bags", "recover"), "lapa_ros.bag_tools:recover", "complete bags left by a recorder that was killed"),
    (("bags", "info"), "lapa_ros.bag_tools:info", "topics, counts, rates and episode facts of bags"),
    (("finetune-bags",), "lapa_ros.finetune_bags", "bags + pretrained checkpoint -> finetuned, exported policy"),
    (("demo-policy", "train"), "lapa_ros.demo_policy:train", "train the demo policy with the whole LAPA pipeline"),
    (("demo-policy", "export"), "lapa_ros.demo_policy:export", "export the shipped demo policy to ONNX"),
    (("benchmark",), "lapa_sim.benchmark.run", "does latent pretraining beat scratch? scratch vs LAPA vs action-pretrained"),
    (("eval",), "lapa_ros.evaluation", "evaluate a policy: N episodes in simulation or on a robot, videos, summary"),
    (("eval-compare",), "lapa_ros.evaluation:compare", "compare evaluation runs side by side (table + plot)"),
    (("bench", "laq"), "lapa_models.laq.bench", "benchmark: LAQ training and labelling throughput (frame pairs/s)"),
    (("bench", "policy"), "lapa_models.policy.bench", "benchmark: per-frame latency, PyTorch eager vs ONNX Runtime"),
    (("bench", "sim"), "lapa_sim.bench", "benchmark: sim step + render time, episode generation throughput"),
    (("bench", "import"), "lapa_models.data.import_videos:bench", "benchmark: video import clips/s per worker count (JSON)"),
    (("bench", "pipeline"), "lapa_ros.bench:pipeline", "benchmark: camera stamp -> command latency, control rate"),
    (("bench", "recorder"), "lapa_ros.bench:recorder", "benchmark: recorder drops at 2x640x480@30 Hz, conversion"),
    (("bench", "soak"), "lapa_ros.bench:soak", "benchmark: every node's memory over a long run (RSS, JSON)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lapa", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {(): parser.add_subparsers(dest="command", metavar="COMMAND")}
    for words, module, help_text in COMMANDS:
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = sub.add_subparsers(dest="_".join(prefix), metavar="COMMAND")
                sub.set_defaults(_help=sub.print_help)
        p = groups[words[:-1]].add_parser(words[-1], help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Only the chosen command's module is imported (its options are needed for parsing and --help).
        if _chosen_words()[:len(words)] == list(words):
            _function(module, "add_arguments")(p)
    return parser


def _function(module: str, kind: str):
    """add_arguments / main of a command module, or add_<name>_arguments / <name>_main for 'module:name'."""
    name = ""
    if ":" in module:
        module, name = module.split(":", 1)
    mod = importlib.import_module(module)
    if not name:
        return getattr(mod, kind)
    return getattr(mod, f"add_{name}_arguments" if kind == "add_arguments" else f"{name}_main")


def _chosen_words() -> List[str]:
    words = []
    for a in sys.argv[1:]:
        if a.startswith("-"):
            break
        words.append(a)
    return words


def main(argv: Optional[List[str]] = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    args = build_parser().parse_args()
    module = getattr(args, "_module", None)
    if module is None:
        (getattr(args, "_help", None) or build_parser().print_help)()
        return 2
    try:
        return int(_function(module, "main")(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
