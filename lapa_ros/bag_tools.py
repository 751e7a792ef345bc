"""`lapa bags info` and `lapa bags recover`: look into episode bags, complete interrupted ones."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .bags import BagError, EpisodeInfo, bag_topics, find_bags, is_complete, recover_bag


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a bag or a folder of bags")


def info_main(args: argparse.Namespace) -> int:
    out = []
    for bag in find_bags(Path(args.path)):
        entry = {"bag": str(bag), "complete": is_complete(bag), **dataclasses.asdict(EpisodeInfo.load(bag))}
        if entry["complete"]:
            try:
                entry["topics"] = {t: {"type": ty, "messages": n} for t, (ty, n) in bag_topics(bag).items()}
            except BagError as e:
                entry["error"] = str(e)
        out.append(entry)
    print(json.dumps(out, indent=2))
    return 0


def add_recover_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a bag or a folder of bags; complete bags are left alone")


def recover_main(args: argparse.Namespace) -> int:
    failed = 0
    for bag in find_bags(Path(args.path)):
        if is_complete(bag):
            continue
        try:
            counts = recover_bag(bag)
            print(f"recovered {bag}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        except BagError as e:
            failed += 1
            print(f"FAILED {e}")
    return 1 if failed else 0
