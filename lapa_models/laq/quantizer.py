"""NSVQ: noise-substitution vector quantization.

M. H. Vali and T. Bäckström, "NSVQ: Noise Substitution in Vector Quantization for Machine Learning",
IEEE Access 10, 2022 (arXiv:2202.08181).

Training does not pass the nearest code forward with a straight-through gradient. It substitutes the
quantization error by noise of the same norm::

    q = x + ||x - c*|| * v / ||v||,    v ~ N(0, I),   c* = argmin_c ||x - c||

so the decoder sees a vector exactly as far from x as the chosen code, the encoder gets the gradient
of x directly, and the codebook gets a gradient through ||x - c*|| (no commitment loss, no EMA). At
inference ``q = c*``: deterministic.

Codes that stop being chosen are replaced on a schedule (LAPA: every 10 steps before step 100, every
100 before 1k, every 500 before 5k; see ``replacement_due``) by perturbed copies of recent inputs,
picked k-means++ style among the inputs the living codes represent worst.
Usage is counted by the caller from ``indices`` (``code_counts``) so that the module holds no hidden
training state and behaves the same under data parallelism.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class NSVQ(nn.Module):
    """Vector quantizer of (..., code_dim) vectors against ``codebook_size`` codes."""

    def __init__(self, codebook_size: int, code_dim: int, eps: float = 1e-12):
        super().__init__()
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.eps = eps
        # Small uniform init as the NSVQ reference code; training re-initializes it from data at step 0.
        self.codebook = nn.Parameter(torch.empty(codebook_size, code_dim).uniform_(-1 / codebook_size,
                                                                                    1 / codebook_size))

    def nearest_code(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (Euclidean) for each vector of x (..., D) -> (...)."""
        flat = x.reshape(-1, self.code_dim)
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None, :])
        return distances.argmin(dim=1).reshape(x.shape[:-1])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(quantized (..., D), indices (...)). Noise substitution in training mode, nearest code in eval."""
        # Distances and noise norms in float32 even under bf16 autocast: argmin over close codes is fragile.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            indices = self.nearest_code(x)
            hard = F.embedding(indices, self.codebook)
            if not self.training:
                return hard, indices
            noise = torch.randn_like(x)
            error_norm = (x - hard).norm(dim=-1, keepdim=True)
            noise_norm = noise.norm(dim=-1, keepdim=True)
            return x + error_norm / (noise_norm + self.eps) * noise, indices

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of given indices (...) -> (..., D): to decode labelled latent actions."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"latent token indices must be in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return F.embedding(indices, self.codebook)

    # ------------------------------------------------------------------ codebook health
    @torch.no_grad()
    def initialize_from(self, vectors: torch.Tensor, generator: Optional[torch.Generator] = None) -> None:
        """Seed every code on an input vector, k-means++ style (data-dependent init: no code starts dead)."""
        self._seed_codes(torch.arange(self.codebook_size), vectors, generator)

    @torch.no_grad()
    def replace_unused_codes(self, counts: torch.Tensor, candidates: torch.Tensor, dead_share: float = 0.03,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Replace each code that got less than ``dead_share`` of a fair share (1/C) of the ``counts``
        assignments by a perturbed copy of a candidate vector (recent encoder outputs), drawn with
        probability proportional to its squared distance to the nearest remaining code (k-means++).

        Returns the indices of the replaced codes (empty when all codes are alive)."""
        counts = counts.detach().float().cpu()
        total = counts.sum()
        if total <= 0:
            return torch.zeros(0, dtype=torch.long)
        dead = torch.nonzero(counts < dead_share * total / self.codebook_size).flatten()
        if len(dead):
            self._seed_codes(dead, candidates, generator)
        return dead

    def _seed_codes(self, indices: torch.Tensor, candidates: torch.Tensor,
                    generator: Optional[torch.Generator]) -> None:
        flat = candidates.detach().reshape(-1, self.code_dim).float()
        alive = torch.ones(self.codebook_size, dtype=torch.bool)
        alive[indices] = False
        alive = alive.to(self.codebook.device)
        # Each new code lands where the codes so far represent the candidates worst (k-means++ seeding).
        nearest = (torch.cdist(flat, self.codebook[alive].float()).min(dim=1).values.pow(2) if alive.any()
                   else torch.ones(len(flat), device=flat.device))
        for index in indices.tolist():
            weights = nearest.double().cpu() + 1e-12
            pick = int(torch.multinomial(weights / weights.sum(), 1, generator=generator))
            chosen = flat[pick:pick + 1]
            self.codebook[index] = (chosen + self._jitter(chosen, generator))[0]
            nearest = torch.minimum(nearest, (flat - self.codebook[index]).pow(2).sum(1))

    def _jitter(self, vectors: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Noise at 1% of the vectors' typical norm: copies of one vector must still differ."""
        scale = 0.01 * vectors.norm(dim=-1).mean().clamp_min(1e-6) / math.sqrt(self.code_dim)
        noise = torch.randn(vectors.shape, generator=generator, device="cpu").to(vectors.device)
        return noise * scale


# ---------------------------------------------------------------------------- usage statistics
def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How many times each code was chosen (int64 (C,))."""
    return torch.bincount(indices.detach().reshape(-1).long().cpu(), minlength=codebook_size)


def usage_and_perplexity(counts) -> Tuple[int, float]:
    """(codes used at least once, perplexity = exp(entropy) of the code distribution; C when uniform)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    total = counts.sum()
    if total <= 0:
        return 0, 0.0
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())


def replacement_due(step: int) -> bool:
    """The LAPA replacement schedule, after the step-th optimizer step (1-based): every 10 steps before
    step 100, every 100 before 1k, every 500 before 5k, then every 1000 (the paper stops at 5k; a late
    check is cheap and only acts on codes that really died)."""
    if step <= 0:
        return False
    if step < 100:
        return step % 10 == 0
    if step < 1000:
        return step % 100 == 0
    if step < 5000:
        return step % 500 == 0
    return step % 1000 == 0
