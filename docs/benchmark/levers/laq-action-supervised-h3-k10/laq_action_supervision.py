"""The LAQ continued with an action loss on the target tasks' labelled demos (a lever measured once, kept
as its record; not part of the package).

Nikulin et al. (2025, "Latent action learning requires supervision in the presence of distractors") find
that a few action labels in LAQ training make its latents carry the action. This continues a trained LAQ
for --steps steps on its unlabelled video (the same reconstruction loss as `lapa laq train`) plus --weight x
the MSE of a linear head reading the quantized latent tokens of labelled demo pairs and predicting the
(standardized) mean action between the two frames, on the first --demos-per-task episodes of each task of
the demo dataset. Saves the continued LAQ (the head is dropped) to OUT.

    python laq_action_supervision.py LAQ VIDEO DEMOS OUT --weight 5 --steps 1500 --demos-per-task 10
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lapa_models.data.episodes import open_episodes
from lapa_models.laq.data import frame_pairs, gather, load_frames
from lapa_models.laq.modeling import LAQModel

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
for name in ("laq", "video", "demos", "out"):
    p.add_argument(name)
p.add_argument("--weight", type=float, default=5.0)
p.add_argument("--steps", type=int, default=1500)
p.add_argument("--demos-per-task", type=int, default=10)
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
rng = np.random.default_rng(0)
model = LAQModel.from_pretrained(args.laq)
cfg = model.config
gap = cfg.frame_gap
video = load_frames(open_episodes(args.video), cfg, progress=False)
demos = load_frames(open_episodes(args.demos), cfg, progress=False)
episodes = []
for task in sorted(set(demos.tasks)):
    episodes += [i for i, t in enumerate(demos.tasks) if t == task][:args.demos_per_task]
video_pairs = frame_pairs(video, gap)
demo_pairs = frame_pairs(demos, gap, episodes)
actions = np.mean([demos.actions[demo_pairs[:, 0] + j] for j in range(gap)], axis=0).astype(np.float32)
mean, std = actions.mean(0), actions.std(0) + 1e-6
head = torch.nn.Linear(cfg.num_latent_tokens * cfg.code_dim, actions.shape[1])
optimizer = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=cfg.learning_rate,
                             betas=(0.9, 0.99))
model.train()
for step in range(args.steps):
    frames_t, frames_k = gather(video, video_pairs[rng.integers(len(video_pairs), size=32)])
    output = model(frames_t, frames_k)
    loss, action_loss = output.loss, torch.tensor(0.0)
    if args.weight > 0:
        rows = rng.integers(len(demo_pairs), size=32)
        frames_t, frames_k = gather(demos, demo_pairs[rows])
        latents, _ = model.encode_latents(*model._preprocess_pair(frames_t, frames_k))
        quantized, _ = model.quantizer(latents)
        prediction = head(quantized.reshape(len(rows), -1))
        action_loss = F.mse_loss(prediction, torch.from_numpy((actions[rows] - mean) / std))
        loss = loss + args.weight * action_loss
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    optimizer.step()
    if step % 100 == 0 or step == args.steps - 1:
        print(json.dumps({"step": step, "reconstruction": float(output.loss.detach()),
                          "action": float(action_loss.detach())}), flush=True)
model.save_pretrained(Path(args.out))
