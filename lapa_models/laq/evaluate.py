"""Evaluate an LAQ checkpoint on held-out labelled episodes: reconstruction, codebook, action probe.

    lapa laq evaluate --checkpoint runs/laq_tiny/final --data data/sim/mt10_64_eval

Prints one JSON object and writes it (default ``<checkpoint>/eval_<dataset>.json``) with a PNG beside it:

- reconstruction: MSE of frame t+k predicted from frame t and the nearest-code latent tokens, against
  copying frame t (the baseline a useless latent gets);
- codebook: usage counts, codes used, perplexity (overall and per token position), distinct token tuples;
- probe: how much the latent tokens know about the real actions. Target: the mean action over
  t .. t+k-1 (the commands executed between the two frames; for k = 1 the action at t). Features: the
  one-hot tokens (T x C). Probes (linear least squares and a small MLP; also a linear probe on the
  continuous pre-quantization latents, as an upper reference) are fitted on some episodes and scored
  on the other episodes (split per task): R^2 per action dimension and the accuracy of the sign of each
  motion axis (vx, vy, vz) on transitions whose |mean action| exceeds --sign-deadband, and the directions
  of motion read worst and best (`motion_directions`: a unit vector over vx, vy, vz and the R^2 of the
  prediction along it; a camera cannot see motion along its line of sight, and no latent can carry what
  it does not see).
  With --pixel-reference STEPS, a reference beside them: a small CNN fitted for STEPS steps on the same
  fit pairs to read the action from the pixel difference of the two frames (inverse dynamics with no
  latent bottleneck), scored on the same test pairs. Where the latent probes fall short of it, the
  LAQ loses what the frames show; where it is low too (e.g. across tasks with --probe-test-tasks), the
  frames themselves do not show the action in a way that carries over, whatever the latent.
  With --probe-fit-data DATA, the pairs of another labelled dataset join the fit side of every probe and
  of the reference (e.g. play, `lapa data generate --play-steps`: motion no task chose), scored on the same
  test pairs: whether what limits reading a new task's action is the frames or the motions the labelled
  data shows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from lapa_models.commands import report_input_errors
from .data import add_allow_squash_argument, frame_pairs, gather, iter_pair_batches, load_frames
from .modeling import LAQModel
from .quantizer import usage_and_perplexity

MOTION_AXES = ("vx", "vy", "vz")


# ---------------------------------------------------------------------------- probes
def one_hot_tokens(tokens: np.ndarray, codebook_size: int) -> np.ndarray:
    """(P, T) tokens -> (P, T * C) float one-hot features."""
    p, t = tokens.shape
    features = np.zeros((p, t * codebook_size), dtype=np.float32)
    features[np.arange(p)[:, None], np.arange(t)[None, :] * codebook_size + tokens] = 1.0
    return features


def fit_linear_probe(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3):
    """Ridge least squares with an unpenalized bias; returns predict(x)."""
    mean, std = x.mean(0), x.std(0) + 1e-8
    xs = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], 1).astype(np.float64)
    penalty = ridge * len(x) * np.eye(xs.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(xs.T @ xs + penalty, xs.T @ y.astype(np.float64))
    return lambda z: np.concatenate([(z - mean) / std, np.ones((len(z), 1))], 1) @ w


def fit_mlp_probe(x: np.ndarray, y: np.ndarray, hidden: int = 128, steps: int = 600, seed: int = 0):
    """Two-layer MLP on standardized targets, full-batch AdamW; returns predict(x)."""
    y_mean, y_std = y.mean(0), y.std(0) + 1e-8
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random stream
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(),
                                  torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, y.shape[1]))
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy((y - y_mean) / y_std).float()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small only pay for thread synchronization (60x slower on a busy CPU)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                loss = torch.nn.functional.mse_loss(net(xt), yt)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(z).float()).numpy() * y_std + y_mean

    return predict


def r2_scores(y: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column (1: perfect, 0: as good as the held-out mean)."""
    residual = ((y - prediction) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return np.where(total > 0, 1.0 - residual / np.maximum(total, 1e-12), np.nan)


def sign_accuracy(y: np.ndarray, prediction: np.ndarray, deadband: float) -> Tuple[float, float]:
    """(accuracy of sign(prediction) == sign(y), fraction of samples counted) over |y| > deadband."""
    moving = np.abs(y) > deadband
    if not moving.any():
        return float("nan"), 0.0
    return float((np.sign(prediction[moving]) == np.sign(y[moving])).mean()), float(moving.mean())


def split_by_episode(tasks: Sequence[str], holdout: float, seed: int) -> Tuple[List[int], List[int]]:
    """(fit, test) episode positions: within each task, a random ``holdout`` share (>= 1 when the task has
    >= 2 episodes) is kept for testing, so every task is both fitted and scored."""
    rng = np.random.default_rng(seed)
    fit, test = [], []
    for task in sorted(set(tasks)):
        episodes = [i for i, t in enumerate(tasks) if t == task]
        rng.shuffle(episodes)
        n_test = min(len(episodes) - 1, max(1, int(round(holdout * len(episodes))))) if len(episodes) > 1 else 0
        test += episodes[:n_test]
        fit += episodes[n_test:]
    return sorted(fit), sorted(test)


def split_by_task(tasks: Sequence[str], test_tasks: Sequence[str]) -> Tuple[List[int], List[int]]:
    """(fit, test) episode positions: the probe is fitted on the other tasks and scored on ``test_tasks``
    (does a latent action mean the same motion in a task the probe never saw?)."""
    known = sorted(set(tasks))
    unknown = [t for t in test_tasks if t not in known]
    if unknown:
        raise ValueError(f"--probe-test-tasks: {unknown} not in the data; its tasks are {known}")
    test_set = set(test_tasks)
    return ([i for i, t in enumerate(tasks) if t not in test_set], [i for i, t in enumerate(tasks) if t in test_set])


def fit_pixel_idm(frames, fit: np.ndarray, y: np.ndarray, steps: int, seed: int = 0, batch_size: int = 64,
                  progress: bool = False):
    """A small CNN reading the action from the difference of two frames (inverse dynamics from pixels, the
    reference for the latent probes). frames(rows) -> (x_t, x_tk) float tensors (N, C, H, W) for rows of the fit
    or test pairs; fit: the rows to fit on, y: their targets. Returns predict(rows) -> (N, A) array."""
    from tqdm.auto import tqdm

    y_mean, y_std = y.mean(0), y.std(0) + 1e-8
    y_norm = torch.from_numpy((y - y_mean) / y_std).float()
    x_t, _ = frames(fit[:1])
    channels, height, width = x_t.shape[1:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        convs, c = [], channels
        for out_c, kernel in ((32, 5), (64, 3), (64, 3), (64, 3)):   # each halves the frame
            convs += [torch.nn.Conv2d(c, out_c, kernel, 2, kernel // 2), torch.nn.GELU()]
            c = out_c
        net = torch.nn.Sequential(*convs, torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                  torch.nn.Linear(64 * 16, 128), torch.nn.GELU(), torch.nn.Linear(128, y.shape[1]))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)

    def forward(rows):
        a, b = frames(rows)
        return net(b - a)

    with torch.enable_grad():
        for _ in tqdm(range(steps), desc="pixel inverse dynamics", disable=not progress, leave=False):
            batch = rng.integers(len(fit), size=min(batch_size, len(fit)))
            loss = torch.nn.functional.mse_loss(forward(fit[batch]), y_norm[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()

    def predict(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = [forward(rows[i:i + 256]).numpy() for i in range(0, len(rows), 256)]
        return np.concatenate(out) * y_std + y_mean

    return predict


def r2_extreme_directions(y: np.ndarray, prediction: np.ndarray) -> Optional[Tuple[Tuple[float, np.ndarray],
                                                                                  Tuple[float, np.ndarray]]]:
    """The directions of motion read worst and best: ((r2, unit vector), (r2, unit vector)).

    R^2 of the prediction projected on a direction d is 1 - d'Ed / d'Cd (E: the errors' second moment, C:
    the targets' covariance), so its extremes over all directions are 1 - the generalized eigenvalues of
    (E, C), reached at their eigenvectors. A direction no probe reads well whatever the latent, such as a
    camera's line of sight, shows here where the per-axis R^2 mixes it into every axis. None when the
    targets do not vary in every direction (C singular)."""
    if len(y) < 2 or y.shape[1] < 2:
        return None
    error = y - prediction
    e = error.T @ error / len(y)
    c = np.cov(y, rowvar=False, bias=True)
    try:
        lower = np.linalg.cholesky(c + 1e-12 * np.trace(c) * np.eye(len(c)))
    except np.linalg.LinAlgError:
        return None
    inverse = np.linalg.inv(lower)
    values, vectors = np.linalg.eigh(inverse @ e @ inverse.T)   # ascending: best direction first
    directions = inverse.T @ vectors
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    best, worst = directions[:, 0], directions[:, -1]
    # One sign for a direction and its opposite (same R^2): the largest component positive.
    best, worst = (d * np.sign(d[np.argmax(np.abs(d))]) for d in (best, worst))
    return (1.0 - float(values[-1]), worst), (1.0 - float(values[0]), best)


def score_probe(y: np.ndarray, prediction: np.ndarray, action_names: Sequence[str], deadband: float) -> Dict[str, Any]:
    """R^2 per action dimension, their mean over the motion axes, sign accuracy per motion axis, and the
    directions of motion (in the motion axes' space) read worst and best."""
    motion = [i for i, n in enumerate(action_names) if n in MOTION_AXES] or list(range(min(3, len(action_names))))
    r2 = r2_scores(y, prediction)
    signs = {action_names[i]: sign_accuracy(y[:, i], prediction[:, i], deadband) for i in motion}
    out = {"r2": {n: _round(v) for n, v in zip(action_names, r2)},
           "r2_mean_motion": _round(float(np.nanmean(r2[motion]))),
           "sign_accuracy": {n: _round(v[0]) for n, v in signs.items()},
           "sign_counted_fraction": {n: _round(v[1]) for n, v in signs.items()}}
    extremes = r2_extreme_directions(y[:, motion], prediction[:, motion])
    if extremes is not None:
        names = [action_names[i] for i in motion]
        out["motion_directions"] = {
            kind: {"r2": _round(value), "direction": {n: _round(float(v), 3) for n, v in zip(names, vector)}}
            for kind, (value, vector) in zip(("worst", "best"), extremes)}
    return out


def run_probes(tokens: np.ndarray, latents: np.ndarray, targets: np.ndarray, fit: np.ndarray, test: np.ndarray,
               codebook_size: int, action_names: Sequence[str], deadband: float, seed: int) -> Dict[str, Any]:
    features = {"linear_tokens": one_hot_tokens(tokens, codebook_size),
                "mlp_tokens": one_hot_tokens(tokens, codebook_size),
                "linear_continuous": latents.reshape(len(latents), -1)}
    results = {}
    for kind, x in features.items():
        if kind.startswith("mlp"):
            predict = fit_mlp_probe(x[fit], targets[fit], seed=seed)
        else:
            predict = fit_linear_probe(x[fit], targets[fit])
        results[kind] = score_probe(targets[test], predict(x[test]), action_names, deadband)
    return results


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(checkpoint: Union[str, Path], data: Union[str, Path], *, frame_gap: Optional[int] = None,
             probe_holdout: float = 0.3, probe_test_tasks: Optional[Sequence[str]] = None,
             sign_deadband: float = 0.05, batch_size: int = 256, seed: int = 0,
             device: Union[str, torch.device] = "cpu", progress: bool = True,
             allow_squash: bool = False, pixel_reference_steps: int = 0,
             reference_test_pairs: int = 4000,
             probe_fit_data: Optional[Union[str, Path]] = None) -> Dict[str, Any]:
    """The evaluation report (a JSON-able dict); see the module docstring."""
    if pixel_reference_steps < 0 or reference_test_pairs < 1:
        raise ValueError(f"--pixel-reference must be >= 0 and --reference-test-pairs >= 1, got "
                         f"{pixel_reference_steps} and {reference_test_pairs}")
    model = LAQModel.from_pretrained(checkpoint, device=device).eval()
    config = model.config
    gap = int(frame_gap or config.frame_gap)
    store = load_frames(data, config, progress=progress, model=f"checkpoint {checkpoint}", allow_squash=allow_squash)
    if probe_test_tasks:
        split_by_task(store.tasks, probe_test_tasks)   # an unknown task fails before the model runs
    pairs = frame_pairs(store, gap)
    squared_error, copy_error, tokens, latents = _encode_pairs(model, store, pairs, batch_size)

    counts = np.bincount(tokens.reshape(-1), minlength=config.codebook_size)
    used, perplexity = usage_and_perplexity(counts)
    per_token = [usage_and_perplexity(np.bincount(tokens[:, j], minlength=config.codebook_size))[1]
                 for j in range(config.num_latent_tokens)]
    mse, copy = float(squared_error.mean()), float(copy_error.mean())
    report: Dict[str, Any] = {
        "checkpoint": str(checkpoint), "data": str(data), "frame_gap": gap, "episodes": store.num_episodes,
        "reconstruction": {"pairs": int(len(pairs)), "mse": _round(mse), "copy_mse": _round(copy),
                           "mse_over_copy": _round(mse / max(copy, 1e-12))},
        "codebook": {"codebook_size": config.codebook_size, "counts": counts.tolist(), "codes_used": used,
                     "perplexity": _round(perplexity), "perplexity_per_token": [_round(p) for p in per_token],
                     "distinct_token_tuples": int(len(np.unique(tokens, axis=0))),
                     "collapse": used < config.codebook_size / 2},
        "probe": None,
    }
    if store.actions is None:
        report["probe_skipped"] = "dataset has no actions"
        return report
    action_names = list(getattr(store.source.info, "action_names", None) or
                        [f"a{i}" for i in range(store.actions.shape[1])])
    # The k commands executed between frame t and frame t+k (pairs never cross an episode end).
    targets = np.mean([store.actions[pairs[:, 0] + j] for j in range(gap)], axis=0)
    episode_of_pair = store.episode_of(pairs[:, 0])
    if probe_test_tasks:
        fit_eps, test_eps = split_by_task(store.tasks, probe_test_tasks)
        if not fit_eps:
            raise ValueError("--probe-test-tasks names every task of the data: nothing is left to fit the probe on")
    else:
        fit_eps, test_eps = split_by_episode(store.tasks, probe_holdout, seed)
    if not fit_eps or not test_eps:
        report["probe_skipped"] = f"need >= 2 episodes per task to split, got {store.num_episodes} episodes"
        return report
    fit, test = np.isin(episode_of_pair, fit_eps), np.isin(episode_of_pair, test_eps)
    stores, offsets = [(store, pairs)], [0, len(pairs)]
    extra = None
    if probe_fit_data is not None:   # more fit pairs from another labelled dataset (rows after the data's)
        other = load_frames(probe_fit_data, config, progress=progress, model=f"checkpoint {checkpoint}",
                            allow_squash=allow_squash)
        if other.actions is None:
            raise ValueError(f"--probe-fit-data {probe_fit_data}: the dataset has no actions to fit probes on")
        if other.actions.shape[1] != store.actions.shape[1]:
            raise ValueError(f"--probe-fit-data {probe_fit_data}: {other.actions.shape[1]} action values per step, "
                             f"{data} has {store.actions.shape[1]}")
        other_pairs = frame_pairs(other, gap)
        _, _, other_tokens, other_latents = _encode_pairs(model, other, other_pairs, batch_size)
        tokens, latents = np.concatenate([tokens, other_tokens]), np.concatenate([latents, other_latents])
        targets = np.concatenate([targets, np.mean([other.actions[other_pairs[:, 0] + j] for j in range(gap)], 0)])
        fit = np.concatenate([fit, np.ones(len(other_pairs), bool)])
        test = np.concatenate([test, np.zeros(len(other_pairs), bool)])
        stores.append((other, other_pairs))
        offsets.append(offsets[-1] + len(other_pairs))
        extra = {"data": str(probe_fit_data), "pairs": int(len(other_pairs)), "episodes": other.num_episodes}
    report["probe"] = {
        "target": f"mean action over t..t+{gap - 1}", "action_names": action_names,
        "split": {"by": "task", "test_tasks": list(probe_test_tasks)} if probe_test_tasks else
                 {"by": "episode", "holdout": probe_holdout},
        "fit_episodes": len(fit_eps), "test_episodes": len(test_eps), "fit_extra": extra, "fit_pairs": int(fit.sum()),
        "test_pairs": int(test.sum()), "sign_deadband": sign_deadband,
        "probes": run_probes(tokens, latents, targets, fit, test, config.codebook_size, action_names, sign_deadband,
                             seed)}
    if pixel_reference_steps:
        fit_rows, test_rows = np.flatnonzero(fit), np.flatnonzero(test)
        if len(test_rows) > reference_test_pairs:   # a random subset bounds the time; the latent probes see all
            test_rows = np.sort(np.random.default_rng(seed).choice(test_rows, reference_test_pairs, replace=False))

        def frames(rows):
            part_t, part_tk, order = [], [], []
            for s, (source, source_pairs) in enumerate(stores):
                mine = np.flatnonzero((rows >= offsets[s]) & (rows < offsets[s + 1]))
                if len(mine):
                    frames_t, frames_tk = gather(source, source_pairs[rows[mine] - offsets[s]])
                    part_t.append(model.preprocess(frames_t).float().cpu())
                    part_tk.append(model.preprocess(frames_tk).float().cpu())
                    order.append(mine)
            inverse = torch.from_numpy(np.argsort(np.concatenate(order)))   # back to the order of ``rows``
            return torch.cat(part_t)[inverse], torch.cat(part_tk)[inverse]

        predict = fit_pixel_idm(frames, fit_rows, targets[fit_rows], pixel_reference_steps, seed=seed,
                                progress=progress)
        reference = score_probe(targets[test_rows], predict(test_rows), action_names, sign_deadband)
        reference.update({"steps": pixel_reference_steps, "test_pairs_scored": int(len(test_rows)),
                          "input": "frame t+k minus frame t (pixels)"})
        report["probe"]["reference"] = {"pixel_inverse_dynamics": reference}
    return report


@torch.no_grad()
def _encode_pairs(model: LAQModel, store, pairs: np.ndarray, batch_size: int):
    """(squared error, copy error, tokens, continuous latents) of every pair."""
    config = model.config
    squared_error, copy_error = np.zeros(len(pairs)), np.zeros(len(pairs))
    tokens = np.zeros((len(pairs), config.num_latent_tokens), dtype=np.int64)
    latents = np.zeros((len(pairs), config.num_latent_tokens, config.code_dim), dtype=np.float32)
    done = 0
    for chunk, frames_t, frames_tk in iter_pair_batches(store, pairs, batch_size):
        output = model(frames_t, frames_tk)
        target = model.preprocess(frames_tk)
        x_t = model.preprocess(frames_t)
        n = len(chunk)
        squared_error[done:done + n] = ((output.prediction.float() - target) ** 2).mean((1, 2, 3)).cpu().numpy()
        copy_error[done:done + n] = ((x_t - target) ** 2).mean((1, 2, 3)).cpu().numpy()
        tokens[done:done + n] = output.indices.cpu().numpy()
        latents[done:done + n] = output.latents.float().cpu().numpy()
        done += n
    return squared_error, copy_error, tokens, latents


def _round(x: float, digits: int = 5):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), digits)


# ---------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="LAQ checkpoint directory")
    p.add_argument("--data", required=True, help="held-out episode dataset (with actions for the probe)")
    p.add_argument("--out", default=None, help="report JSON path (default <checkpoint>/eval_<dataset>.json); "
                                               "the plot goes beside it as .png")
    p.add_argument("--frame-gap", type=int, default=None, help="default: the gap the model was trained with")
    p.add_argument("--probe-holdout", type=float, default=0.3,
                   help="share of each task's episodes the probe is scored on")
    p.add_argument("--probe-test-tasks", type=lambda s: [t.strip() for t in s.split(",") if t.strip()], default=None,
                   metavar="TASKS", help="comma separated: fit the probe on the other tasks and score it on these "
                                         "(default: every task, on held-out episodes)")
    p.add_argument("--sign-deadband", type=float, default=0.05,
                   help="sign accuracy counts transitions whose |mean action| exceeds this (action units)")
    p.add_argument("--pixel-reference", type=int, default=0, metavar="STEPS",
                   help="also fit a small CNN for STEPS steps reading the action from the frames' pixel difference "
                        "(no latent in between), scored on the same split: what the frames themselves show "
                        "(2000: about 1.5 min on 2 CPU cores; default 0, off)")
    p.add_argument("--probe-fit-data", default=None, metavar="DATA",
                   help="another labelled dataset (e.g. play: lapa data generate --play-steps) whose pairs join the "
                        "fit side of the probes and the pixel reference; scored on the same test pairs")
    p.add_argument("--reference-test-pairs", type=int, default=4000,
                   help="the pixel reference is scored on at most this many test pairs (a random subset)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_allow_squash_argument(p)
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    return report_input_errors(_run, args)


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    from .plots import plot_evaluation

    report = evaluate(args.checkpoint, args.data, frame_gap=args.frame_gap, probe_holdout=args.probe_holdout,
                      probe_test_tasks=args.probe_test_tasks,
                      sign_deadband=args.sign_deadband, batch_size=args.batch_size, seed=args.seed,
                      device=args.device, progress=not args.no_progress, allow_squash=args.allow_squash,
                      pixel_reference_steps=args.pixel_reference, reference_test_pairs=args.reference_test_pairs,
                      probe_fit_data=args.probe_fit_data)
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval_{Path(args.data).resolve().name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot_evaluation(report, out.with_suffix(".png"))
    print(json.dumps(report))
    if report["codebook"]["collapse"]:
        print(f"WARNING codebook collapse: {report['codebook']['codes_used']}/{report['codebook']['codebook_size']} "
              "codes in use on this dataset", file=sys.stderr)
    return 0
