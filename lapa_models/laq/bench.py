"""Benchmark LAQ: training and labelling throughput in frame pairs per second (one JSON object).

    python -m lapa_models.laq.bench --config tiny
    python -m lapa_models.laq.bench --config paper --device cuda --batch-size 64

Synthetic uint8 frames at the config's image size (throughput does not depend on their content).
Training = forward + backward + Adam step with gradient clipping (bf16 autocast on a GPU);
labelling = ``LAQModel.encode`` in eval mode.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from .configuration import get_config
from .modeling import LAQModel
from .train import ADAM_BETAS, GRAD_CLIP


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(config_name: str = "tiny", batch_size: int = 0, label_batch_size: int = 256, steps: int = 20,
              warmup: int = 3, device: str = "cpu") -> dict:
    config = get_config(config_name)
    device = torch.device(device)
    batch_size = batch_size or config.batch_size
    generator = torch.Generator().manual_seed(0)
    h, w = config.image_size

    def frames(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, h, w, config.channels), dtype=torch.uint8, generator=generator)

    model = LAQModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=ADAM_BETAS)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    frames_t, frames_tk = frames(batch_size).to(device), frames(batch_size).to(device)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        with autocast:
            loss = model(frames_t, frames_tk).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    label_t, label_tk = frames(label_batch_size).to(device), frames(label_batch_size).to(device)
    label_rounds = max(2, steps // 4)
    for i in range(1 + label_rounds):
        if i == 1:
            _sync(device)
            start = time.perf_counter()
        with autocast:
            model.encode(label_t, label_tk)
    _sync(device)
    label_seconds = time.perf_counter() - start

    return {"benchmark": "laq", "config": config_name, "parameters": model.num_parameters(),
            "image_size": list(config.image_size), "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or platform.machine()),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "train": {"batch_size": batch_size, "steps": steps,
                      "pairs_per_s": round(batch_size * steps / train_seconds, 1),
                      "step_ms": round(1000 * train_seconds / steps, 2)},
            "label": {"batch_size": label_batch_size, "batches": label_rounds,
                      "pairs_per_s": round(label_batch_size * label_rounds / label_seconds, 1)}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="named size or config.json path")
    p.add_argument("--batch-size", type=int, default=0, help="training pairs per step (default: the config's)")
    p.add_argument("--label-batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(benchmark(args.config, args.batch_size, args.label_batch_size, args.steps, device=args.device)))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
