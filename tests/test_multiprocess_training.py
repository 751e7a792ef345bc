"""Training on several processes (torchrun, gloo on CPU) matches one process and resumes exactly.

For LAQ and for the policy: two processes with batch B each against one process with batch 2B (the same
global batch), then the two-process run resumed from its middle checkpoint. Tolerances:
- learning rate: equal (a function of the optimizer step, whatever the process count);
- policy loss and validation metrics: 1e-5 relative (same samples, same weights; only the order of
  float additions differs);
- LAQ: the copy-frame MSE (data only) 1e-5 relative, loss and held-out MSE 1% relative: NSVQ draws its
  substitution noise per process, so the second process's half of the batch gets other noise (a different
  seed moves these numbers by ~10%, see test_laq_pipeline);
- resume: bit-identical weights and identical metrics lines.
Also: `lapa laq label` split over two processes writes the same files as one process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from lapa_models.data.episodes import DatasetInfo, Episode, EpisodeWriter  # noqa: E402
from lapa_models.laq import get_config as laq_config  # noqa: E402

INSTRUCTIONS = ["push the block left", "push the block right", "lift the block", "lower the block"]


def write_moving_squares(root: Path, episodes: int = 8, frames: int = 14, size: int = 64) -> Path:
    """Episodes of a square moving in one of four directions (the action), with states and instructions."""
    info = DatasetInfo(fps=10.0, image_height=size, image_width=size, action_names=["dx", "dy"],
                       state_names=["x", "y"], source="test")
    writer = EpisodeWriter(root, info)
    rng = np.random.default_rng(0)
    for e in range(episodes):
        direction = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][e % 4])
        x, y = rng.integers(16, size - 16, 2)
        images, states = [], []
        for t in range(frames):
            img = np.full((size, size, 3), 40, np.uint8)
            cx, cy = np.clip([x + 2 * t * direction[0], y + 2 * t * direction[1]], 4, size - 5)
            img[cy - 4:cy + 4, cx - 4:cx + 4] = (220, 60 + 40 * (e % 4), 80)
            images.append(img)
            states.append([cx / size, cy / size])
        writer.write(Episode(frames=np.stack(images), timestamps=np.arange(frames) / 10.0,
                             actions=np.tile(direction, (frames, 1)).astype(np.float32),
                             states=np.asarray(states, np.float32), instruction=INSTRUCTIONS[e % 4],
                             task=f"task{e % 4}", success=True))
    return root


def torchrun(command: str, argv, processes: int = 2, timeout: int = 120) -> None:
    """`torchrun -m lapa_models <command> <argv>`: the model layer's command table, as on a GPU node."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                             str(processes), "-m", "lapa_models", *command.split(), *[str(a) for a in argv]],
                            capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


TIMING = ("pairs_per_s", "data_wait_share", "samples_per_s", "elapsed_s")


def metrics(run: Path, timing: bool = True) -> list:
    """metrics.jsonl of a run (without its wall-clock fields unless ``timing``)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return records if timing else [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def resume_copy(run: Path, checkpoint: str, to: Path) -> Path:
    """A run directory as it was when ``checkpoint`` had just been written."""
    to.mkdir()
    shutil.copytree(run / checkpoint, to / checkpoint)
    step = int(checkpoint.split("-")[1])
    (to / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics(run) if r["step"] <= step))
    return to


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_moving_squares(tmp_path_factory.mktemp("mp") / "squares")


@pytest.fixture(scope="module")
def laq_narrow(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mp_config") / "laq.json"
    laq_config("tiny", dim=32, heads=2, spatial_depth=1, temporal_depth=1, decoder_depth=1).save(path)
    return path


def test_laq_on_two_processes_matches_one_and_resumes_exactly(data, laq_narrow, tmp_path):
    from lapa_models.laq.train import train

    common = ["--data", data, "--config", laq_narrow, "--steps", 6, "--log-every", 2, "--save-every", 3,
              "--warmup-steps", 4, "--monitor-pairs", 32, "--no-progress", "--threads", 1, "--val-fraction", 0.2]
    torch.set_num_threads(1)
    one = tmp_path / "one"
    train(laq_config(str(laq_narrow)), data, one, steps=6, batch_size=8, log_every=2, save_every=3, warmup_steps=4,
          num_monitor_pairs=32, progress=False, val_fraction=0.2)
    two = tmp_path / "two"
    torchrun("laq train", common + ["--batch-size", 4, "--out", two])

    a, b = metrics(one), metrics(two)
    assert [r["step"] for r in b] == [2, 4, 6]                   # one metrics line per step: the main process's
    assert [r["lr"] for r in a] == [r["lr"] for r in b] == [0.0005, 0.001, 0.001]
    for x, y in zip(a, b):
        assert y["copy_mse"] == pytest.approx(x["copy_mse"], rel=1e-5)     # the same pairs
        assert y["val_copy_mse"] == pytest.approx(x["val_copy_mse"], rel=1e-5)
        assert y["loss"] == pytest.approx(x["loss"], rel=0.01)
        assert y["val_mse"] == pytest.approx(x["val_mse"], rel=0.01)
    assert sum(y["counts"]) == 2 * 4 * 2 * 4                        # both processes' codes: 2 steps x 8 pairs x 4
    written = sorted(p.name for p in (two / "checkpoint-3").iterdir())
    assert written == ["config.json", "model.safetensors", "rng_0.json", "rng_0.safetensors", "rng_1.json",
                       "rng_1.safetensors", "training_state.json", "training_state.safetensors"]
    assert json.loads((two / "checkpoint-3" / "training_state.json").read_text())["processes"] == 2

    resumed = resume_copy(two, "checkpoint-3", tmp_path / "resumed")
    torchrun("laq train", common + ["--batch-size", 4, "--out", resumed, "--resume"])
    assert same_weights(two / "final", resumed / "final")
    assert metrics(resumed, timing=False) == metrics(two, timing=False)


def test_labelling_split_over_two_processes_writes_what_one_process_writes(data, laq_narrow, tmp_path):
    from lapa_models.laq import LAQModel
    from lapa_models.laq.label import label_dataset, latents_dir

    torch.manual_seed(0)
    checkpoint = tmp_path / "laq"
    LAQModel(laq_config(str(laq_narrow))).save_pretrained(checkpoint)
    one = label_dataset(checkpoint, data, name="one", progress=False, batch_size=16)
    torchrun("laq label", ["--checkpoint", checkpoint, "--data", data, "--name", "two", "--no-progress",
                                       "--batch-size", 16])
    files = sorted(p.name for p in latents_dir(data, "one").iterdir())
    assert len(files) == 9 and one["pairs"] == 8 * (14 - 3)
    for name in files:
        assert (latents_dir(data, "one") / name).read_bytes() == (latents_dir(data, "two") / name).read_bytes()


def test_policy_on_two_processes_matches_one_and_resumes_exactly(data, laq_narrow, tmp_path):
    from lapa_models.laq import LAQModel
    from lapa_models.laq.label import label_dataset
    from lapa_models.policy import pretrain

    torch.manual_seed(0)
    LAQModel(laq_config(str(laq_narrow))).save_pretrained(tmp_path / "laq")
    label_dataset(tmp_path / "laq", data, name="laq", progress=False)
    common = ["--data", data, "--config", "tiny", "--steps", 8, "--log-every", 2, "--eval-every", 4, "--save-every", 4,
              "--no-progress", "--threads", 1, "--no-augment", "--lr", 3e-3, "--warmup-steps", 3,
              "--val-fraction", 0.25]
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    one = tmp_path / "one"
    assert pretrain.main(parser.parse_args([str(a) for a in common + ["--batch-size", 16, "--out", one]])) == 0
    two = tmp_path / "two"
    torchrun("policy pretrain", common + ["--batch-size", 8, "--out", two])

    a, b = metrics(one), metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 4, 6, 8]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert b[-1]["lr"] < 0.2 * max(r["lr"] for r in b)     # the cosine reached its end: not stepped twice per step
    for x, y in zip(a, b):
        for key in ("train/loss", "train/latent_accuracy", "val/loss", "val/latent_accuracy"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-5), (key, x["step"])
    assert "val/loss" in b[-1] and json.loads((two / "summary.json").read_text())["processes"] == 2
    assert sorted(p.name for p in two.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-4"]

    resumed = resume_copy(two, "checkpoint-4", tmp_path / "resumed")
    torchrun("policy pretrain", common + ["--batch-size", 8, "--out", resumed, "--resume"])
    assert same_weights(two / "final", resumed / "final")
    assert metrics(resumed, timing=False) == metrics(two, timing=False)


def test_gradient_accumulation_matches_a_batch_as_large(data, tmp_path):
    """One process, batch 8 x 2 accumulated = batch 16: the policy's loss and weights agree."""
    from lapa_models.policy import finetune

    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    common = ["--data", data, "--init", "scratch", "--config", "tiny", "--steps", 4, "--log-every", 1,
              "--eval-every", 0, "--save-every", 0, "--no-progress", "--threads", 1, "--no-augment",
              "--val-fraction", 0, "--lr", 3e-3, "--warmup-steps", 1]
    runs = {}
    for name, extra in (("big", ["--batch-size", 16]), ("accumulated", ["--batch-size", 8, "--grad-accum", 2])):
        runs[name] = tmp_path / name
        assert finetune.main(parser.parse_args([str(a) for a in common + extra + ["--out", runs[name]]])) == 0
    a, b = metrics(runs["big"]), metrics(runs["accumulated"])
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    # The action loss is a mean over non-padded steps per batch: two halves weigh their pads apart.
    assert [r["train/action_l1"] for r in b] == pytest.approx([r["train/action_l1"] for r in a], rel=1e-3)
    assert a[-1]["train/action_l1"] != a[0]["train/action_l1"]
