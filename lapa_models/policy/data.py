"""Training samples for stages 2 and 3, read from the frame stores of one or more datasets (in RAM or
streamed from shards: lapa_models.data.frames; DataLoader workers call ``__getitems__``).

Stage 2 (latent pretraining): (image_t, instruction, LAQ tokens of the transition t -> t+k).
Stage 3 (action finetuning):  (image_t, instruction, state_t, actions t .. t+H-1).

Action chunks near the end of an episode run past its last frame: the missing steps repeat the
episode's last action and are flagged in ``action_is_pad`` (True = padding), so the loss can skip them
and a chunk always has H rows.

LAQ labels (written by the LAQ stage) live in ``<dataset>/latents/<name>/``: ``info.json`` with
{"laq_checkpoint", "config", "frame_gap": k, "codebook_size": C, "num_tokens": T, "config_sha256"} and
one int16 (N, T) array per episode, ``episode_XXXXXX.npy``, whose row i holds the tokens of frame i ->
i+k; rows without a successor frame (i >= N-k) are -1 and are skipped.

Batches come from ``__getitems__`` (a whole batch at once, no per-sample Python work) and are dicts
of tensors; images stay uint8 (B, H, W, 3) until the model's preprocessing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lapa_models.data.errors import EpisodeFormatError
from lapa_models.data.frames import EpisodeFrames, open_frames


# ============================================================================ LAQ labels
@dataclasses.dataclass
class LatentLabels:
    """LAQ labels of one dataset: its info.json and one (N, T) int16 array per episode_index."""

    info: Dict
    episodes: Dict[int, np.ndarray]

    @property
    def num_tokens(self) -> int:
        return int(self.info["num_tokens"])

    @property
    def codebook_size(self) -> int:
        return int(self.info["codebook_size"])

    @property
    def frame_gap(self) -> int:
        return int(self.info["frame_gap"])


def load_latent_labels(dataset_root: str | Path, name: str = "laq") -> LatentLabels:
    """LAQ labels through the LAQ stage's own reader (lapa_models.laq.label.load_latents), which
    checks every file; its errors are re-raised as EpisodeFormatError naming the file."""
    from lapa_models.laq.label import LatentLabelError, load_latents

    try:
        info, episodes = load_latents(dataset_root, name=name)
    except LatentLabelError as e:
        raise EpisodeFormatError(str(e)) from e
    return LatentLabels(info=info, episodes=episodes)


def check_latents_fit(labels: LatentLabels, config, where: str) -> None:
    """The labels' (tokens, codebook) must be what a policy config's latent head predicts (its tokens are
    ``latent_horizon`` latent actions of the labels' T tokens each)."""
    horizon = config.latent_horizon
    own = (config.latent_num_tokens, config.latent_codebook_size)
    if (labels.num_tokens * horizon, labels.codebook_size) != own:
        per_step = f" ({horizon} latent actions)" if horizon > 1 else ""
        raise ValueError(f"{where}: predicts {own[0]} tokens{per_step} over {own[1]} codes, labels have "
                         f"{labels.num_tokens} per latent action over {labels.codebook_size}")


def align_latents(store: EpisodeFrames, labels: LatentLabels) -> np.ndarray:
    """(F, T) int16 tokens aligned with the store's frames (-1 where a frame has no label)."""
    out = np.full((len(store), labels.num_tokens), -1, dtype=np.int16)
    root = getattr(store.source, "root", "?")
    for e, episode_index in enumerate(store.episode_ids):
        tokens = labels.episodes.get(int(episode_index))
        if tokens is None:
            raise EpisodeFormatError(f"{root}: episode {episode_index} has no LAQ labels "
                                     f"(latents/.../episode_{episode_index:06d}.npy)")
        n = int(store.lengths[e])
        if len(tokens) != n:
            raise EpisodeFormatError(f"{root}: LAQ labels of episode {episode_index} have {len(tokens)} rows, "
                                     f"the episode has {n} frames")
        out[store.starts[e]: store.starts[e] + n] = tokens
    return out


def stack_latents(store: EpisodeFrames, tokens: np.ndarray, horizon: int, frame_gap: int) -> np.ndarray:
    """(F, T) aligned tokens -> (F, horizon * T): frame i's row holds the latent actions of i -> i+k,
    i+k -> i+2k, ... (k = the labels' frame gap), the latent counterpart of an action chunk. Steps past
    the episode's last label are -1 (the loss ignores them); horizon 1 returns ``tokens`` unchanged."""
    if horizon < 1 or frame_gap < 1:
        raise ValueError(f"latent horizon and frame gap must be >= 1, got {horizon} and {frame_gap}")
    if horizon == 1:
        return tokens
    frames = np.arange(len(tokens))
    last = (store.starts + store.lengths - 1)[store.episode_of(frames)]
    steps = []
    for j in range(horizon):
        at = frames + j * frame_gap
        inside = at <= last
        step = np.full_like(tokens, -1)
        step[inside] = tokens[at[inside]]
        steps.append(step)
    return np.concatenate(steps, axis=1)


# ============================================================================ episodes and instructions
def split_episodes(store: EpisodeFrames, val_fraction: float, seed: int = 0,
                   success_only: bool = False) -> Tuple[List[int], List[int]]:
    """(train, validation) episode positions in ``store``; at least one of each when there are two or more."""
    positions = [e for e in range(store.num_episodes) if not success_only or store.success[e] is not False]
    if not positions:
        raise ValueError(f"{getattr(store.source, 'root', '?')}: no episodes left "
                         f"{'(none is marked successful)' if success_only else ''}")
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(positions))
    n_val = int(round(len(order) * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and len(order) >= 2:
        n_val = min(max(n_val, 1), len(order) - 1)
    return sorted(int(e) for e in order[n_val:]), sorted(int(e) for e in order[:n_val])


class InstructionTable:
    """The distinct instructions of some stores; ``index[s][e]``: instruction id of episode e of store s."""

    def __init__(self, stores: Sequence[EpisodeFrames]):
        self.texts: List[str] = []
        ids: Dict[str, int] = {}
        self.index: List[np.ndarray] = []
        for store in stores:
            row = []
            for text in store.instructions:
                text = text or ""
                if text not in ids:
                    ids[text] = len(self.texts)
                    self.texts.append(text)
                row.append(ids[text])
            self.index.append(np.asarray(row, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.texts)


# ============================================================================ samples
class _FrameSamples(torch.utils.data.Dataset):
    """Common part: a list of global frame indices into one store, and their instruction ids."""

    def __init__(self, store: EpisodeFrames, frames: np.ndarray, instruction_ids: np.ndarray):
        self.store = store
        self.frames = np.asarray(frames, dtype=np.int64)
        self.frame_episode = store.episode_of(self.frames)
        self.instruction_ids = instruction_ids

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def _common(self, idx: np.ndarray) -> Dict[str, torch.Tensor]:
        images = self.store.read(self.frames[idx])
        return {"image": torch.from_numpy(images),
                "instruction_index": torch.from_numpy(self.instruction_ids[self.frame_episode[idx]])}


class LatentSamples(_FrameSamples):
    """(image_t, instruction, LAQ tokens of t -> t+k [, t+k -> t+2k, ...]) for every frame of the chosen
    episodes whose first latent action is labelled (later ones, past the episode's end, are -1)."""

    def __init__(self, store: EpisodeFrames, latents: np.ndarray, episodes: Sequence[int],
                 instruction_ids: np.ndarray):
        chosen = np.zeros(store.num_episodes, bool)
        chosen[list(episodes)] = True
        labelled = (latents[:, 0] >= 0) & chosen[store.episode_of(np.arange(len(store)))]
        super().__init__(store, np.flatnonzero(labelled), instruction_ids)
        self.latents = latents

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        batch = self._common(idx)
        batch["latent_tokens"] = torch.from_numpy(self.latents[self.frames[idx]].astype(np.int64))
        return batch


class ActionChunkSamples(_FrameSamples):
    """(image_t, instruction, state_t, actions t .. t+H-1 padded with the last action, pad mask).

    ``latent_input`` (F, T) tokens aligned with the store's frames (stack_latents): each sample also
    carries its frame's row as ``latent_input``, the latent actions that actually followed, which an
    action head reading latent actions is given instead of its own prediction (labelled play:
    lapa policy finetune --play-data)."""

    def __init__(self, store: EpisodeFrames, chunk_size: int, episodes: Sequence[int],
                 instruction_ids: np.ndarray, use_state: bool = True, latent_input: Optional[np.ndarray] = None):
        if store.actions is None:
            raise EpisodeFormatError(f"{getattr(store.source, 'root', '?')}: dataset has no actions to finetune on")
        frames = np.concatenate([np.arange(store.starts[e], store.starts[e] + store.lengths[e]) for e in episodes])
        super().__init__(store, frames, instruction_ids)
        self.chunk_size = chunk_size
        self.use_state = use_state and store.states is not None
        ends = store.starts + store.lengths - 1                    # last frame of each episode
        offsets = np.arange(chunk_size)
        steps = self.frames[:, None] + offsets[None]                # (N, H)
        last = ends[self.frame_episode][:, None]
        self.chunk_index = np.minimum(steps, last)                   # repeats the last action past the end
        self.chunk_is_pad = steps > last
        if latent_input is not None and len(latent_input) != len(store):
            raise ValueError(f"latent_input has {len(latent_input)} rows for {len(store)} frames")
        self.latent_input = latent_input

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        batch = self._common(idx)
        batch["actions"] = torch.from_numpy(self.store.actions[self.chunk_index[idx]])
        batch["action_is_pad"] = torch.from_numpy(self.chunk_is_pad[idx])
        if self.use_state:
            batch["state"] = torch.from_numpy(np.asarray(self.store.states[self.frames[idx]], np.float32))
        if self.latent_input is not None:
            batch["latent_input"] = torch.from_numpy(self.latent_input[self.frames[idx]].astype(np.int64))
        return batch


class ConcatSamples(torch.utils.data.Dataset):
    """Several sample sets (one per dataset) as one; batches may mix them."""

    def __init__(self, parts: Sequence[_FrameSamples]):
        self.parts = [p for p in parts if len(p)]
        if not self.parts:
            raise ValueError("no training samples (episodes too short for the frame gap, or none selected)")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        shapes = {p.store.frame_shape for p in self.parts}
        if len(shapes) > 1:
            raise ValueError(f"datasets have different image sizes {sorted(shapes)}: give --frame-size H W")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        part_of = np.searchsorted(self.offsets, idx, side="right") - 1
        pieces, order = [], []
        for p in np.unique(part_of):
            sel = np.flatnonzero(part_of == p)
            pieces.append(self.parts[p].__getitems__(idx[sel] - self.offsets[p]))
            order.append(sel)
        if len(pieces) == 1:
            return pieces[0]
        inverse = np.argsort(np.concatenate(order))
        keys = set.intersection(*(set(piece) for piece in pieces))
        return {k: torch.cat([piece[k] for piece in pieces])[inverse] for k in keys}


def identity_collate(batch):
    """DataLoader collate for datasets whose ``__getitems__`` already returns a batch."""
    return batch


def open_stores(paths: Sequence[str | Path], frame_size: Optional[Tuple[int, int]] = None,
                progress: bool = True, mode: str = "memory", **options) -> List[EpisodeFrames]:
    """Frame stores of datasets (``mode`` and ``options``: lapa_models.data.frames.open_frames)."""
    return [open_frames(p, image_size=frame_size, mode=mode, progress=progress, **options) for p in paths]
