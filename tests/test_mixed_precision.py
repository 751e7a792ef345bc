"""bf16 mixed precision (what GPUs train with) through accelerate's autocast, run here on CPU: LAQ and
policy training take --mixed-precision bf16, say so in their summary, reach the fp32 loss within
bf16's rounding (but not bit-equal: autocast is really on), and save float32 weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from test_frame_size import write_dataset  # noqa: E402

COMMON = ["--steps", 12, "--batch-size", 8, "--save-every", 0, "--val-fraction", 0, "--no-progress", "--threads", 1,
          "--log-every", 6]
COMMANDS = {
    "laq": (["laq", "train", "--config", "tiny", "--data-mode", "memory"], lambda s: s["final"]["loss"]),
    "policy": (["policy", "finetune", "--init", "scratch", "--config", "tiny", "--eval-every", 0],
               lambda s: s["last"]["train/loss"]),
}


def _train(kind: str, data: Path, out: Path, precision: str) -> dict:
    words, _ = COMMANDS[kind]
    result = subprocess.run([sys.executable, "-m", "lapa_models", *map(str, words), "--data", str(data), "--out", str(out),
                             "--mixed-precision", precision, *map(str, COMMON)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_bf16_training_runs_close_to_fp32_and_saves_float32_weights(kind, tmp_path):
    from safetensors import safe_open

    data = write_dataset(tmp_path / "data", 32, 32)
    loss = COMMANDS[kind][1]
    full = _train(kind, data, tmp_path / "fp32", "no")
    half = _train(kind, data, tmp_path / "bf16", "bf16")
    if kind == "laq":
        assert half["mixed_precision"] == "bf16" and full["mixed_precision"] == "no"
    assert loss(half) != loss(full)                                      # autocast changed the arithmetic
    assert abs(loss(half) - loss(full)) <= 0.05 * abs(loss(full)), (loss(half), loss(full))
    weights = next((tmp_path / "bf16" / "final").glob("*.safetensors"))
    with safe_open(str(weights), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}
