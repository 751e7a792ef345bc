"""Stage 3, action finetuning: a chunk of H robot actions from (image, instruction, state).

    # LAPA: from a latent-pretrained checkpoint (backbone, fusion and queries kept; new action head)
    lapa policy finetune --data data/sim/demo --init runs/policy/pretrain/final \\
        --out runs/policy/finetune --steps 2000
    # the baseline of the paper's comparison: the same architecture without latent pretraining
    lapa policy finetune --data data/sim/demo --init scratch --config small --out ...
    # with labelled play (random reaching, no task), from which a head reading latent actions learns what
    # each one does beyond the demonstrated tasks' motions
    lapa policy finetune --data data/sim/demo --init runs/policy/pretrain/final --action-reads-latents \
        --play-data data/sim/play --out ...
    # the simulated demo's policy (100 expert episodes per task at 128 px; fixed camera: colour jitter only)
    lapa policy finetune --data data/sim/demo_128 --init scratch --config small \
        --augment color --steps 2000 --batch-size 64 --out runs/policy/demo

Loss: L1 on normalized continuous actions (default) or cross-entropy over 256 per-dimension quantile bins
(``--action-head bins``, decoded to bin midpoints). Only successful episodes are used unless
``--all-episodes``. Action dimension, names, units, control rate and the normalization statistics come
from the data and are saved with the checkpoint.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np


from .configuration import get_config
from .data import (ActionChunkSamples, ConcatSamples, InstructionTable, LatentSamples, align_latents,
                   check_latents_fit, load_latent_labels, split_episodes, stack_latents)
from .modeling import LapaPolicy, policy_from_checkpoint_for_finetuning
from .normalization import NormalizationStats
from .training import (add_common_arguments, checked_frame_size, config_overrides, describe_model, open_training_stores,
                       run_training_command)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--init", required=True,
                   help="a latent-pretrained checkpoint folder, or 'scratch' (no latent pretraining: the baseline)")
    p.add_argument("--action-head", choices=["continuous", "bins"], default="continuous",
                   help="continuous: L1 on normalized actions; bins: the paper's 256 quantile bins")
    p.add_argument("--chunk-size", type=int, default=None, help="actions per prediction (default: the config's)")
    p.add_argument("--query-tokens", type=int, default=None,
                   help="--init scratch: learned query tokens the action head reads (default: the config's "
                        "latent_num_tokens); give a latent-pretrained model's count (x its latent horizon) to "
                        "compare the two at the same architecture")
    p.add_argument("--n-action-steps", type=int, default=None, help="actions select_action executes per chunk")
    p.add_argument("--all-episodes", action="store_true", help="also train on unsuccessful episodes")
    p.add_argument("--no-state", action="store_true", help="do not feed the robot state")
    p.add_argument("--max-episodes-per-task", type=int, default=None,
                   help="train on at most N episodes per task (few-demonstration experiments)")
    p.add_argument("--demos-per-task", type=int, default=None,
                   help="train on exactly K episodes of every task, drawn at random (--demo-seed); a task with "
                        "fewer is an error (few-shot benchmarks)")
    p.add_argument("--demo-seed", type=int, default=0, help="which K episodes --demos-per-task draws")
    p.add_argument("--freeze", choices=["none", "vision", "backbone"], default="none",
                   help="what stays frozen: vision = the vision tower; backbone = vision tower, fusion "
                        "transformer and queries (only the state projection and the heads train)")
    p.add_argument("--cotrain-data", nargs="+", default=None,
                   help="datasets whose pretraining objective is kept as an auxiliary loss while finetuning "
                        "(e.g. the unlabelled video the checkpoint was latent-pretrained on)")
    p.add_argument("--cotrain-target", choices=["latents", "actions"], default="latents",
                   help="the auxiliary objective: LAQ latent tokens (LAPA) or the data's own actions")
    p.add_argument("--cotrain-latents", default="laq", help="name of the LAQ labels of --cotrain-data")
    p.add_argument("--cotrain-weight", type=float, default=0.5, help="weight of the auxiliary loss")
    p.add_argument("--action-reads-latents", action="store_true",
                   help="the action head also reads the policy's predicted latent actions (needs a latent-pretrained "
                        "--init; its latent head is kept)")
    p.add_argument("--play-data", nargs="+", default=None,
                   help="labelled play (lapa data generate --play-steps; teleop with no task): every step also "
                        "trains on a batch of it, with no instruction; an action head that reads latent actions "
                        "is given the ones that followed (--play-latents), so it learns what each latent action "
                        "does from motion no task chose")
    p.add_argument("--play-latents", default="laq", help="name of the LAQ labels of --play-data")
    p.add_argument("--play-weight", type=float, default=1.0, help="weight of the play loss")
    p.add_argument("--action-latents-only", action="store_true",
                   help="the action head reads only the predicted latent actions, not the query outputs: a "
                        "latent -> action MLP that any task the latent head knows from video can reuse "
                        "(implies --action-reads-latents)")


def _dataset_facts(stores) -> Dict:
    infos = [s.source.info for s in stores]
    names = {tuple(i.action_names or ()) for i in infos}
    if len(names) > 1:
        raise ValueError(f"datasets have different action names {sorted(names)}")
    if not infos[0].action_names:
        raise ValueError(f"{stores[0].source.root}: dataset has no actions (unlabelled video)")
    fps = {float(i.fps) for i in infos}
    grippers = {json.dumps(i.gripper, sort_keys=True) for i in infos if "gripper" in (i.state_names or ())}
    if len(grippers) > 1:
        raise ValueError(f"datasets read the gripper state from joint_states differently: {sorted(grippers)}")
    return {"action_names": list(infos[0].action_names),
            "state_names": list(infos[0].state_names) if infos[0].state_names else None,
            "gripper": json.loads(grippers.pop()) if grippers else None,
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


def draw_demos(store, episodes: List[int], k: int, seed: int) -> List[int]:
    """Exactly ``k`` of ``episodes`` for every task, drawn at random; a task with fewer is an error."""
    by_task: Dict[str, List[int]] = {}
    for e in episodes:
        by_task.setdefault(store.tasks[e], []).append(e)
    short = {t: len(es) for t, es in by_task.items() if len(es) < k}
    if short:
        raise ValueError(f"{store.source.root}: --demos-per-task {k} but these tasks have fewer usable "
                         f"(successful, training-split) episodes: {short}")
    rng = np.random.default_rng(seed)
    out: List[int] = []
    for task in sorted(by_task):
        out.extend(int(e) for e in rng.choice(by_task[task], size=k, replace=False))
    return sorted(out)


def freeze(model: LapaPolicy, what: str) -> None:
    """Freeze parts of a policy for finetuning (see --freeze)."""
    if what in ("vision", "backbone"):
        model.vision.tower.requires_grad_(False)
    if what == "backbone":
        for part in (model.vision, model.instruction_proj, model.fusion, model.final_norm):
            part.requires_grad_(False)
        model.queries.requires_grad_(False)


def _latent_rows(store, name: str, model: LapaPolicy, init: str):
    """The store's LAQ labels ``name``, checked against the model, stacked over its latent horizon: one row
    of tokens per frame (stack_latents)."""
    labels = load_latent_labels(store.source.root, name)
    check_latents_fit(labels, model.config, f"{init} on {store.source.root}")
    return stack_latents(store, align_latents(store, labels), model.config.latent_horizon, labels.frame_gap)


def build(args: argparse.Namespace):
    stores = open_training_stores(args)
    play = getattr(args, "play_data", None)
    play_weight = float(getattr(args, "play_weight", 1.0))
    if play and not (np.isfinite(play_weight) and play_weight > 0):
        raise ValueError(f"--play-weight must be a finite number > 0, got {play_weight}")
    play_stores = open_training_stores(args, play) if play else []
    facts = _dataset_facts(stores + play_stores)
    cotrain = getattr(args, "cotrain_data", None)
    cotrain_stores = open_training_stores(args, cotrain) if cotrain else []
    table = InstructionTable(stores + cotrain_stores + play_stores)
    splits = [split_episodes(s, args.val_fraction, args.seed, success_only=not args.all_episodes) for s in stores]
    if args.max_episodes_per_task:
        splits = [(_per_task(store, train_eps, args.max_episodes_per_task), val_eps)
                  for store, (train_eps, val_eps) in zip(stores, splits)]
    if getattr(args, "demos_per_task", None):
        splits = [(draw_demos(store, train_eps, args.demos_per_task, args.demo_seed), val_eps)
                  for store, (train_eps, val_eps) in zip(stores, splits)]
    # Statistics from the training episodes only: validation stays unseen.
    actions, states = [], []
    for store, (train_eps, _) in zip(stores, splits):
        frames = np.concatenate([np.arange(store.starts[e], store.starts[e] + store.lengths[e]) for e in train_eps])
        actions.append(store.actions[frames])
        if store.states is not None:
            states.append(store.states[frames])
    for store in play_stores:   # every play episode trains (none is a success), so its actions set the scale too
        actions.append(store.actions[:])
        if store.states is not None:
            states.append(store.states[:])
    # A head that reads only the latent actions takes no state token: the fusion must see what it saw in
    # latent pretraining on video (which has no robot state), or a new token would shift its latents.
    use_state = not args.no_state and len(states) == len(stores) + len(play_stores) and \
        not getattr(args, "action_latents_only", False)
    changes = dict(action_head=args.action_head, chunk_size=args.chunk_size, n_action_steps=args.n_action_steps,
                   use_state=use_state, **facts)
    base = get_config(args.config, **config_overrides(args)) if args.init == "scratch" else None
    num_bins = base.num_bins if base is not None else 256
    stats = NormalizationStats.from_data(np.concatenate(actions),
                                         np.concatenate(states) if use_state else None, num_bins=num_bins)
    latents_only = bool(getattr(args, "action_latents_only", False))
    reads_latents = bool(getattr(args, "action_reads_latents", False)) or latents_only
    keep_latents = (bool(cotrain) and args.cotrain_target == "latents") or reads_latents
    if keep_latents and args.init == "scratch":
        raise ValueError("--cotrain-target latents and --action-reads-latents/--action-latents-only need a "
                         "latent-pretrained --init (scratch has no latent head)")
    if reads_latents:
        changes["action_reads_latents"] = True
    if latents_only:
        changes["action_reads_queries"] = False
    queries = getattr(args, "query_tokens", None)
    if queries is not None and (args.init != "scratch" or queries < 1):
        raise ValueError(f"--query-tokens {queries}: only for --init scratch, and >= 1 (a pretrained model keeps "
                         "its own)")
    if args.init == "scratch":
        if queries is not None:
            base = base.replace(latent_num_tokens=queries, latent_horizon=1)
        model = LapaPolicy(base.replace(latent_head=False, **{k: v for k, v in changes.items() if v is not None}),
                           stats)
    else:
        if not Path(args.init).is_dir():
            raise FileNotFoundError(f"--init {args.init}: not a checkpoint folder (or give 'scratch')")
        model = policy_from_checkpoint_for_finetuning(args.init, stats, keep_latent_head=keep_latents, **changes)
    model.config = model.config.replace(
        **checked_frame_size(stores, args, None if args.init == "scratch" else model.config))
    freeze(model, getattr(args, "freeze", "none"))
    train_parts: List = []
    val_parts: List = []
    for s, (store, (train_eps, val_eps)) in enumerate(zip(stores, splits)):
        train_parts.append(ActionChunkSamples(store, model.config.chunk_size, train_eps, table.index[s], use_state))
        if val_eps:
            val_parts.append(ActionChunkSamples(store, model.config.chunk_size, val_eps, table.index[s], use_state))
    train_set = ConcatSamples(train_parts)
    val_set = ConcatSamples(val_parts) if val_parts else None
    aux = None
    if cotrain:
        aux_parts: List = []
        offset = len(stores)
        for s, store in enumerate(cotrain_stores):
            episodes = list(range(store.num_episodes))
            ids = table.index[offset + s]
            if args.cotrain_target == "latents":
                tokens = _latent_rows(store, args.cotrain_latents, model, args.init)
                aux_parts.append(LatentSamples(store, tokens, episodes, ids))
            else:
                aux_parts.append(ActionChunkSamples(store, model.config.chunk_size, episodes, ids, use_state))
        aux = (ConcatSamples(aux_parts), float(args.cotrain_weight))
    play_set = None
    if play_stores:
        play_parts: List = []
        offset = len(stores) + len(cotrain_stores)
        for s, store in enumerate(play_stores):
            given = _latent_rows(store, args.play_latents, model, args.init) \
                if model.config.action_reads_latents else None
            play_parts.append(ActionChunkSamples(store, model.config.chunk_size, list(range(store.num_episodes)),
                                                 table.index[offset + s], use_state, latent_input=given))
        play_set = ConcatSamples(play_parts)
    describe = {"stage": "action-finetuning", "init": args.init, **describe_model(model),
                "action_head": model.config.action_head, "chunk_size": model.config.chunk_size,
                "action_dim": model.config.action_dim, "state_dim": model.config.state_dim,
                "episodes": sum(len(t) for t, _ in splits), "instructions": len(table),
                "freeze": getattr(args, "freeze", "none"),
                "cotrain": None if aux is None else {"data": cotrain, "target": args.cotrain_target,
                                                     "weight": aux[1], "samples": len(aux[0])},
                "play": None if play_set is None else {"data": play, "weight": play_weight, "samples": len(play_set),
                                                       "latents_given": model.config.action_reads_latents}}
    streams = ([(aux[0], aux[1], "aux")] if aux is not None else []) + \
        ([(play_set, play_weight, "play")] if play_set is not None else [])
    return model, train_set, val_set, table, describe, streams or None


def main(args: argparse.Namespace) -> int:
    return run_training_command(args, build, metric="action_l1")
