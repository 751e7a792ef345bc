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
        print(f"error: {e}", file=sys.stderr)
        return 2
