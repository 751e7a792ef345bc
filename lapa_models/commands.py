"""The command registry and what the stages' command-line entry points share.

A command is a row of a table: its words (``("laq", "train")`` is ``lapa laq train``), a one-line help,
and a loader that imports the module doing the work and returns its two callables,
``add_arguments(parser)`` and ``main(args) -> exit code``. The import happens only when the command is
chosen, so ``lapa --help`` stays fast and a command's heavy dependencies (torch, MuJoCo, rclpy) load
only for it. Each layer has its own table and the layer above adds its rows: ``MODEL_COMMANDS`` here,
``lapa_sim.commands.SIM_COMMANDS``, and ``lapa_ros.cli`` (the ``lapa`` program) for all of them.

``python -m lapa_models <words> ...`` runs the model commands (what ``torchrun -m`` / ``accelerate launch
-m`` need on a GPU node without the ROS layer); ``python -m lapa_ros <words> ...`` is ``lapa``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, List, Optional, Sequence, Tuple

AddArguments = Callable[[argparse.ArgumentParser], None]
Main = Callable[[argparse.Namespace], int]


@dataclasses.dataclass(frozen=True)
class Command:
    words: Tuple[str, ...]
    help: str
    load: Callable[[], Tuple[AddArguments, Main]]   # imports the module, returns (add_arguments, main)


def find(commands: Sequence[Command], words: Sequence[str]) -> Command:
    for c in commands:
        if c.words == tuple(words):
            return c
    raise KeyError(f"no command 'lapa {' '.join(words)}'")


# --------------------------------------------------------------------------- the model layer's commands
def _data_info():
    from .data import tools
    return tools.add_arguments, tools.main


def _data_import_videos():
    from .data import import_videos
    return import_videos.add_arguments, import_videos.main


def _data_export_lerobot():
    from .data import lerobot
    return lerobot.add_arguments, lerobot.main


def _laq_train():
    from .laq import train
    return train.add_arguments, train.main


def _laq_label():
    from .laq import label
    return label.add_arguments, label.main


def _laq_evaluate():
    from .laq import evaluate
    return evaluate.add_arguments, evaluate.main


def _laq_show():
    from .laq import show
    return show.add_arguments, show.main


def _policy_pretrain():
    from .policy import pretrain
    return pretrain.add_arguments, pretrain.main


def _policy_finetune():
    from .policy import finetune
    return finetune.add_arguments, finetune.main


def _policy_export():
    from .policy import export
    return export.add_arguments, export.main


def _bench_laq():
    from .laq import bench
    return bench.add_arguments, bench.main


def _bench_policy():
    from .policy import bench
    return bench.add_arguments, bench.main


def _bench_train():
    from .policy import bench
    return bench.add_training_arguments, bench.main_training


def _bench_import():
    from .data import import_videos
    return import_videos.add_bench_arguments, import_videos.bench_main


MODEL_COMMANDS: List[Command] = [
    Command(("data", "info"), "summarize an episode dataset", _data_info),
    Command(("data", "import-videos"), "turn a folder of videos into unlabelled episodes", _data_import_videos),
    Command(("data", "export-lerobot"), "export an episode dataset as a LeRobotDataset v3", _data_export_lerobot),
    Command(("laq", "train"), "train latent action quantization (LAPA stage 1) on episodes or videos", _laq_train),
    Command(("laq", "label"), "write the LAQ latent action tokens of every transition next to a dataset", _laq_label),
    Command(("laq", "evaluate"), "evaluate LAQ: reconstruction vs copy baseline, codebook, action probe",
            _laq_evaluate),
    Command(("laq", "show"), "see what each latent action does: decoded grids, video, codebook usage", _laq_show),
    Command(("policy", "pretrain"), "stage 2: latent pretraining on LAQ-labelled episodes", _policy_pretrain),
    Command(("policy", "finetune"), "stage 3: action finetuning from a pretrained checkpoint or scratch",
            _policy_finetune),
    Command(("policy", "export"), "export a finetuned policy to ONNX (fp32 + fp16) with its model card", _policy_export),
    Command(("bench", "laq"), "benchmark: LAQ training and labelling throughput (frame pairs/s)", _bench_laq),
    Command(("bench", "policy"), "benchmark: per-frame latency, PyTorch eager vs ONNX Runtime", _bench_policy),
    Command(("bench", "train"), "benchmark: policy training step throughput, synthetic batches (JSON)",
            _bench_train),
    Command(("bench", "import"), "benchmark: video import clips/s per worker count (JSON)", _bench_import),
]


# --------------------------------------------------------------------------- the program
def build_parser(commands: Sequence[Command], prog: str, description: str,
                 argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """Nested subcommands for ``commands``; only the chosen command's module is imported (its options
    are needed to parse and for --help)."""
    chosen = _chosen_words(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {(): parser.add_subparsers(dest="command", metavar="COMMAND")}
    for command in commands:
        words = command.words
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = sub.add_subparsers(dest="_".join(prefix), metavar="COMMAND")
                sub.set_defaults(_help=sub.print_help)
        p = groups[words[:-1]].add_parser(words[-1], help=command.help, description=command.help)
        if chosen[:len(words)] == list(words):
            add_arguments, main = command.load()
            add_arguments(p)
            p.set_defaults(_main=main)
    return parser


def _chosen_words(argv: Sequence[str]) -> List[str]:
    words = []
    for a in argv:
        if a.startswith("-"):
            break
        words.append(a)
    return words


def run_program(commands: Sequence[Command], prog: str, description: str,
                argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and run the chosen command; its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(commands, prog, description, argv)
    args = parser.parse_args(argv)
    main = getattr(args, "_main", None)
    if main is None:
        (getattr(args, "_help", None) or parser.print_help)()
        return 2
    try:
        return int(main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as e:
        # Bad input (an unknown task, a corrupt model file, a missing folder) that a command did not report
        # itself: one line naming it, not a traceback. LAPA_TRACEBACK=1 shows where it came from.
        import os

        if os.environ.get("LAPA_TRACEBACK"):
            raise
        return _input_error(e, " (LAPA_TRACEBACK=1 shows the traceback)")


def _input_error(e: BaseException, suffix: str = "") -> int:
    """Print one "error:" line for an input problem (escaped: file names may hold control characters); 2."""
    from .text import printable

    print(f"error: {printable(e, limit=4000)}{suffix}", file=sys.stderr)
    return 2


def report_input_errors(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; input problems (bad data, checkpoint, config) end in one "error:" line and exit
    code 2 instead of a traceback. The library's ValueErrors name the file or field at fault. (Commands run
    in process, e.g. by the benchmark, do not pass through run_program's own catch.)"""
    try:
        return run(args)
    except (ValueError, FileExistsError) as e:
        return _input_error(e)


def command_line(words, argv) -> str:
    """The shell form of ``lapa <words> <argv>``, quoted."""
    import shlex

    return "lapa " + " ".join(words) + " " + " ".join(shlex.quote(str(a)) for a in argv)


def run_in_process(command: Command, argv) -> int:
    """Run ``lapa <words> <argv>`` in this process: the same parser and main as the shell command;
    returns main's exit code."""
    add_arguments, main = command.load()
    parser = argparse.ArgumentParser(prog="lapa " + " ".join(command.words))
    add_arguments(parser)
    return int(main(parser.parse_args([str(a) for a in argv])) or 0)
