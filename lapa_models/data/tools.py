"""`lapa data info DIR`: what an episode dataset, a LeRobotDataset v3 or a folder of videos holds, as JSON."""
from __future__ import annotations

import argparse
import json

from .episodes import EpisodeDataset, open_episodes, summarize


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="episode dataset directory or folder of videos")


def main(args: argparse.Namespace) -> int:
    src = open_episodes(args.path)
    if isinstance(src, EpisodeDataset):
        summary = summarize(src)
        lerobot = src.info.extra.get("lerobot") if type(src) is not EpisodeDataset else None
        summary["format"] = f"LeRobotDataset {lerobot['codebase_version']}" if lerobot else "lapa-episodes"
        print(json.dumps(summary, indent=2))
    else:
        print(json.dumps({"root": str(src.root), "videos": len(src), "files": [str(f) for f in src.files[:20]]},
                         indent=2))
    return 0
