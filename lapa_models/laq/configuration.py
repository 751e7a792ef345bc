"""LAQ configuration: one documented dataclass, and the named sizes built from it.

    from lapa_models.laq.configuration import get_config
    config = get_config("tiny")                       # CPU and tests
    config = get_config("small", frame_gap=2)         # any field can be overridden
    config = LAQConfig.from_json_file("run/final/config.json")

The architecture fields decide the shapes of the weights; a checkpoint loads only into a config
whose architecture fields match (``architecture_mismatch`` names the fields that differ). The
training-recipe fields (learning rate, batch size, steps) only give defaults to `laq.train`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

TOKEN_POOLINGS = ("attention", "conv")


class ConfigError(ValueError):
    """A configuration that cannot build a model (the message names the field)."""


@dataclasses.dataclass
class LAQConfig:
    """Latent Action Quantization model (stage 1 of LAPA, Ye et al. 2024).

    Frames x_t and x_{t+k} -> shared patch embedding -> spatial transformer (within a frame) ->
    temporal transformer (across the two frames, causal) -> difference of the two frames' features
    -> pooled to ``num_latent_tokens`` vectors of ``code_dim`` -> NSVQ against ``codebook_size``
    codes -> decoder: patch embeddings of x_t cross-attend to the latent tokens -> x_{t+k}.
    """

    # --- input
    image_size: Tuple[int, int] = (64, 64)   # (H, W) the model sees; datasets are resized to it
    patch_size: int = 8                      # square patches; H and W must be multiples of it
    channels: int = 3                        # RGB
    frame_gap: int = 3                       # k: the latent action explains x_t -> x_{t+k}
    # --- transformer widths and depths
    dim: int = 64                            # width of encoder and decoder
    heads: int = 4                           # attention heads (dim must be divisible by heads)
    mlp_ratio: float = 4.0                   # hidden width of each MLP = mlp_ratio * dim
    spatial_depth: int = 2                   # encoder blocks attending within one frame
    temporal_depth: int = 2                  # encoder blocks attending across the two frames
    decoder_depth: int = 2                   # decoder blocks (self-attention + cross-attention to latents)
    # --- latent action bottleneck
    codebook_size: int = 8                   # C codes; the latent action space has C ** num_latent_tokens actions
    num_latent_tokens: int = 4               # T tokens per transition
    code_dim: int = 32                       # dimension of each code
    token_pooling: str = "attention"         # patch grid -> T tokens: "attention" (any T) or "conv" (the paper's
                                             # strided conv; T must tile the patch grid, e.g. 8x8 -> 2x2)
    # --- decoder output
    predict_residual: bool = True            # decoder output is added to x_t (zero-initialized head, so training
                                             # starts at the copy-frame baseline); False: pixels directly, as the paper
    # --- training recipe (defaults for laq.train; not part of the weights)
    learning_rate: float = 1e-4              # Adam, betas (0.9, 0.99) as the paper
    batch_size: int = 64                     # frame pairs per step (per process)
    train_steps: int = 100_000

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        self.image_size = tuple(int(s) for s in self.image_size)
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def grid_size(self) -> Tuple[int, int]:
        """Patches per column and per row of the encoder grid."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def token_grid(self) -> Tuple[int, int]:
        """For conv pooling: the (rows, cols) of latent tokens that tile the patch grid."""
        return _token_grid(self.grid_size, self.num_latent_tokens)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"LAQConfig: {message}")

        need(len(self.image_size) == 2 and min(self.image_size) > 0,
             f"image_size must be (H, W) > 0, got {self.image_size}")
        for name in ("patch_size", "channels", "frame_gap", "dim", "heads", "spatial_depth", "temporal_depth",
                     "decoder_depth", "codebook_size", "num_latent_tokens", "code_dim", "batch_size", "train_steps"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"{name} must be an integer >= 1, got {value!r}")
        h, w = self.image_size
        need(h % self.patch_size == 0 and w % self.patch_size == 0,
             f"image_size {h}x{w} is not a multiple of patch_size {self.patch_size}")
        need(self.dim % self.heads == 0, f"dim {self.dim} is not divisible by heads {self.heads}")
        need(self.codebook_size >= 2, f"codebook_size must be >= 2, got {self.codebook_size}")
        need(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.token_pooling in TOKEN_POOLINGS,
             f"token_pooling must be one of {TOKEN_POOLINGS}, got {self.token_pooling!r}")
        need(self.num_latent_tokens <= self.num_patches,
             f"num_latent_tokens {self.num_latent_tokens} exceeds the {self.num_patches} patches of the "
             f"{self.grid_size[0]}x{self.grid_size[1]} encoder grid")
        if self.token_pooling == "conv":
            need(self.token_grid is not None,
                 f"token_pooling 'conv' needs num_latent_tokens to tile the {self.grid_size[0]}x{self.grid_size[1]} "
                 f"patch grid (rows and cols dividing it), {self.num_latent_tokens} does not; "
                 "use token_pooling 'attention' for any token count")

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "config") -> "LAQConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown LAQConfig fields {unknown}")
        return cls(**d)

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json_file(cls, path: Union[str, Path]) -> "LAQConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: corrupt JSON ({e})") from e
        return cls.from_dict(d, where=str(path))

    def replace(self, **changes: Any) -> "LAQConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown LAQConfig fields {unknown}")
        return dataclasses.replace(self, **changes)

    def sha256(self) -> str:
        """Fingerprint of the whole config (what a latent label set records)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def architecture_mismatch(self, other: "LAQConfig") -> List[str]:
        """'field: mine vs other' for each architecture field that differs (empty: weights are compatible)."""
        return [f"{name}: {getattr(self, name)!r} vs {getattr(other, name)!r}"
                for name in ARCHITECTURE_FIELDS if getattr(self, name) != getattr(other, name)]


# Fields that change the weights or what they mean; frame_gap is one: latents of another gap mean another action.
ARCHITECTURE_FIELDS = ("image_size", "patch_size", "channels", "frame_gap", "dim", "heads", "mlp_ratio",
                       "spatial_depth", "temporal_depth", "decoder_depth", "codebook_size", "num_latent_tokens",
                       "code_dim", "token_pooling", "predict_residual")


def _token_grid(grid: Tuple[int, int], tokens: int):
    """(rows, cols) with rows * cols == tokens tiling grid, the most square one; None if there is none."""
    best = None
    for rows in range(1, tokens + 1):
        if tokens % rows:
            continue
        cols = tokens // rows
        if grid[0] % rows == 0 and grid[1] % cols == 0:
            aspect = abs(math.log((grid[0] / rows) / (grid[1] / cols)))
            if best is None or aspect < best[0]:
                best = (aspect, (rows, cols))
    return None if best is None else best[1]


# ---------------------------------------------------------------------------- named sizes
# One config per size. The tiny and small ones raise the learning rate above the paper's 1e-4: small
# transformers are stable there and it is what lets them converge in a CPU budget.
CONFIGS: Dict[str, LAQConfig] = {
    # CPU and tests: ~0.3M parameters, hundreds of steps a minute on 2 cores.
    "tiny": LAQConfig(image_size=(64, 64), patch_size=8, dim=64, heads=4, spatial_depth=2, temporal_depth=1,
                      decoder_depth=2, learning_rate=1e-3, batch_size=32, train_steps=3000),
    # CPU in tens of minutes.
    "small": LAQConfig(image_size=(64, 64), patch_size=8, dim=128, heads=4, spatial_depth=3, temporal_depth=2,
                       decoder_depth=3, learning_rate=5e-4, batch_size=32, train_steps=10_000),
    # The authors' size (C-ViViT based): 256 px, patch 32 (8x8 grid), width 1024, depth 8 + 8, 16 heads,
    # 1024 -> 32 projection and a strided conv 8x8 -> 2x2 = 4 tokens, codebook of 8. GPUs only.
    "paper": LAQConfig(image_size=(256, 256), patch_size=32, dim=1024, heads=16, spatial_depth=8, temporal_depth=8,
                       decoder_depth=8, token_pooling="conv", learning_rate=1e-4,
                       batch_size=64, train_steps=100_000),
}


def get_config(name_or_path: Union[str, Path], **overrides: Any) -> LAQConfig:
    """A named size ('tiny', 'small', 'paper') or a config.json path, with fields overridden."""
    text = str(name_or_path)
    if text in CONFIGS:
        config = CONFIGS[text]
    elif text.endswith(".json") or Path(text).is_file() or Path(text, "config.json").is_file():
        path = Path(text)
        config = LAQConfig.from_json_file(path / "config.json" if path.is_dir() else path)
    else:
        raise ConfigError(f"unknown LAQ config {text!r}: choose one of {sorted(CONFIGS)} or give a config.json path")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return config.replace(**overrides) if overrides else dataclasses.replace(config)
