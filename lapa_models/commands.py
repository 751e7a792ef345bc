"""What the stages' command-line entry points share."""
from __future__ import annotations

import argparse
import sys
from typing import Callable


def report_input_errors(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; input problems (bad data, checkpoint, config) end in one "error:" line and exit
    code 2 instead of a traceback. The library's ValueErrors name the file or field at fault."""
    try:
        return run(args)
    except (ValueError, FileExistsError) as e:
        from .text import printable

        print(f"error: {printable(e, limit=4000)}", file=sys.stderr)   # file names may hold control characters
        return 2


def command_line(words, argv) -> str:
    """The shell form of ``lapa <words> <argv>``, quoted."""
    import shlex

    return "lapa " + " ".join(words) + " " + " ".join(shlex.quote(str(a)) for a in argv)


def run_in_process(words, module, argv) -> int:
    """Run the command ``lapa <words> <argv>`` in this process: the same parser and main as the shell
    command (``module`` has add_arguments and main); returns main's exit code."""
    parser = argparse.ArgumentParser(prog="lapa " + " ".join(words))
    module.add_arguments(parser)
    return int(module.main(parser.parse_args([str(a) for a in argv])) or 0)
