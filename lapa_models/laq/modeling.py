"""The LAQ model: two frames in, a few discrete latent action tokens out, and back to the second frame.

Reads top-down from small parts to the whole model:

    Attention, MLP, Block, Transformer        pre-norm transformer pieces (self- and cross-attention)
    patchify / unpatchify, PatchEmbedding     frames <-> patch tokens (LayerNorm -> Linear -> LayerNorm)
    AttentionPooling, ConvPooling             patch grid of feature differences -> T latent vectors
    LAQModel                                  encoder -> NSVQ -> decoder; preprocessing, save / load

    model = LAQModel(get_config("tiny"))
    out = model(frames_t, frames_tk)            # uint8 (B, H, W, 3) or float in [0, 1]; out.loss is the MSE
    tokens = model.encode(frames_t, frames_tk)  # (B, T) int64: the latent action, deterministic
    model.save_pretrained("runs/laq/final");  LAQModel.from_pretrained("runs/laq/final")
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .configuration import LAQConfig
from .quantizer import NSVQ

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or made for another configuration (the message says which)."""


# ---------------------------------------------------------------------------- transformer pieces
class Attention(nn.Module):
    """Multi-head attention of x over itself, or over a context (cross-attention)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, causal: bool = False,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = None if bias is None else bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm block: [self-attention] -> [cross-attention to a context] -> MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, self_attention: bool = True,
                 cross_attention: bool = False):
        super().__init__()
        self.self_norm = nn.LayerNorm(dim) if self_attention else None
        self.self_attention = Attention(dim, heads) if self_attention else None
        self.cross_norm = nn.LayerNorm(dim) if cross_attention else None
        self.context_norm = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attention = Attention(dim, heads) if cross_attention else None
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, causal: bool = False,
                context_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.self_attention is not None:
            x = x + self.self_attention(self.self_norm(x), causal=causal)
        if self.cross_attention is not None:
            x = x + self.cross_attention(self.cross_norm(x), context=self.context_norm(context), bias=context_bias)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float, cross_attention: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, cross_attention=cross_attention)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, context=context, causal=causal)
        return self.norm(x)


# ---------------------------------------------------------------------------- frames <-> patches
def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch * patch * C), patches in row-major order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, grid: tuple, channels: int) -> torch.Tensor:
    """(B, N, patch * patch * C) -> (B, C, H, W): the inverse of patchify."""
    b = patches.shape[0]
    x = patches.reshape(b, grid[0], grid[1], patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, grid[0] * patch, grid[1] * patch)


class PatchEmbedding(nn.Module):
    """The paper's shared patch embedding, one for both frames: LayerNorm -> Linear -> LayerNorm."""

    def __init__(self, patch: int, channels: int, dim: int):
        super().__init__()
        self.patch = patch
        self.layers = nn.Sequential(nn.LayerNorm(patch * patch * channels), nn.Linear(patch * patch * channels, dim),
                                    nn.LayerNorm(dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(patchify(images, self.patch))


# ---------------------------------------------------------------------------- patch grid -> latent tokens
def region_prior(config: LAQConfig, outside: float = -4.0) -> torch.Tensor:
    """(T, N) attention bias: 0 on the patches of token t's region, ``outside`` elsewhere. Regions are the
    tiles of the token grid when T tiles the patch grid, else T bands of consecutive patches."""
    gh, gw = config.grid_size
    t = config.num_latent_tokens
    if config.token_grid is not None:
        rows, cols = config.token_grid
        r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        region = ((r // (gh // rows)) * cols + c // (gw // cols)).reshape(-1)
    else:
        region = torch.arange(gh * gw) * t // (gh * gw)
    return torch.where(region[None, :] == torch.arange(t)[:, None], 0.0, outside)


class AttentionPooling(nn.Module):
    """T learned queries cross-attend to the patch grid: any token count from 1 to the number of patches.

    A learnable attention bias starts each query on its own region of the grid: with identical queries
    and uniform attention all tokens would start equal, and noise substitution rewards keeping redundant
    copies (independent noise averages out), so the tokens would stay nearly one token."""

    def __init__(self, config: LAQConfig):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(config.num_latent_tokens, config.dim) * 0.02)
        self.region_bias = nn.Parameter(region_prior(config))
        self.grid_position = nn.Parameter(torch.randn(1, config.num_patches, config.dim) * 0.02)
        self.block = Block(config.dim, config.heads, config.mlp_ratio, self_attention=False, cross_attention=True)
        self.norm = nn.LayerNorm(config.dim)
        self.to_code = nn.Linear(config.dim, config.code_dim)

    def forward(self, grid_features: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(grid_features.shape[0], -1, -1)
        pooled = self.block(queries, context=grid_features + self.grid_position, context_bias=self.region_bias)
        return self.to_code(self.norm(pooled))


class ConvPooling(nn.Module):
    """The paper's reduction: project to code_dim, then a strided conv tiles the grid (8x8 -> 2x2)."""

    def __init__(self, config: LAQConfig):
        super().__init__()
        self.grid = config.grid_size
        rows, cols = config.token_grid
        kernel = (self.grid[0] // rows, self.grid[1] // cols)
        self.to_code = nn.Linear(config.dim, config.code_dim)
        self.conv = nn.Conv2d(config.code_dim, config.code_dim, kernel_size=kernel, stride=kernel)

    def forward(self, grid_features: torch.Tensor) -> torch.Tensor:
        b = grid_features.shape[0]
        x = self.to_code(grid_features).transpose(1, 2).reshape(b, -1, *self.grid)
        return self.conv(x).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------- the model
@dataclasses.dataclass
class LAQOutput:
    loss: torch.Tensor            # MSE between the prediction and frame t+k
    prediction: torch.Tensor      # (B, C, H, W) float, predicted frame t+k
    indices: torch.Tensor         # (B, T) int64, the latent action tokens
    latents: torch.Tensor         # (B, T, code_dim) continuous encoder output, before quantization
    copy_mse: torch.Tensor        # MSE between frame t and frame t+k: the copy-frame baseline


class LAQModel(nn.Module):
    """Latent Action Quantization: (x_t, x_{t+k}) -> T tokens from a codebook of C -> x_{t+k}."""

    def __init__(self, config: LAQConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.patch_embedding = PatchEmbedding(c.patch_size, c.channels, c.dim)
        self.spatial_position = nn.Parameter(torch.randn(1, c.num_patches, c.dim) * 0.02)
        self.frame_position = nn.Parameter(torch.randn(2, 1, c.dim) * 0.02)  # frame t, frame t+k
        self.spatial_encoder = Transformer(c.dim, c.heads, c.spatial_depth, c.mlp_ratio)
        self.temporal_encoder = Transformer(c.dim, c.heads, c.temporal_depth, c.mlp_ratio)
        self.token_pooling = AttentionPooling(c) if c.token_pooling == "attention" else ConvPooling(c)
        self.quantizer = NSVQ(c.codebook_size, c.code_dim)
        self.latent_to_decoder = nn.Linear(c.code_dim, c.dim)
        self.latent_position = nn.Parameter(torch.randn(1, c.num_latent_tokens, c.dim) * 0.02)
        self.decoder_position = nn.Parameter(torch.randn(1, c.num_patches, c.dim) * 0.02)
        self.decoder = Transformer(c.dim, c.heads, c.decoder_depth, c.mlp_ratio, cross_attention=True)
        self.to_pixels = nn.Linear(c.dim, c.patch_size * c.patch_size * c.channels)
        self.apply(_init_weights)
        if c.predict_residual:
            # The prediction starts as x_t (the copy-frame baseline) and learns only the change.
            nn.init.zeros_(self.to_pixels.weight)
            nn.init.zeros_(self.to_pixels.bias)

    @property
    def device(self) -> torch.device:
        return self.spatial_position.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, frames: Union[torch.Tensor, np.ndarray], name: str = "frames") -> torch.Tensor:
        """uint8 (B, H, W, C) in 0..255 or float in [0, 1] (numpy or torch) -> float32 (B, C, H, W) in [0, 1]."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(frames).__name__}")
        if frames.ndim == 3:
            frames = frames.unsqueeze(0)
        h, w = self.config.image_size
        if frames.ndim != 4 or frames.shape[-1] != self.config.channels:
            raise ValueError(f"{name}: expected (B, H, W, {self.config.channels}) channels-last frames, "
                             f"got shape {tuple(frames.shape)}")
        if tuple(frames.shape[1:3]) != (h, w):
            raise ValueError(f"{name}: frames are {frames.shape[1]}x{frames.shape[2]} but this model takes {h}x{w} "
                             f"(resize them, or use a config with image_size={[frames.shape[1], frames.shape[2]]})")
        frames = frames.to(self.device, non_blocking=True)
        if frames.dtype == torch.uint8:
            x = frames.float().div_(255.0)
        elif frames.is_floating_point():
            x = frames.float()
            if x.numel():
                lo, hi = torch.aminmax(x)
                if lo < -1e-3 or hi > 1 + 1e-3 or not torch.isfinite(x).all():
                    raise ValueError(f"{name}: float frames must be in [0, 1], got values in [{float(lo):.3g}, "
                                     f"{float(hi):.3g}] (pass uint8 0..255 frames, or divide by 255)")
        else:
            raise TypeError(f"{name}: frames must be uint8 (0..255) or float (0..1), got dtype {frames.dtype}")
        return x.permute(0, 3, 1, 2).contiguous()

    def _preprocess_pair(self, frames_t, frames_tk):
        if tuple(frames_t.shape) != tuple(frames_tk.shape) or frames_t.dtype != frames_tk.dtype:
            raise ValueError(f"frames_t and frames_tk must match in shape and dtype: "
                             f"{tuple(frames_t.shape)} {frames_t.dtype} vs {tuple(frames_tk.shape)} {frames_tk.dtype}")
        return self.preprocess(frames_t, "frames_t"), self.preprocess(frames_tk, "frames_tk")

    # ------------------------------------------------------------------ encoder, decoder
    def encode_latents(self, x_t: torch.Tensor, x_tk: torch.Tensor):
        """Preprocessed frames -> (continuous latents (B, T, code_dim), patch embeddings of x_t (B, N, dim))."""
        b = x_t.shape[0]
        n, d = self.config.num_patches, self.config.dim
        patches = self.patch_embedding(torch.cat([x_t, x_tk]))               # (2B, N, D): one shared embedding
        patches_t = patches[:b]
        tokens = self.spatial_encoder(patches + self.spatial_position)       # within each frame
        tokens = tokens.view(2, b, n, d) + self.frame_position[:, None]
        tokens = tokens.permute(1, 2, 0, 3).reshape(b * n, 2, d)             # each patch position: (x_t, x_t+k)
        tokens = self.temporal_encoder(tokens, causal=True).view(b, n, 2, d)  # x_t never sees x_t+k
        return self.token_pooling(tokens[:, :, 1] - tokens[:, :, 0]), patches_t

    def decode(self, x_t: torch.Tensor, patches_t: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        """Predict x_{t+k}: the stop-gradient patch embeddings of x_t cross-attend to the latent tokens."""
        queries = patches_t.detach() + self.decoder_position
        context = self.latent_to_decoder(quantized) + self.latent_position
        pixels = unpatchify(self.to_pixels(self.decoder(queries, context=context)), self.config.patch_size,
                            self.config.grid_size, self.config.channels)
        return x_t + pixels if self.config.predict_residual else pixels

    def forward(self, frames_t, frames_tk) -> LAQOutput:
        x_t, x_tk = self._preprocess_pair(frames_t, frames_tk)
        latents, patches_t = self.encode_latents(x_t, x_tk)
        quantized, indices = self.quantizer(latents)
        prediction = self.decode(x_t, patches_t, quantized)
        loss = F.mse_loss(prediction.float(), x_tk)
        with torch.no_grad():
            copy_mse = F.mse_loss(x_t, x_tk)
        return LAQOutput(loss=loss, prediction=prediction, indices=indices, latents=latents, copy_mse=copy_mse)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, frames_t, frames_tk) -> torch.Tensor:
        """The latent action tokens (B, T) int64 of each transition: nearest codes, deterministic."""
        x_t, x_tk = self._preprocess_pair(frames_t, frames_tk)
        latents, _ = self.encode_latents(x_t, x_tk)
        return self.quantizer.nearest_code(latents.float())

    @torch.no_grad()
    def reconstruct(self, frames_t, indices: torch.Tensor) -> torch.Tensor:
        """Frame t+k predicted from frame t and given latent tokens (B, T): float (B, H, W, C) in [0, 1]."""
        x_t = self.preprocess(frames_t, "frames_t")
        indices = torch.as_tensor(indices, device=self.device).long()
        if indices.shape != (x_t.shape[0], self.config.num_latent_tokens):
            raise ValueError(f"indices must be (B={x_t.shape[0]}, T={self.config.num_latent_tokens}), "
                             f"got {tuple(indices.shape)}")
        patches_t = self.patch_embedding(x_t)
        prediction = self.decode(x_t, patches_t, self.quantizer.lookup(indices))
        return prediction.clamp(0, 1).permute(0, 2, 3, 1)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (no pickles) to directory."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_NAME)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = directory / (WEIGHTS_NAME + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt", "model": "lapa_models.laq.LAQModel"})
        tmp.replace(directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: Union[str, Path], config: Optional[LAQConfig] = None,
                        device: Union[str, torch.device] = "cpu") -> "LAQModel":
        """Load a model saved by ``save_pretrained``. With ``config``, the checkpoint must have been made
        with the same architecture (CheckpointError names the fields that differ)."""
        directory = Path(directory)
        saved = load_checkpoint_config(directory)
        if config is not None:
            mismatch = config.architecture_mismatch(saved)
            if mismatch:
                raise CheckpointError(f"{directory}: checkpoint was made with a different LAQ config "
                                      f"(requested vs checkpoint): {'; '.join(mismatch)}")
        model = cls(saved)
        model.load_weights(directory / WEIGHTS_NAME)
        return model.to(device)

    def load_weights(self, path: Union[str, Path]) -> None:
        """Load ``model.safetensors`` into this model; clear errors for other configs and corrupt files."""
        path = Path(path)
        beside = path.parent / CONFIG_NAME
        if beside.is_file():
            mismatch = self.config.architecture_mismatch(load_checkpoint_config(path.parent))
            if mismatch:
                raise CheckpointError(f"{path.parent}: checkpoint was made with a different LAQ config "
                                      f"(this model vs checkpoint): {'; '.join(mismatch)}")
        state = read_safetensors(path)
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            raise CheckpointError(f"{path}: weights do not fit this LAQ config: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}, shapes (checkpoint vs model) {wrong[:5]}")
        self.load_state_dict(state)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def load_checkpoint_config(directory: Union[str, Path]) -> LAQConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: not an LAQ checkpoint (no {name})")
    try:
        return LAQConfig.from_dict(json.loads((directory / CONFIG_NAME).read_text()), str(directory / CONFIG_NAME))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: unreadable LAQ config ({e})") from e


def read_safetensors(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e
