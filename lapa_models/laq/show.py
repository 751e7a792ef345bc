"""See what the latent actions mean: decode frames with their labelled tokens and with every code swapped in.

    lapa laq show --checkpoint runs/laq/final --data data/sim/mt10_video --out runs/laq/show

For ``--frames`` transitions (x_t, x_t+k) spread over the dataset's episodes, the LAQ decoder predicts
x_t+k from x_t and (a) the tokens the encoder assigns to the transition, (b) the same tokens with token
position j replaced by code c, for every j and c. A codebook that means something moves the arm (or
what it pushes) differently for different codes; a collapsed or meaningless one decodes the same
frame whatever the code. Written to ``--out``:

    frame_XX.png      per transition: x_t, x_t+k, the decoding with its own tokens; then a T x C grid
                      (row = token position, column = code; the labelled code framed) of the change
                      each decoding makes to x_t (prediction - x_t, mid-grey = no change)
    latents.mp4       the same as a video: every transition, every code of every position in turn
    usage.png/.json   codebook usage over the whole dataset (or --max-pairs of it): counts per code and
                      token position, perplexity, distinct token tuples, and which codes each task uses
It prints a one-line verdict and warns when the codebook looks collapsed (fewer than half the codes
in use) or when swapping codes hardly changes the decoding.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from lapa_models.commands import report_input_errors

from .data import add_allow_squash_argument, frame_pairs, gather, iter_pair_batches, load_frames
from .modeling import LAQModel
from .quantizer import usage_and_perplexity


def pick_pairs(store, pairs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` pairs spread over episodes (round-robin over tasks), each from the middle part of an episode."""
    rng = np.random.default_rng(seed)
    episode_of = store.episode_of(pairs[:, 0])
    by_task: Dict[str, list] = {}
    for e in rng.permutation(store.num_episodes):
        by_task.setdefault(store.tasks[e] or "", []).append(int(e))
    order = []
    while len(order) < store.num_episodes:
        for task in sorted(by_task):
            if by_task[task]:
                order.append(by_task[task].pop(0))
    chosen = []
    for e in order:
        candidates = np.flatnonzero(episode_of == e)
        if len(candidates):
            chosen.append(candidates[int(rng.integers(len(candidates)))])
        if len(chosen) == n:
            break
    return pairs[np.asarray(chosen, dtype=np.int64)]


@torch.no_grad()
def swap_decodings(model: LAQModel, frames_t: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W, 3) float predictions: token position j of each transition set to code c."""
    n, t = tokens.shape
    c = model.config.codebook_size
    out = []
    for i in range(n):
        swapped = np.repeat(tokens[i][None], t * c, axis=0).reshape(t, c, t)
        for j in range(t):
            swapped[j, :, j] = np.arange(c)
        frames = np.repeat(frames_t[i][None], t * c, axis=0)
        prediction = model.reconstruct(frames, torch.as_tensor(swapped.reshape(t * c, t)))
        out.append(prediction.cpu().numpy().reshape(t, c, *prediction.shape[1:]))
    return np.stack(out)


def change_image(prediction: np.ndarray, frame_t: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """prediction - x_t as an image: mid-grey where nothing changes, brighter/darker where it does."""
    delta = prediction - frame_t.astype(np.float32) / 255
    return np.clip(0.5 + gain * delta, 0, 1)


@torch.no_grad()
def codebook_usage(model: LAQModel, store, pairs: np.ndarray, batch_size: int = 256) -> Dict[str, Any]:
    c, t = model.config.codebook_size, model.config.num_latent_tokens
    tokens = np.zeros((len(pairs), t), dtype=np.int64)
    done = 0
    for chunk, frames_t, frames_tk in iter_pair_batches(store, pairs, batch_size):
        tokens[done:done + len(chunk)] = model.encode(frames_t, frames_tk).cpu().numpy()
        done += len(chunk)
    counts = np.bincount(tokens.reshape(-1), minlength=c)
    used, perplexity = usage_and_perplexity(counts)
    per_position = [np.bincount(tokens[:, j], minlength=c).tolist() for j in range(t)]
    episode_of = store.episode_of(pairs[:, 0])
    tasks = np.asarray([store.tasks[e] or "" for e in episode_of])
    per_task = {task: np.bincount(tokens[tasks == task].reshape(-1), minlength=c).tolist()
                for task in sorted(set(tasks.tolist()))}
    return {"pairs": int(len(pairs)), "codebook_size": c, "num_tokens": t, "counts": counts.tolist(),
            "codes_used": used, "perplexity": round(float(perplexity), 4),
            "per_position": per_position,
            "perplexity_per_position": [round(float(usage_and_perplexity(np.asarray(p))[1]), 4) for p in per_position],
            "distinct_token_tuples": int(len(np.unique(tokens, axis=0))), "per_task": per_task,
            "collapse": used < c / 2}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_frame_grid(path: Path, frame_t, frame_tk, own, swaps, tokens, gap: int) -> None:
    plt = _pyplot()
    t, c = swaps.shape[:2]
    fig, axes = plt.subplots(t + 1, c, figsize=(1.3 * c, 1.35 * (t + 1)), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, image, title in zip(axes[0], (frame_t, frame_tk, own, change_image(own, frame_t)),
                                ("frame t", f"frame t+{gap}", "decoded (own)", "change (own)")):
        ax.axis("on")
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
    for j in range(t):
        for code in range(c):
            ax = axes[j + 1, code]
            ax.axis("on")
            ax.imshow(change_image(swaps[j, code], frame_t))
            labelled = int(tokens[j]) == code
            for spine in ax.spines.values():
                spine.set_edgecolor("lime" if labelled else "white")
                spine.set_linewidth(3 if labelled else 0.5)
            if j == 0:
                ax.set_title(f"code {code}", fontsize=7)
            if code == 0:
                ax.set_ylabel(f"token {j}", fontsize=7)
                ax.axis("on")
    fig.suptitle(f"latent tokens {list(map(int, tokens))}: change each code makes at each position "
                 "(grey = none)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_usage_plot(path: Path, usage: Dict[str, Any]) -> None:
    plt = _pyplot()
    c = usage["codebook_size"]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.5, 0.3 * len(usage["per_task"]) + 1.5)))
    per_pos = np.asarray(usage["per_position"], float)
    bottom = np.zeros(c)
    for j, row in enumerate(per_pos):
        axes[0].bar(np.arange(c), row, bottom=bottom, label=f"token {j}")
        bottom += row
    axes[0].set_xlabel("code")
    axes[0].set_ylabel("transitions")
    axes[0].set_title(f"codebook usage: {usage['codes_used']}/{c} codes, perplexity {usage['perplexity']:.2f}, "
                      f"{usage['distinct_token_tuples']} distinct tuples", fontsize=9)
    axes[0].legend(fontsize=7)
    tasks = list(usage["per_task"])
    m = np.asarray([usage["per_task"][k] for k in tasks], float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    im = axes[1].imshow(m, aspect="auto", cmap="viridis")
    axes[1].set_yticks(range(len(tasks)))
    axes[1].set_yticklabels(tasks, fontsize=7)
    axes[1].set_xticks(range(c))
    axes[1].set_xlabel("code")
    axes[1].set_title("share of each code per task", fontsize=9)
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    ImageDraw.Draw(canvas).text((3, 2), text, fill=(255, 255, 0))
    return np.asarray(canvas)


def write_video(path: Path, frames_t, frames_tk, swaps, tokens, scale: int, fps: float = 4.0) -> int:
    """Per transition and per (position, code): [x_t | x_t+k | decoded with the swap | change]."""
    from lapa_models.data.video import VideoWriter

    def up(img: np.ndarray) -> np.ndarray:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype != np.uint8 else img
        return np.kron(img, np.ones((scale, scale, 1), np.uint8))

    h, w = frames_t.shape[1] * scale, frames_t.shape[2] * scale
    written = 0
    with VideoWriter(path, fps, 4 * w, h, "h264") as video:
        for i in range(len(frames_t)):
            t, c = swaps.shape[1:3]
            for j in range(t):
                for code in range(c):
                    pred = swaps[i, j, code]
                    own = " (own)" if int(tokens[i, j]) == code else ""
                    row = np.concatenate([_label(up(frames_t[i]), f"#{i} frame t"), _label(up(frames_tk[i]), "t+k"),
                                          _label(up(pred), f"token {j} = code {code}{own}"),
                                          _label(up(change_image(pred, frames_t[i])), "change")], axis=1)
                    video.write(row)
                    written += 1
    return written


def show(checkpoint: Union[str, Path], data: Union[str, Path], out: Union[str, Path], frames: int = 8,
         seed: int = 0, max_pairs: int = 20000, frame_gap: int = 0, video: bool = True,
         progress: bool = True, allow_squash: bool = False) -> Dict[str, Any]:
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    model = LAQModel.from_pretrained(checkpoint).eval()
    gap = int(frame_gap or model.config.frame_gap)
    store = load_frames(data, model.config, progress=progress, model=f"checkpoint {checkpoint}",
                        allow_squash=allow_squash)
    pairs = frame_pairs(store, gap)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sample = pairs if len(pairs) <= max_pairs else pairs[np.sort(rng.choice(len(pairs), max_pairs, replace=False))]
    usage = codebook_usage(model, store, sample)
    chosen = pick_pairs(store, pairs, frames, seed)
    frames_t, frames_tk = gather(store, chosen)
    tokens = model.encode(frames_t, frames_tk).cpu().numpy()
    own = model.reconstruct(frames_t, torch.as_tensor(tokens)).cpu().numpy()
    swaps = swap_decodings(model, frames_t, tokens)
    # How much the decoding depends on the code: mean |difference| between codes at one position,
    # relative to how much the decoding changes the frame at all.
    spread = float(np.mean(np.abs(swaps - swaps.mean(axis=2, keepdims=True))))
    motion = float(np.mean(np.abs(own - frames_t.astype(np.float32) / 255)))
    for i in range(len(chosen)):
        save_frame_grid(out / f"frame_{i:02d}.png", frames_t[i], frames_tk[i], own[i], swaps[i], tokens[i], gap)
    save_usage_plot(out / "usage.png", usage)
    report = {"checkpoint": str(checkpoint), "data": str(data), "frame_gap": gap,
              "frames": [{"episode": int(store.episode_ids[e]), "task": store.tasks[e],
                          "pair": [int(p[0]), int(p[1])], "tokens": list(map(int, tok))}
                         for p, e, tok in zip(chosen, store.episode_of(chosen[:, 0]), tokens)],
              "code_effect": round(spread, 5), "decoded_change": round(motion, 5),
              "usage": usage}
    if video:
        scale = max(1, 128 // frames_t.shape[1])
        report["video"] = str(out / "latents.mp4")
        report["video_frames"] = write_video(out / "latents.mp4", frames_t, frames_tk, swaps, tokens, scale)
    (out / "usage.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="LAQ checkpoint directory")
    p.add_argument("--data", required=True, help="episode dataset or folder of videos")
    p.add_argument("--out", required=True, help="folder for the grids, the video and the usage report")
    p.add_argument("--frames", type=int, default=8, help="transitions to render (spread over episodes and tasks)")
    p.add_argument("--frame-gap", type=int, default=0, help="default: the gap the model was trained with")
    p.add_argument("--max-pairs", type=int, default=20000, help="transitions counted for codebook usage")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-video", action="store_true")
    add_allow_squash_argument(p)
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    return report_input_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    report = show(args.checkpoint, args.data, args.out, frames=args.frames, seed=args.seed, max_pairs=args.max_pairs,
                  frame_gap=args.frame_gap, video=not args.no_video, progress=not args.no_progress,
                  allow_squash=args.allow_squash)
    usage = report["usage"]
    print(json.dumps({k: v for k, v in report.items() if k != "frames"}))
    verdict = (f"{usage['codes_used']}/{usage['codebook_size']} codes in use, perplexity {usage['perplexity']}, "
               f"{usage['distinct_token_tuples']} distinct token tuples over {usage['pairs']} transitions; "
               f"swapping a code changes the decoding by {report['code_effect']:.4f} on average "
               f"(the decoding changes the frame by {report['decoded_change']:.4f}); see {args.out}")
    print(verdict, file=sys.stderr)
    if usage["collapse"]:
        print(f"WARNING codebook collapse: only {usage['codes_used']}/{usage['codebook_size']} codes in use",
              file=sys.stderr)
    if report["code_effect"] < 0.1 * max(report["decoded_change"], 1e-6):
        print("WARNING the decoder hardly depends on the code: the latent actions may carry little information",
              file=sys.stderr)
    return 0
