"""Figures of LAQ runs (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(metrics: List[dict], path: Union[str, Path], codebook_size: int) -> None:
    """Loss vs the copy-frame baseline, codes in use and perplexity against the step."""
    plt = _pyplot()
    steps = [m["step"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(steps, [m["loss"] for m in metrics], label="train loss (noise-substituted latents)")
    ax.plot(steps, [m["copy_mse"] for m in metrics], "--", label="copy frame t (train pairs)")
    val = [(m["step"], m["val_mse"], m["val_copy_mse"]) for m in metrics if m.get("val_mse") is not None]
    if val:
        ax.plot([v[0] for v in val], [v[1] for v in val], label="held-out MSE (nearest codes)")
        ax.plot([v[0] for v in val], [v[2] for v in val], ":", label="copy frame t (held-out)")
    if min(min(m["loss"], m["copy_mse"]) for m in metrics) > 0:  # a static video has zero error
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.set_title("reconstruction of frame t+k")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(steps, [m["codes_used"] for m in metrics], label="codes used in window")
    ax.axhline(codebook_size, color="gray", lw=0.8, label=f"codebook ({codebook_size})")
    ax.axhline(codebook_size / 2, color="red", lw=0.8, ls="--", label="collapse warning")
    replaced = [(m["step"], m["replaced"]) for m in metrics if m.get("replaced")]
    if replaced:
        ax.scatter([r[0] for r in replaced], [r[1] for r in replaced], s=12, c="orange", label="codes replaced")
    ax.set_ylim(0, codebook_size + 1)
    ax.set_xlabel("step")
    ax.set_title("code usage")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(steps, [m["perplexity"] for m in metrics])
    ax.axhline(codebook_size, color="gray", lw=0.8)
    ax.set_ylim(0, codebook_size + 0.5)
    ax.set_xlabel("step")
    ax.set_title(f"perplexity (max {codebook_size})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_reconstruction_grid(frames_t: np.ndarray, frames_tk: np.ndarray, predictions: np.ndarray,
                             indices: np.ndarray, path: Union[str, Path], frame_gap: int) -> None:
    """Rows of (frame t, frame t+k, reconstruction, |error| x4), titled with the latent tokens."""
    plt = _pyplot()
    n = len(frames_t)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    titles = ("frame t", f"frame t+{frame_gap}", "reconstruction", "|error| x4")
    for i in range(n):
        target = frames_tk[i].astype(np.float32) / 255
        prediction = np.clip(predictions[i], 0, 1)
        error = np.clip(np.abs(prediction - target) * 4, 0, 1)
        for j, image in enumerate((frames_t[i], frames_tk[i], prediction, error)):
            ax = axes[i, j]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
        mse = float(((prediction - target) ** 2).mean())
        copy = float(((frames_t[i].astype(np.float32) / 255 - target) ** 2).mean())
        axes[i, 2].set_xlabel(f"tokens {list(map(int, indices[i]))}", fontsize=7)
        axes[i, 3].set_xlabel(f"mse {mse:.4f} (copy {copy:.4f})", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_evaluation(report: dict, path: Union[str, Path], action_names: Optional[Sequence[str]] = None) -> None:
    """Reconstruction vs copy baseline, code histogram, probe R^2 per action dimension and sign accuracy."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    recon = report["reconstruction"]
    ax = axes[0]
    ax.bar(["LAQ (nearest codes)", "copy frame t"], [recon["mse"], recon["copy_mse"]], color=["C0", "gray"])
    ax.set_ylabel("MSE on frame t+k")
    ax.set_title(f"reconstruction ({recon['pairs']} held-out pairs)")
    codes = report["codebook"]
    ax = axes[1]
    ax.bar(range(len(codes["counts"])), codes["counts"])
    ax.set_xlabel("code")
    ax.set_title(f"code usage {codes['codes_used']}/{codes['codebook_size']}, perplexity {codes['perplexity']:.2f}")
    probe = report.get("probe")
    if probe:
        names = list(probe["action_names"])
        x = np.arange(len(names))
        ax = axes[2]
        # The latent probes, then any reference (pixel inverse dynamics: what the frames themselves show).
        probes = {**probe["probes"], **{f"{k} (reference)": v for k, v in (probe.get("reference") or {}).items()}}
        width = 0.8 / max(1, len(probes))
        for i, (kind, result) in enumerate(probes.items()):
            ax.bar(x + i * width, [_nan(result["r2"][n]) for n in names], width, label=kind)
        ax.set_xticks(x + width * (len(probes) - 1) / 2)
        ax.set_xticklabels(names)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title("probe R^2 on held-out episodes")
        ax.legend(fontsize=8)
        ax = axes[3]
        axes_names = list(next(iter(probes.values()))["sign_accuracy"])
        x = np.arange(len(axes_names))
        for i, (kind, result) in enumerate(probes.items()):
            ax.bar(x + i * width, [_nan(result["sign_accuracy"][n]) for n in axes_names], width, label=kind)
        ax.axhline(0.5, color="red", lw=0.8, ls="--", label="chance")
        ax.set_xticks(x + width * (len(probes) - 1) / 2)
        ax.set_xticklabels(axes_names)
        ax.set_ylim(0, 1)
        ax.set_title("sign accuracy of each motion axis")
        ax.legend(fontsize=8)
    else:
        for ax in axes[2:]:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no actions: no probe", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _nan(value):
    """A report's None (a score that is undefined, e.g. R^2 of a constant action) as a bar left out."""
    return float("nan") if value is None else value
