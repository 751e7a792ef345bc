"""Label every transition of a dataset with its latent action tokens, for the latent pretraining stage.

    python -m lapa_models.laq.label --checkpoint runs/laq_tiny/final --data data/sim/mt10_64
    python -m lapa_models.laq.label --checkpoint runs/laq_tiny/final --data videos/ --name laq_tiny

Output, next to the data (the format the latent pretraining stage reads)::

    <data>/latents/<name>/info.json             {"laq_checkpoint", "config", "frame_gap", "codebook_size",
                                                 "num_tokens", "config_sha256"}
    <data>/latents/<name>/episode_XXXXXX.npy    int16 (N, T) for an episode of N frames: row i holds the
                                                tokens of frame i -> frame i+k; rows i >= N-k are -1

Deterministic: eval mode, nearest codes, no noise. The label set is written beside the final one and
swapped in at the end, so a reader never sees half of it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from lapa_models.data.episodes import EpisodeDataset, open_episodes

from lapa_models.commands import report_input_errors
from .data import frame_pairs, iter_pair_batches, load_frames
from .modeling import LAQModel

NO_TRANSITION = -1
INFO_NAME = "info.json"


class LatentLabelError(ValueError):
    """Latent labels that are missing, corrupt or inconsistent with their dataset (the message says which)."""


def latents_dir(dataset_root: Union[str, Path], name: str = "laq") -> Path:
    return Path(dataset_root) / "latents" / name


def episode_file(directory: Path, episode_index: int) -> Path:
    return directory / f"episode_{int(episode_index):06d}.npy"


@torch.no_grad()
def label_dataset(checkpoint: Union[str, Path], data: Union[str, Path], name: str = "laq",
                  frame_gap: Optional[int] = None, batch_size: int = 256, device: Union[str, torch.device] = "cpu",
                  progress: bool = True) -> Dict[str, Any]:
    """Write ``<data>/latents/<name>/``; returns a summary (pairs labelled, code usage, seconds)."""
    from tqdm import tqdm

    from .quantizer import usage_and_perplexity

    model = LAQModel.from_pretrained(checkpoint, device=device).eval()
    config = model.config
    gap = int(frame_gap or config.frame_gap)
    source = open_episodes(data)
    store = load_frames(source, config, progress=progress)
    pairs = frame_pairs(store, gap)
    episode_of_pair = store.episode_of(pairs[:, 0])
    tokens = np.empty((len(pairs), config.num_latent_tokens), dtype=np.int16)
    start = time.perf_counter()
    bar = tqdm(total=len(pairs), desc=f"label {name}", unit="pair", disable=not progress, file=sys.stderr)
    done = 0
    for chunk, frames_t, frames_tk in iter_pair_batches(store, pairs, batch_size):
        tokens[done:done + len(chunk)] = model.encode(frames_t, frames_tk).cpu().numpy()
        done += len(chunk)
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start

    final = latents_dir(source.root, name)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for e in range(store.num_episodes):
        labels = np.full((int(store.lengths[e]), config.num_latent_tokens), NO_TRANSITION, dtype=np.int16)
        mine = episode_of_pair == e
        labels[pairs[mine, 0] - store.starts[e]] = tokens[mine]
        np.save(episode_file(tmp, store.episode_ids[e]), labels)
    info = {"laq_checkpoint": str(Path(checkpoint).resolve()), "config": config.to_dict(), "frame_gap": gap,
            "codebook_size": config.codebook_size, "num_tokens": config.num_latent_tokens,
            "config_sha256": config.sha256()}
    (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)

    used, perplexity = usage_and_perplexity(np.bincount(tokens.reshape(-1), minlength=config.codebook_size))
    return {"latents": str(final), "episodes": store.num_episodes, "pairs": int(len(pairs)), "frame_gap": gap,
            "codes_used": used, "perplexity": round(perplexity, 4), "seconds": round(seconds, 2),
            "pairs_per_s": round(len(pairs) / max(seconds, 1e-9), 1)}


def load_latents(dataset_root: Union[str, Path], name: str = "laq", check_dataset: bool = True
                 ) -> Tuple[Dict[str, Any], Dict[int, np.ndarray]]:
    """(info, {episode_index: int16 (N, T) tokens}) of a label set written by ``label_dataset``.

    With ``check_dataset`` (and an episode dataset at ``dataset_root``), every episode of the dataset
    must have labels with one row per frame."""
    directory = latents_dir(dataset_root, name)
    if not directory.is_dir():
        raise LatentLabelError(f"{directory}: no latent labels named '{name}' (write them with "
                               f"python -m lapa_models.laq.label --checkpoint RUN/final --data {dataset_root})")
    info_path = directory / INFO_NAME
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError as e:
        raise LatentLabelError(f"{info_path}: missing (labelling did not finish?)") from e
    except json.JSONDecodeError as e:
        raise LatentLabelError(f"{info_path}: corrupt JSON ({e})") from e
    required = ("laq_checkpoint", "config", "frame_gap", "codebook_size", "num_tokens", "config_sha256")
    missing = [k for k in required if k not in info]
    if missing:
        raise LatentLabelError(f"{info_path}: missing fields {missing}")
    num_tokens, codebook_size = int(info["num_tokens"]), int(info["codebook_size"])
    labels: Dict[int, np.ndarray] = {}
    for path in sorted(directory.glob("episode_*.npy")):
        try:
            index = int(path.stem.split("_", 1)[1])
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise LatentLabelError(f"{path}: unreadable latent labels ({e})") from e
        if array.dtype != np.int16 or array.ndim != 2 or array.shape[1] != num_tokens:
            raise LatentLabelError(f"{path}: expected int16 (N, {num_tokens}), got {array.dtype} {array.shape}")
        if array.size and (array.min() < NO_TRANSITION or array.max() >= codebook_size):
            raise LatentLabelError(f"{path}: tokens outside [-1, {codebook_size})")
        labels[index] = array
    if check_dataset and (Path(dataset_root) / "meta" / "info.json").is_file():
        dataset = EpisodeDataset(dataset_root)
        for entry in dataset.entries:
            index, length = int(entry["episode_index"]), int(entry["length"])
            if index not in labels:
                raise LatentLabelError(f"{episode_file(directory, index)}: missing (episode {index} is in the "
                                       "dataset but was not labelled; label the dataset again)")
            if len(labels[index]) != length:
                raise LatentLabelError(f"{episode_file(directory, index)}: {len(labels[index])} rows but episode "
                                       f"{index} has {length} frames; label the dataset again")
    return info, labels


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="LAQ checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--data", required=True, help="episode dataset directory or folder of videos to label")
    p.add_argument("--name", default="laq", help="label set name: <data>/latents/<name>/")
    p.add_argument("--frame-gap", type=int, default=None, help="default: the gap the model was trained with")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    return report_input_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = label_dataset(args.checkpoint, args.data, args.name, args.frame_gap, args.batch_size, args.device,
                            progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
