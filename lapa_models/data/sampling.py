"""The order in which training reads samples: batch samplers that are pure functions of (seed, position).

Batch ``b`` of a run is computed from the seed and ``b`` alone, never from a random state carried from
batch to batch. So:

- the batches do not depend on the number of DataLoader workers (they fetch, the sampler decides);
- a multi-process run sees the same *global* batches as one process with the same global batch size:
  these samplers yield global batches and ``accelerate`` (``split_batches=True``) hands each process its
  slice, so every process reads only its own share of the data;
- resuming at optimizer step s starts the sampler at batch ``s x accumulation``: the continuation is
  the one the uninterrupted run would have read, with nothing to save but the position.

``RandomBatches`` draws with replacement (LAQ's frame pairs, as many as the run needs);
``ShuffledBatches`` walks epochs, each a fresh permutation of the samples (the policy's samples), and
drops each epoch's last incomplete batch.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np


class _Batches:
    """Global batches ``start .. stop-1`` (a finite run of them: DataLoader and accelerate want a length)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int = 0, stop: Optional[int] = None,
                 stream: int = 0):
        if num_items < 1:
            raise ValueError("no samples to draw batches from")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.seed, self.stream = int(seed), int(stream)
        self.start = int(start)
        self.stop = int(stop) if stop is not None else None
        self.drop_last = True

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless batch sampler has no length")
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[np.ndarray]:
        b = self.start
        while self.stop is None or b < self.stop:
            yield self.batch(b)
            b += 1

    def batch(self, b: int) -> np.ndarray:
        raise NotImplementedError


class RandomBatches(_Batches):
    """Batch b: ``batch_size`` item indices drawn uniformly with replacement by ``default_rng([seed, stream, b])``.

    With ``shift > 0`` each row also carries a random translation (dy, dx) in [0, 2 * shift] for that
    sample: batches are int64 (batch_size, 3) rows (item, dy, dx) instead of (batch_size,) items."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int = 0, stop: Optional[int] = None,
                 stream: int = 0, shift: int = 0):
        super().__init__(num_items, batch_size, seed, start, stop, stream)
        self.shift = int(shift)

    def batch(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stream, b])
        items = rng.integers(0, self.num_items, size=self.batch_size)
        if self.shift <= 0:
            return items.astype(np.int64)
        offsets = rng.integers(0, 2 * self.shift + 1, size=(self.batch_size, 2))
        return np.concatenate([items[:, None], offsets], axis=1).astype(np.int64)


class ShuffledBatches(_Batches):
    """Epochs of ``len // batch_size`` batches; epoch e is the permutation ``default_rng([seed, stream, e])``."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int = 0, stop: Optional[int] = None,
                 stream: int = 0):
        super().__init__(num_items, batch_size, seed, start, stop, stream)
        if self.batch_size > self.num_items:
            raise ValueError(f"batch of {self.batch_size} samples but only {self.num_items} samples")
        self.batches_per_epoch = self.num_items // self.batch_size
        self._epoch, self._order = -1, None

    def epoch_of(self, b: int) -> int:
        return b // self.batches_per_epoch

    def batch(self, b: int) -> np.ndarray:
        epoch, k = divmod(b, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.num_items)
        return self._order[k * self.batch_size:(k + 1) * self.batch_size].astype(np.int64)
