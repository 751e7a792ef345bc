"""`lapa bags info` and `lapa bags recover`: look into episode bags, complete interrupted ones.

PATH is one bag (a rosbag2 folder or a .mcap file) or a folder of them. Each bag succeeds or fails on
its own: a failing one gets one line on stderr with its name and the reason and the others are still
done; the exit code is then 2 (1 when PATH itself cannot be used: missing, or without bags).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lapa_ros.recording.bags import (NOT_A_BAG, SOME_FAILED, BagError, EpisodeInfo, bag_file, bag_topics, is_complete, printable,
                   recover_bag, report_line, scan_bags)


def _scan(command: str, path: str):
    """(bags, not bags) of PATH, after one line for each entry that is not a bag; None when PATH is unusable."""
    try:
        bags, others = scan_bags(Path(path))
    except BagError as e:
        print(printable(f"lapa bags {command}: {e}"), file=sys.stderr)
        return None
    for p in others:
        print(report_line("ignored", p, NOT_A_BAG), file=sys.stderr)
    return bags


def _bag_info(bag: Path) -> dict:
    entry = {"complete": is_complete(bag), **dataclasses.asdict(EpisodeInfo.load(bag))}
    if entry["complete"]:
        entry["topics"] = {t: {"type": ty, "messages": n} for t, (ty, n) in bag_topics(bag).items()}
    else:
        bag_file(bag)  # something to recover: an MCAP file (BagError saying what is there instead)
    return entry


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a bag (rosbag2 folder or .mcap file) or a folder of bags")


def info_main(args: argparse.Namespace) -> int:
    bags = _scan("info", args.path)
    if bags is None:
        return 1
    out, failed = [], 0
    for bag in bags:
        entry = {"bag": str(bag)}
        try:
            entry.update(_bag_info(bag))
        except BagError as e:
            entry["error"] = str(e)
            failed += 1
            print(report_line("FAILED", bag, e), file=sys.stderr)
        out.append(entry)
    print(json.dumps(out, indent=2))
    print(f"{len(bags) - failed} bag(s) read, {failed} failed", file=sys.stderr)
    return SOME_FAILED if failed else 0


def add_recover_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a bag or a folder of bags; complete bags are left alone")


def recover_main(args: argparse.Namespace) -> int:
    bags = _scan("recover", args.path)
    if bags is None:
        return 1
    failed = 0
    for bag in bags:
        if is_complete(bag):
            continue
        try:
            counts = recover_bag(bag)
            print(printable(f"recovered {bag}: " + ", ".join(f"{t} {n}" for t, n in counts.items())))
        except BagError as e:
            failed += 1
            print(report_line("FAILED", bag, e))
    return SOME_FAILED if failed else 0
