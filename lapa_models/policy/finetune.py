"""Stage 3, action finetuning: a chunk of H robot actions from (image, instruction, state).

    # LAPA: from a latent-pretrained checkpoint (backbone, fusion and queries kept; new action head)
    python -m lapa_models.policy.finetune --data data/sim/demo --init runs/policy/pretrain/final \\
        --out runs/policy/finetune --steps 2000
    # the baseline of the paper's comparison: the same architecture without latent pretraining
    python -m lapa_models.policy.finetune --data data/sim/demo --init scratch --config small --out ...
    # the simulated demo's policy (100 expert episodes per task at 128 px; fixed camera: colour jitter only)
    python -m lapa_models.policy.finetune --data data/sim/demo_128 --init scratch --config small \
        --augment color --steps 2000 --batch-size 64 --out runs/policy/demo

Loss: L1 on normalized continuous actions (default) or cross-entropy over 256 per-dimension quantile bins
(``--action-head bins``, decoded to bin midpoints). Only successful episodes are used unless
``--all-episodes``. Action dimension, names, units, control rate and the normalization statistics come
from the data and are saved with the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from .configuration import get_config
from .data import ActionChunkSamples, ConcatSamples, InstructionTable, split_episodes
from .modeling import LapaPolicy, policy_from_checkpoint_for_finetuning
from .normalization import NormalizationStats
from .training import add_common_arguments, config_overrides, describe_model, open_training_stores, train


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--init", required=True,
                   help="a latent-pretrained checkpoint folder, or 'scratch' (no latent pretraining: the baseline)")
    p.add_argument("--action-head", choices=["continuous", "bins"], default="continuous",
                   help="continuous: L1 on normalized actions; bins: the paper's 256 quantile bins")
    p.add_argument("--chunk-size", type=int, default=None, help="actions per prediction (default: the config's)")
    p.add_argument("--n-action-steps", type=int, default=None, help="actions select_action executes per chunk")
    p.add_argument("--all-episodes", action="store_true", help="also train on unsuccessful episodes")
    p.add_argument("--no-state", action="store_true", help="do not feed the robot state")
    p.add_argument("--max-episodes-per-task", type=int, default=None,
                   help="train on at most N episodes per task (few-demonstration experiments)")


def _dataset_facts(stores) -> Dict:
    infos = [s.source.info for s in stores]
    names = {tuple(i.action_names or ()) for i in infos}
    if len(names) > 1:
        raise ValueError(f"datasets have different action names {sorted(names)}")
    if not infos[0].action_names:
        raise ValueError(f"{stores[0].source.root}: dataset has no actions (unlabelled video)")
    fps = {float(i.fps) for i in infos}
    return {"action_names": list(infos[0].action_names),
            "state_names": list(infos[0].state_names) if infos[0].state_names else None,
            "action_units": str(infos[0].extra.get("action_units", "")),
            "control_rate_hz": fps.pop() if len(fps) == 1 else None}


def _per_task(store, episodes: List[int], limit: int) -> List[int]:
    kept: Dict[str, int] = {}
    out = []
    for e in episodes:
        task = store.tasks[e]
        if kept.get(task, 0) < limit:
            kept[task] = kept.get(task, 0) + 1
            out.append(e)
    return out


def build(args: argparse.Namespace):
    stores = open_training_stores(args)
    facts = _dataset_facts(stores)
    table = InstructionTable(stores)
    splits = [split_episodes(s, args.val_fraction, args.seed, success_only=not args.all_episodes) for s in stores]
    if args.max_episodes_per_task:
        splits = [(_per_task(store, train_eps, args.max_episodes_per_task), val_eps)
                  for store, (train_eps, val_eps) in zip(stores, splits)]
    # Statistics from the training episodes only: validation stays unseen.
    actions, states = [], []
    for store, (train_eps, _) in zip(stores, splits):
        frames = np.concatenate([np.arange(store.starts[e], store.starts[e] + store.lengths[e]) for e in train_eps])
        actions.append(store.actions[frames])
        if store.states is not None:
            states.append(store.states[frames])
    use_state = not args.no_state and len(states) == len(stores)
    changes = dict(action_head=args.action_head, chunk_size=args.chunk_size, n_action_steps=args.n_action_steps,
                   use_state=use_state, **facts)
    base = get_config(args.config, **config_overrides(args)) if args.init == "scratch" else None
    num_bins = base.num_bins if base is not None else 256
    stats = NormalizationStats.from_data(np.concatenate(actions),
                                         np.concatenate(states) if use_state else None, num_bins=num_bins)
    if args.init == "scratch":
        model = LapaPolicy(base.replace(latent_head=False, **{k: v for k, v in changes.items() if v is not None}),
                           stats)
    else:
        if not Path(args.init).is_dir():
            raise FileNotFoundError(f"--init {args.init}: not a checkpoint folder (or give 'scratch')")
        model = policy_from_checkpoint_for_finetuning(args.init, stats, **changes)
    train_parts: List = []
    val_parts: List = []
    for s, (store, (train_eps, val_eps)) in enumerate(zip(stores, splits)):
        train_parts.append(ActionChunkSamples(store, model.config.chunk_size, train_eps, table.index[s], use_state))
        if val_eps:
            val_parts.append(ActionChunkSamples(store, model.config.chunk_size, val_eps, table.index[s], use_state))
    train_set = ConcatSamples(train_parts)
    val_set = ConcatSamples(val_parts) if val_parts else None
    describe = {"stage": "action-finetuning", "init": args.init, **describe_model(model),
                "action_head": model.config.action_head, "chunk_size": model.config.chunk_size,
                "action_dim": model.config.action_dim, "state_dim": model.config.state_dim,
                "episodes": sum(len(t) for t, _ in splits), "instructions": len(table)}
    return model, train_set, val_set, table, describe


def main(args: argparse.Namespace) -> int:
    model, train_set, val_set, table, describe = build(args)
    summary = train(model, train_set, val_set, table, args, metric="action_l1", describe=describe)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
