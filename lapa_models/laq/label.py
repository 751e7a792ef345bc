"""Label every transition of a dataset with its latent action tokens, for the latent pretraining stage.

    lapa laq label --checkpoint runs/laq_tiny/final --data data/sim/mt10_64
    lapa laq label --checkpoint runs/laq_tiny/final --data videos/ --name laq_tiny
    torchrun --nproc-per-node 8 -m lapa_models laq label --checkpoint ... --data big/   # split over processes

Output, next to the data (the format the latent pretraining stage reads)::

    <data>/latents/<name>/info.json             {"laq_checkpoint", "config", "frame_gap", "codebook_size",
                                                 "num_tokens", "config_sha256"}
    <data>/latents/<name>/episode_XXXXXX.npy    int16 (N, T) for an episode of N frames: row i holds the
                                                tokens of frame i -> frame i+k; rows i >= N-k are -1

Deterministic: eval mode, nearest codes, no noise. Episodes are decoded one at a time (in parallel
DataLoader workers, --num-workers) and labelled in batches of pairs, so memory does not grow with the
dataset; under ``accelerate launch`` / ``torchrun`` each process labels its share of the episodes. The
label set is written beside the final one and swapped in at the end, so a reader never sees half of it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from lapa_models.data.episodes import EpisodeDataset, VideoFolder
from lapa_models.data.frames import EpisodeFrames, refused, resize_frame

from lapa_models.commands import report_input_errors
from .data import add_allow_squash_argument, check_frames
from .modeling import LAQModel

NO_TRANSITION = -1
INFO_NAME = "info.json"


class LatentLabelError(ValueError):
    """Latent labels that are missing, corrupt or inconsistent with their dataset (the message says which)."""


def latents_dir(dataset_root: Union[str, Path], name: str = "laq") -> Path:
    return Path(dataset_root) / "latents" / name


def episode_file(directory: Path, episode_index: int) -> Path:
    return directory / f"episode_{int(episode_index):06d}.npy"


class _EpisodeFrames:
    """Item k: (k, the frames of episode ``positions[k]`` at the model's size, or None, the error)."""

    def __init__(self, source, positions, size):
        self.source, self.positions, self.size = source, list(positions), tuple(size)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        from lapa_models.data.errors import EpisodeFormatError

        try:
            frames = [resize_frame(f, self.size) for f, _ in self.source.iter_frames(self.positions[k])]
        except EpisodeFormatError as e:
            return k, None, str(e)
        if not frames:
            return k, None, "video has no decodable frames"
        return k, np.stack(frames), None


def _one(item):
    return item


@torch.no_grad()
def label_dataset(checkpoint: Union[str, Path], data: Union[str, Path], name: str = "laq",
                  frame_gap: Optional[int] = None, batch_size: int = 256,
                  device: Optional[Union[str, torch.device]] = None, progress: bool = True,
                  num_workers: int = 0, allow_squash: bool = False) -> Dict[str, Any]:
    """Write ``<data>/latents/<name>/``; returns a summary (pairs labelled, code usage, seconds).

    Several processes (``torchrun`` / ``accelerate launch``) split the episodes; every one returns the same
    summary."""
    from accelerate.utils import reduce
    from tqdm import tqdm

    from lapa_models.training.run import process_state

    from .quantizer import usage_and_perplexity

    state = process_state()
    rank, processes = state.process_index, state.num_processes
    model = LAQModel.from_pretrained(checkpoint, device=device if device is not None else state.device).eval()
    config = model.config
    gap = int(frame_gap or config.frame_gap)
    if gap < 1:
        raise ValueError(f"frame gap must be >= 1, got {gap}")
    source = check_frames(data, config, model=f"checkpoint {checkpoint}", allow_squash=allow_squash)
    index = EpisodeFrames(source, tables=False) if not isinstance(source, VideoFolder) else None
    episode_ids = index.episode_ids if index is not None else list(range(len(source)))
    expected = index.lengths if index is not None else None
    mine = list(range(rank, len(source), processes))

    final = latents_dir(source.root, name)
    tmp = final.with_name(final.name + ".tmp")
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    state.wait_for_everyone()

    loader = torch.utils.data.DataLoader(_EpisodeFrames(source, mine, config.image_size), batch_size=None,
                                         num_workers=num_workers, collate_fn=_one)
    counts = np.zeros(config.codebook_size, dtype=np.int64)
    pairs_done, bad = 0, []
    # Episodes waiting for their pairs to be encoded: [position, frames, labels, next pair]. Batches span
    # episodes (short clips would make small batches), so at most one batch of episodes waits in memory.
    pending: List[list] = []
    start = time.perf_counter()
    bar = tqdm(total=len(mine), desc=f"label {name}", unit="ep", disable=not (progress and state.is_main_process),
               file=sys.stderr)

    def encode(final: bool) -> None:
        nonlocal pairs_done, counts
        while pending and (final or sum(len(e[2]) - gap - e[3] for e in pending) >= batch_size):
            chunk_t, chunk_tk, where = [], [], []
            room = batch_size
            for entry in pending:
                position, frames, labels, done = entry
                take = min(room, max(0, len(frames) - gap) - done)
                if take > 0:
                    chunk_t.append(frames[done:done + take])
                    chunk_tk.append(frames[done + gap:done + gap + take])
                    where.append((entry, done, take))
                    room -= take
                if room == 0:
                    break
            if where:
                tokens = model.encode(np.concatenate(chunk_t), np.concatenate(chunk_tk)).cpu().numpy()
                counts += np.bincount(tokens.reshape(-1), minlength=config.codebook_size)
                offset = 0
                for entry, done, take in where:
                    entry[2][done:done + take] = tokens[offset:offset + take]
                    entry[3] = done + take
                    offset += take
                pairs_done += offset
            while pending and pending[0][3] >= max(0, len(pending[0][1]) - gap):
                position, _, labels, _ = pending.pop(0)
                np.save(episode_file(tmp, episode_ids[position]), labels)
                bar.update()

    for k, frames, error in loader:
        position = mine[k]
        n = None if frames is None else len(frames)
        if error is None and expected is not None and n < int(expected[position]):
            error = f"video has {n} frames, index says {int(expected[position])}"
        if error is not None:
            bad.append(f"episode {episode_ids[position]}: {error.removeprefix(f'{source.root}: ')}")
            bar.update()
            continue
        if expected is not None:
            frames = frames[:int(expected[position])]
        labels = np.full((len(frames), config.num_latent_tokens), NO_TRANSITION, dtype=np.int16)
        pending.append([position, frames, labels, 0])
        encode(final=False)
    encode(final=True)
    bar.close()
    seconds = time.perf_counter() - start

    totals = torch.tensor([*counts.tolist(), pairs_done, len(bad)], dtype=torch.float64, device=state.device)
    if processes > 1:
        totals = reduce(totals, reduction="sum")
    totals = totals.cpu().numpy().astype(np.int64)
    counts, pairs_done, bad_count = totals[:-2], int(totals[-2]), int(totals[-1])
    if bad_count:
        state.wait_for_everyone()
        if state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise refused(source, bad or [f"{bad_count} episodes labelled by other processes"], len(source))
    if pairs_done == 0:
        state.wait_for_everyone()
        raise ValueError(f"{source.root}: no frame pairs {gap} frames apart; use a smaller frame gap or longer "
                         "episodes")

    state.wait_for_everyone()
    if state.is_main_process:
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
    state.wait_for_everyone()

    used, perplexity = usage_and_perplexity(counts)
    return {"latents": str(final), "episodes": len(source), "pairs": pairs_done, "frame_gap": gap,
            "codes_used": used, "perplexity": round(perplexity, 4), "seconds": round(seconds, 2),
            "pairs_per_s": round(pairs_done / max(seconds, 1e-9), 1), "processes": processes}


def load_latents(dataset_root: Union[str, Path], name: str = "laq", check_dataset: bool = True
                 ) -> Tuple[Dict[str, Any], Dict[int, np.ndarray]]:
    """(info, {episode_index: int16 (N, T) tokens}) of a label set written by ``label_dataset``.

    With ``check_dataset`` (and an episode dataset at ``dataset_root``), every episode of the dataset
    must have labels with one row per frame."""
    directory = latents_dir(dataset_root, name)
    if not directory.is_dir():
        raise LatentLabelError(f"{directory}: no latent labels named '{name}' (write them with "
                               f"lapa laq label --checkpoint RUN/final --data {dataset_root})")
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
    p.add_argument("--device", default=None, help="default: this process's accelerator device (GPU if any)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding episodes in parallel")
    add_allow_squash_argument(p)
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    return report_input_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = label_dataset(args.checkpoint, args.data, args.name, args.frame_gap, args.batch_size, args.device,
                            progress=not args.no_progress, num_workers=args.num_workers,
                            allow_squash=args.allow_squash)
    from lapa_models.training.run import process_state

    if process_state().is_main_process:
        print(json.dumps(summary))
    return 0
