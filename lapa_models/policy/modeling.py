"""The LAPA policy: (camera image, instruction[, robot state]) -> LAQ latent tokens or a chunk of actions.

Read top-down, small parts first:

    (towers.py)     loads the vision tower (SigLIP, CLIP, ...) and the text tower through transformers
    VisionTokens    the tower's patch tokens, average-pooled to a g x g grid, projected to the fusion width
    InstructionEncoder   text tower + attention-masked mean pooling (+ L2 norm): one vector per instruction
    FusionBlock     a pre-norm transformer block
    ActionHead      the small MLP of the paper's summary: query outputs -> H x A actions (or H x A x 256 bins)
    LapaPolicy      the whole model: forward (losses), predict_latents, predict_action_chunk, select_action,
                    save_pretrained / from_pretrained (config.json + model.safetensors + normalization.json)

The fusion transformer reads [vision tokens, instruction token, state token, T query tokens]; query i
predicts latent token i (stage 2, its own small head over a codebook of C as in the paper) and the T query
outputs together feed the action head (stage 3). The instruction embedding is the frozen encoder's pooled
vector, projected inside the per-frame network, so the instruction encoder runs once per new instruction
and the per-frame graph takes its output as an input.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .configuration import PolicyConfig
from .normalization import FILE_NAME as STATS_FILE
from .normalization import NormalizationStats
from .towers import load_text_tower, load_tokenizer, load_vision_tower

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
class VisionTokens(nn.Module):
    """Patch tokens of a vision tower, pooled to a g x g grid and projected to the fusion width."""

    def __init__(self, tower: nn.Module, image_size: int, pool_grid: int, width: int):
        super().__init__()
        self.tower = tower
        cfg = tower.config
        if image_size % int(cfg.patch_size):
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {cfg.patch_size}")
        self.patch_grid = image_size // int(cfg.patch_size)
        self.pool_grid = pool_grid if 0 < pool_grid < self.patch_grid else self.patch_grid
        if self.patch_grid % self.pool_grid:
            raise ValueError(f"vision_pool_grid {pool_grid} must divide the patch grid {self.patch_grid}")
        self.num_tokens = self.pool_grid ** 2
        self.proj = nn.Linear(int(cfg.hidden_size), width)
        self.pos = nn.Parameter(torch.randn(self.num_tokens, width) * 0.02)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values=pixel_values).last_hidden_state
        patches = self.patch_grid ** 2
        hidden = hidden[:, hidden.shape[1] - patches:]   # drops CLS/register tokens where a tower has them
        if self.pool_grid != self.patch_grid:
            b, _, d = hidden.shape
            k = self.patch_grid // self.pool_grid
            grid = hidden.transpose(1, 2).reshape(b, d, self.patch_grid, self.patch_grid)
            hidden = F.avg_pool2d(grid, k).flatten(2).transpose(1, 2)
        return self.proj(hidden) + self.pos


class InstructionEncoder(nn.Module):
    """Token ids -> one vector: attention-masked mean of the last hidden states (sentence-transformers style)."""

    def __init__(self, tower: nn.Module, normalize: bool):
        super().__init__()
        self.tower = tower
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.normalize:
            pooled = F.normalize(pooled.float(), dim=-1).to(hidden.dtype)
        return pooled


class FusionBlock(nn.Module):
    """Pre-norm transformer block (self-attention over all fusion tokens + MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ActionHead(nn.Module):
    """Small MLP: the T query outputs, concatenated -> (H, A) normalized actions or (H, A, K) bin logits."""

    def __init__(self, in_dim: int, hidden: int, chunk_size: int, action_dim: int, num_bins: int = 0):
        super().__init__()
        self.chunk_size, self.action_dim, self.num_bins = chunk_size, action_dim, num_bins
        out = chunk_size * action_dim * max(1, num_bins)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, out))

    def forward(self, queries: Optional[torch.Tensor], extra: Optional[torch.Tensor] = None) -> torch.Tensor:
        """queries (B, T, D) and/or extra (B, ...) features (either may be None, not both)."""
        dtype = self.mlp[0].weight.dtype
        parts = [t.flatten(1).to(dtype) for t in (queries, extra) if t is not None]
        y = self.mlp(parts[0] if len(parts) == 1 else torch.cat(parts, 1))
        shape = (y.shape[0], self.chunk_size, self.action_dim) + ((self.num_bins,) if self.num_bins else ())
        return y.reshape(shape)


# ============================================================================ the policy
ImageInput = Union[np.ndarray, torch.Tensor]


class LapaPolicy(nn.Module):
    """The vision-language policy of stages 2 and 3.

    Built from a config whose ``vision_config``/``text_config`` are unset, the towers come from
    ``vision_model``/``text_model`` (pretrained where those name weights). Built from a saved config,
    the architecture is rebuilt and the weights come from the checkpoint (``from_pretrained``).
    """

    def __init__(self, config: PolicyConfig, stats: Optional[NormalizationStats] = None):
        super().__init__()
        vision_tower, config = load_vision_tower(config)
        text_tower, config, tokenizer = load_text_tower(config)
        if stats is not None:
            config = config.replace(action_dim=stats.action_dim,
                                    state_dim=stats.state_dim if config.use_state else 0)
        if config.action_dim and stats is None:
            raise ValueError("a policy with an action head needs normalization statistics (stats=...)")
        self.config = config
        self.stats = stats
        self.tokenizer_source = tokenizer
        self._tokenizer = None
        self._action_queue: List[np.ndarray] = []
        width = config.hidden_size

        self.vision = VisionTokens(vision_tower, config.image_size, config.vision_pool_grid, width)
        self.instruction_encoder = InstructionEncoder(text_tower, config.normalize_instruction)
        self.instruction_proj = nn.Linear(config.instruction_dim, width)
        self.state_proj = nn.Linear(config.state_dim, width) if config.state_dim else None
        self.queries = nn.Parameter(torch.randn(config.num_query_tokens, width) * 0.02)
        self.fusion = nn.ModuleList(FusionBlock(width, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(width)
        self.latent_head = nn.Linear(width, config.latent_codebook_size) if config.latent_head else None
        self.action_head = None
        if config.action_dim:
            bins = config.num_bins if config.action_head == "bins" else 0
            if config.action_reads_latents and not config.latent_head:
                raise ValueError("action_reads_latents needs the latent head (latent_head=True)")
            extra = config.latent_num_tokens * config.latent_codebook_size if config.action_reads_latents else 0
            queries_in = config.num_query_tokens * width if config.action_reads_queries else 0
            self.action_head = ActionHead(queries_in + extra, config.action_head_hidden,
                                          config.chunk_size, config.action_dim, bins)

        # Preprocessing constants live in the graph (non-persistent: normalization.json is their source).
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        if stats is not None:
            self._register_stats(stats)
        self._apply_freezing()

    def _register_stats(self, stats: NormalizationStats) -> None:
        cfg = self.config
        scale, offset = stats.action_scale_offset(cfg.action_normalization)
        as_t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        self.register_buffer("action_scale", as_t(scale), persistent=False)
        self.register_buffer("action_offset", as_t(offset), persistent=False)
        self.register_buffer("action_low", as_t(stats.action_min), persistent=False)
        self.register_buffer("action_high", as_t(stats.action_max), persistent=False)
        if stats.num_bins != cfg.num_bins and cfg.action_head == "bins":
            raise ValueError(f"statistics have {stats.num_bins} bins, config asks for {cfg.num_bins}")
        self.register_buffer("bin_centers", as_t(stats.bin_centers), persistent=False)
        if cfg.state_dim:
            if stats.state_dim != cfg.state_dim:
                raise ValueError(f"statistics describe {stats.state_dim} state values, config says {cfg.state_dim}")
            self.register_buffer("state_mean", as_t(stats.state_mean), persistent=False)
            self.register_buffer("state_std", as_t(stats.state_std), persistent=False)

    def _apply_freezing(self) -> None:
        if self.config.freeze_vision:
            self.vision.tower.requires_grad_(False)
        if self.config.freeze_text:
            self.instruction_encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> "LapaPolicy":
        super().train(mode)
        # Frozen towers stay in eval mode (no dropout) while the rest trains.
        if self.config.freeze_vision:
            self.vision.tower.eval()
        if self.config.freeze_text:
            self.instruction_encoder.eval()
        return self

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.queries.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.queries.dtype

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_source)
        return self._tokenizer

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ preprocessing
    def prepare_images(self, images: ImageInput, always_resize: bool = False) -> torch.Tensor:
        """uint8 (B, H, W, 3) RGB at any size -> float (B, 3, S, S) in [0, 1] at the model's size.

        The same antialiased bilinear resize runs in training and inside the exported graph (which always
        resizes, ``always_resize``: at the model's size it is the identity)."""
        x = torch.as_tensor(images, device=self.device)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (B, H, W, 3) RGB, got {x.dtype} {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float() / 255.0
        size = self.config.image_size
        if always_resize or x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def tokenize(self, instructions: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Token ids and mask; an instruction longer than ``max_instruction_tokens`` is an error."""
        if isinstance(instructions, str):
            instructions = [instructions]
        enc = self.tokenizer(list(instructions), padding=True, truncation=False, return_tensors="pt")
        limit = self.config.max_instruction_tokens
        lengths = enc["attention_mask"].sum(1)
        if int(lengths.max()) > limit:
            i = int(lengths.argmax())
            raise ValueError(f"instruction {instructions[i][:60]!r} has {int(lengths[i])} tokens, "
                             f"more than the encoder's limit of {limit}")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    def encode_instructions(self, instructions: Sequence[str]) -> torch.Tensor:
        """(B, E) instruction embeddings (what the runtime's instruction encoder computes)."""
        tokens = self.tokenize(instructions)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_text):
            return self.instruction_encoder(**tokens).float()

    # ------------------------------------------------------------------ the network
    def fuse(self, pixels: torch.Tensor, instruction_embedding: torch.Tensor,
             state: Optional[torch.Tensor] = None, require_state: bool = True) -> torch.Tensor:
        """pixels (B, 3, S, S) in [0, 1], embedding (B, E), state (B, S) in robot units -> (B, T, D) queries.

        ``require_state=False`` lets a policy that takes the state run without it (its state token left
        out): latent targets on video, which has no robot state, while finetuning with an auxiliary loss."""
        dtype = self.compute_dtype
        b = pixels.shape[0]
        pixels = ((pixels - self.image_mean) / self.image_std).to(dtype)
        tokens = [self.vision(pixels), self.instruction_proj(instruction_embedding.to(dtype)).unsqueeze(1)]
        if self.state_proj is not None and (state is not None or require_state):
            if state is None:
                raise ValueError(f"this policy takes the robot state ({self.config.state_dim} values)")
            state = ((state.float() - self.state_mean) / self.state_std).to(dtype)
            tokens.append(self.state_proj(state).unsqueeze(1))
        tokens.append(self.queries.unsqueeze(0).expand(b, -1, -1))
        x = torch.cat(tokens, 1)
        for block in self.fusion:
            x = block(x)
        return self.final_norm(x[:, -self.config.num_query_tokens:])

    def latent_logits(self, queries: torch.Tensor) -> torch.Tensor:
        if self.latent_head is None:
            raise RuntimeError("this policy has no latent head (it was finetuned for actions)")
        return self.latent_head(queries).float()             # (B, T, C)

    def action_outputs(self, queries: torch.Tensor, latent_input: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``latent_input`` (B, T) int, training only: where >= 0, the latent action that actually followed
        (one-hot) replaces the prediction the action head reads (labelled play, whose instruction says
        nothing of where the arm went)."""
        if self.action_head is None:
            raise RuntimeError("this policy has no action head (latent-pretrained only): finetune it first")
        extra = None
        if self.config.action_reads_latents:
            # The policy's own latent-action prediction (probabilities per token) as an input of the
            # action head; detached so the latent head keeps the meaning the latent loss gives it.
            extra = torch.softmax(self.latent_head(queries).float(), -1).detach()
            if latent_input is not None:
                given = latent_input.to(device=extra.device, dtype=torch.int64)
                if given.shape != extra.shape[:2]:
                    raise ValueError(f"latent_input has shape {tuple(given.shape)}, the latent head predicts "
                                     f"{tuple(extra.shape[:2])} tokens per sample")
                one_hot = F.one_hot(given.clamp(min=0), extra.shape[-1]).to(extra.dtype)
                extra = torch.where((given >= 0).unsqueeze(-1), one_hot, extra)
        return self.action_head(queries if self.config.action_reads_queries else None,
                                extra).float()                 # (B, H, A) normalized or (B, H, A, K) logits

    def decode_actions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Head outputs -> actions in robot units (B, H, A)."""
        if self.config.action_head == "bins":
            index = outputs.argmax(-1)                         # (B, H, A)
            centers = self.bin_centers.unsqueeze(0).unsqueeze(0).expand(index.shape[0], index.shape[1], -1, -1)
            return torch.gather(centers, 3, index.unsqueeze(-1)).squeeze(-1)
        actions = outputs * self.action_scale + self.action_offset
        if self.config.clip_actions:
            actions = torch.minimum(torch.maximum(actions, self.action_low), self.action_high)
        return actions

    def per_frame(self, image: torch.Tensor, instruction_embedding: torch.Tensor,
                  state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """uint8 (B, H, W, 3) + embedding (B, E) [+ state (B, S)] -> (B, H, A) actions: the exported graph."""
        return self.decode_actions(self.action_outputs(self.fuse(self.prepare_images(image),
                                                                 instruction_embedding, state)))

    # ------------------------------------------------------------------ training
    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Losses and metrics for a batch.

        batch: "pixels" float (B, 3, S, S) in [0, 1] (augmented) or "image" uint8 (B, H, W, 3);
               "instruction_embedding" (B, E) or "input_ids" + "attention_mask"; "state" (B, S) if used;
               targets: "latent_tokens" int (B, T) and/or "actions" (B, H, A) robot units + "action_is_pad" (B, H).
        """
        pixels = batch["pixels"] if "pixels" in batch else self.prepare_images(batch["image"])
        if "instruction_embedding" in batch:
            embedding = batch["instruction_embedding"]
        else:
            embedding = self.instruction_encoder(batch["input_ids"], batch["attention_mask"])
        queries = self.fuse(pixels, embedding, batch.get("state"), require_state="actions" in batch)
        out: Dict[str, torch.Tensor] = {}
        losses = []
        if "latent_tokens" in batch:
            logits = self.latent_logits(queries)
            target = batch["latent_tokens"].to(torch.int64)
            # -1: a later latent action of a horizon that runs past the episode's end (not a target)
            out["latent_loss"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-1)
            labelled = target >= 0
            out["latent_accuracy"] = ((logits.argmax(-1) == target) & labelled).float().sum() / \
                labelled.float().sum().clamp(min=1.0)
            losses.append(out["latent_loss"])
        if "actions" in batch:
            outputs = self.action_outputs(queries, batch.get("latent_input"))
            actions = batch["actions"].float()
            valid = (~batch["action_is_pad"].bool()).float() if "action_is_pad" in batch \
                else torch.ones(actions.shape[:2], device=actions.device)
            denominator = valid.sum().clamp(min=1.0) * actions.shape[-1]
            if self.config.action_head == "bins":
                labels = self._actions_to_bins(actions)
                ce = F.cross_entropy(outputs.permute(0, 3, 1, 2), labels, reduction="none")  # (B, H, A)
                out["action_loss"] = (ce * valid.unsqueeze(-1)).sum() / denominator
            else:
                target = (actions - self.action_offset) / self.action_scale
                l1 = (outputs - target).abs()
                out["action_loss"] = (l1 * valid.unsqueeze(-1)).sum() / denominator
            with torch.no_grad():
                decoded = self.decode_actions(outputs.detach())
                out["action_l1"] = ((decoded - actions).abs() * valid.unsqueeze(-1)).sum() / denominator
            losses.append(out["action_loss"])
        if not losses:
            raise ValueError("batch has no targets: give 'latent_tokens' and/or 'actions'")
        out["loss"] = sum(losses)
        return out

    def _actions_to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        # Nearest bin midpoint per dimension (see normalization.py).
        return (actions.unsqueeze(-1) - self.bin_centers).abs().argmin(-1)

    # ------------------------------------------------------------------ inference
    def _embedding(self, instructions: Union[str, Sequence[str], torch.Tensor, np.ndarray], batch: int) -> torch.Tensor:
        if isinstance(instructions, (torch.Tensor, np.ndarray)):
            e = torch.as_tensor(instructions, dtype=torch.float32, device=self.device)
            e = e.unsqueeze(0) if e.ndim == 1 else e
        else:
            texts = [instructions] if isinstance(instructions, str) else list(instructions)
            e = self.encode_instructions(texts)
        return e.expand(batch, -1) if e.shape[0] == 1 and batch > 1 else e

    def _state(self, state, batch: int) -> Optional[torch.Tensor]:
        if state is None:
            return None
        s = torch.as_tensor(np.asarray(state, np.float32), device=self.device)
        s = s.unsqueeze(0) if s.ndim == 1 else s
        return s.expand(batch, -1) if s.shape[0] == 1 and batch > 1 else s

    @torch.no_grad()
    def predict_latents(self, images: ImageInput, instructions, state=None) -> torch.Tensor:
        """(B, T) most likely LAQ latent tokens for (image, instruction); T = latent_num_tokens (latent_horizon
        consecutive latent actions, in order)."""
        pixels = self.prepare_images(images)
        b = pixels.shape[0]
        queries = self.fuse(pixels, self._embedding(instructions, b), self._state(state, b))
        return self.latent_logits(queries).argmax(-1)

    @torch.no_grad()
    def predict_action_chunk(self, images: ImageInput, instructions, state=None) -> torch.Tensor:
        """(B, H, A) actions in robot units. ``instructions``: text(s) or precomputed (B, E) embeddings."""
        images = torch.as_tensor(images)
        b = 1 if images.ndim == 3 else images.shape[0]
        return self.per_frame(images.to(self.device), self._embedding(instructions, b), self._state(state, b))

    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self._action_queue = []

    @torch.no_grad()
    def select_action(self, image: ImageInput, instruction, state=None) -> np.ndarray:
        """One action (A,) for one frame: predicts a chunk every ``n_action_steps`` frames, executes it in order."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(image, instruction, state)[0].cpu().numpy()
            self._action_queue = list(chunk[: self.config.n_action_steps])
        return self._action_queue.pop(0)

    def set_compute_dtype(self, dtype: torch.dtype) -> "LapaPolicy":
        """Run the networks in ``dtype`` (e.g. float16) while preprocessing and statistics stay float32."""
        for part in (self.vision, self.instruction_encoder, self.instruction_proj, self.state_proj, self.fusion,
                     self.final_norm, self.latent_head, self.action_head):
            if part is not None:
                part.to(dtype)
        self.queries.data = self.queries.data.to(dtype)
        return self

    # ------------------------------------------------------------------ checkpoints
    def frozen_pretrained_prefixes(self) -> List[str]:
        """Weights that are frozen copies of a pretrained tower, reloadable from its source."""
        prefixes = []
        if self.config.freeze_text and not self.config.text_model.startswith("config:"):
            prefixes.append("instruction_encoder.tower.")
        if self.config.freeze_vision and not self.config.vision_model.startswith("config:"):
            prefixes.append("vision.tower.")
        return prefixes

    def save_pretrained(self, directory: str | Path, slim: bool = False) -> Path:
        """config.json + model.safetensors + normalization.json + tokenizer/ (no pickles).

        slim: leave out the frozen pretrained towers (e.g. the 22M-parameter MiniLM), which
        from_pretrained reloads from their source (the installed package, the hub, a folder): a small
        policy then ships in a few MB."""
        import json as _json

        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        excluded = self.frozen_pretrained_prefixes() if slim else []
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()
                 if not k.startswith(tuple(excluded))}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={
            "format": "pt", "producer": "lapa_models.policy", "excluded_prefixes": _json.dumps(excluded)})
        tokenizer_dir = directory / TOKENIZER_DIR
        if Path(self.tokenizer_source).resolve() != tokenizer_dir.resolve():
            if tokenizer_dir.exists():
                shutil.rmtree(tokenizer_dir)
            self.tokenizer.save_pretrained(str(tokenizer_dir))
        self.config.replace(tokenizer=TOKENIZER_DIR).save(directory / CONFIG_FILE)
        if self.stats is not None:
            self.stats.save(directory / STATS_FILE)
        elif (directory / STATS_FILE).exists():
            (directory / STATS_FILE).unlink()
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "LapaPolicy":
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: not a policy checkpoint folder")
        config = PolicyConfig.load(directory / CONFIG_FILE)
        stats = NormalizationStats.load(directory / STATS_FILE) if (directory / STATS_FILE).is_file() else None
        if config.action_dim and stats is None:
            raise FileNotFoundError(f"{directory / STATS_FILE}: missing (the policy has an action head)")
        config = config.replace(tokenizer=_tokenizer_path(directory, config.tokenizer))
        model = cls(config, stats)
        excluded = _excluded_prefixes(directory / WEIGHTS_FILE)
        missing, unexpected = model.load_weights(directory / WEIGHTS_FILE, strict=True, skip_prefixes=excluded)
        # A slim checkpoint left out frozen pretrained towers: load them from their source.
        if "instruction_encoder.tower." in excluded:
            tower, _, _ = load_text_tower(config.replace(text_config=None))
            model.instruction_encoder.tower.load_state_dict(tower.state_dict())
        if "vision.tower." in excluded:
            tower, _ = load_vision_tower(config.replace(vision_config=None))
            model.vision.tower.load_state_dict(tower.state_dict())
        return model.to(map_location)

    def load_weights(self, path: str | Path, strict: bool = True,
                     skip_prefixes: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
        """Load a model.safetensors; ``skip_prefixes`` leaves those parts as initialized (a new head)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: policy weights are missing")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path}: corrupt or truncated weights file ({e})") from e
        state = {k: v for k, v in state.items() if not k.startswith(tuple(skip_prefixes))}
        own = self.state_dict()
        mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                      for k, v in state.items() if k in own and own[k].shape != v.shape]
        if mismatched:
            raise ValueError(f"{path}: weights do not fit this architecture: {mismatched[:5]}")
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(tuple(skip_prefixes))]
        if strict and (missing or result.unexpected_keys):
            raise ValueError(f"{path}: weights do not match the config: missing {missing[:5]}, "
                             f"unexpected {list(result.unexpected_keys)[:5]}")
        return list(result.missing_keys), list(result.unexpected_keys)


def _excluded_prefixes(path: Path) -> List[str]:
    """Prefixes a slim checkpoint left out (its frozen pretrained towers), from the file's metadata."""
    import json as _json

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(_json.loads((f.metadata() or {}).get("excluded_prefixes", "[]")))
    except (SafetensorError, OSError, ValueError):
        return []  # load_weights reports the unreadable file


def _tokenizer_path(directory: Path, tokenizer: str) -> str:
    candidate = directory / tokenizer
    return str(candidate) if tokenizer and candidate.is_dir() else tokenizer


def policy_from_checkpoint_for_finetuning(init: str | Path, stats: NormalizationStats,
                                          keep_latent_head: bool = False, **config_changes: Any) -> LapaPolicy:
    """A pretrained checkpoint with a new action head: backbone, fusion and queries are kept; the latent
    head is dropped unless ``keep_latent_head`` (to keep the latent loss as an auxiliary while finetuning).
    An action-pretrained checkpoint keeps its action head where the shapes agree."""
    init = Path(init)
    config = PolicyConfig.load(init / CONFIG_FILE)
    if keep_latent_head and not config.latent_head:
        raise ValueError(f"{init}: has no latent head to keep (it is not latent-pretrained)")
    config = config.replace(tokenizer=_tokenizer_path(init, config.tokenizer), latent_head=keep_latent_head,
                            **{k: v for k, v in config_changes.items() if v is not None})
    model = LapaPolicy(config, stats)
    skip = () if keep_latent_head else ("latent_head.",)
    missing, _ = model.load_weights(init / WEIGHTS_FILE, strict=False, skip_prefixes=skip)
    unexpected_missing = [k for k in missing if not k.startswith(("action_head.", "state_proj."))]
    if unexpected_missing:
        raise ValueError(f"{init}: checkpoint lacks {unexpected_missing[:5]}; is it a LAPA policy checkpoint?")
    if any(k.startswith("state_proj.") for k in missing):
        log.info("%s: no state projection in the checkpoint; the state token is learned from scratch", init)
    return model
