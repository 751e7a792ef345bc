"""Stage 2, latent pretraining: learn to predict LAQ latent actions from (image, instruction).

    lapa policy pretrain --data data/sim/mt10_video --latents laq --config small \\
        --out runs/policy/pretrain --steps 3000
    accelerate launch -m lapa_models policy pretrain --data ... --config siglip-base --out ...   # several GPUs
    torchrun --nproc-per-node 2 -m lapa_models policy pretrain --data ... --out ...               # CPU, gloo
    lapa policy pretrain --data big/ --data-mode stream --num-workers 4 ...      # any size

The datasets need LAQ labels (``<dataset>/latents/<name>/``, written by the LAQ labelling stage). Loss:
cross-entropy on the T latent tokens; metric: latent token accuracy on training batches and on held-out
episodes. ``--latent-horizon H`` predicts H consecutive latent actions (t -> t+k, ..., t+(H-1)k -> t+Hk:
the latent counterpart of an action chunk, H x T tokens; accuracy counts all of them). The model sees
the image and the instruction only (as the paper's VLM): videos have no robot state, so the state
token is added, and learned, at finetuning. The result (``<out>/final``) is the
``--init`` of ``lapa_models.policy.finetune``.
"""
from __future__ import annotations

import argparse
from typing import Dict, List


from .configuration import get_config
from .data import (ConcatSamples, InstructionTable, LatentSamples, align_latents, check_latents_fit,
                   load_latent_labels, split_episodes, stack_latents)
from .modeling import LapaPolicy
from .training import (add_common_arguments, checked_frame_size, config_overrides, describe_model, open_training_stores,
                       run_training_command)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--latents", default="laq", help="name of the LAQ labels (<dataset>/latents/<name>/)")
    p.add_argument("--init", default=None, help="start from this policy checkpoint instead of --config")
    p.add_argument("--latent-horizon", type=int, default=None,
                   help="consecutive latent actions predicted per frame (default 1; with --init: the checkpoint's)")


def build(args: argparse.Namespace):
    """(model, train samples, validation samples, instruction table, description) for ``args``."""
    stores = open_training_stores(args)
    labels = [load_latent_labels(s.source.root, args.latents) for s in stores]
    shapes = {(lab.num_tokens, lab.codebook_size) for lab in labels}
    if len(shapes) > 1:
        raise ValueError(f"datasets carry LAQ labels of different shapes (tokens, codebook) {sorted(shapes)}")
    num_tokens, codebook = shapes.pop()
    gaps = {lab.frame_gap for lab in labels}
    if len(gaps) > 1:
        raise ValueError(f"datasets carry LAQ labels of different frame gaps {sorted(gaps)}")
    gap = gaps.pop()
    table = InstructionTable(stores)
    horizon = args.latent_horizon           # None: 1, or the --init checkpoint's
    if horizon is not None and horizon < 1:
        raise ValueError(f"--latent-horizon must be >= 1, got {horizon}")
    if args.init:
        model = LapaPolicy.from_pretrained(args.init)
        if horizon is not None and horizon != model.config.latent_horizon:
            raise ValueError(f"--latent-horizon {horizon}: {args.init} predicts {model.config.latent_horizon} "
                             "latent actions (a checkpoint keeps its horizon)")
        check_latents_fit(labels[0], model.config, args.init)
        model.config = model.config.replace(**checked_frame_size(stores, args, model.config))
    else:
        horizon = horizon or 1
        config = get_config(args.config, **config_overrides(args)).replace(
            latent_head=True, latent_num_tokens=num_tokens * horizon, latent_horizon=horizon,
            latent_codebook_size=codebook, action_dim=0,
            state_dim=0, latent_labels={k: v for k, v in labels[0].info.items()},
            **checked_frame_size(stores, args))
        model = LapaPolicy(config)
    train_parts: List = []
    val_parts: List = []
    for s, (store, lab) in enumerate(zip(stores, labels)):
        tokens = stack_latents(store, align_latents(store, lab), model.config.latent_horizon, gap)
        train_eps, val_eps = split_episodes(store, args.val_fraction, args.seed)
        train_parts.append(LatentSamples(store, tokens, train_eps, table.index[s]))
        val_parts.append(LatentSamples(store, tokens, val_eps, table.index[s]))
    train_set = ConcatSamples(train_parts)
    val_parts = [p for p in val_parts if len(p)]
    val_set = ConcatSamples(val_parts) if val_parts else None
    describe: Dict = {"stage": "latent-pretraining", **describe_model(model), "latent_tokens": num_tokens,
                      "codebook_size": codebook, "frame_gap": labels[0].info.get("frame_gap"),
                      "latent_horizon": model.config.latent_horizon,
                      "instructions": len(table)}
    return model, train_set, val_set, table, describe


def main(args: argparse.Namespace) -> int:
    return run_training_command(args, build, metric="latent_accuracy")
