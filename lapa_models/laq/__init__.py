"""Stage 1 of LAPA: Latent Action Quantization (LAQ).

Turns pairs of frames (x_t, x_{t+k}) of unlabelled video into a few discrete latent action tokens,
the labels of the latent pretraining stage. Plain Python + torch, no ROS.

    configuration.py  LAQConfig and the named sizes (tiny, small, paper)
    quantizer.py      NSVQ (noise-substitution vector quantization) and codebook health
    modeling.py       LAQModel: encoder -> NSVQ -> decoder, save_pretrained / from_pretrained
    data.py           frame pairs (x_t, x_t+k) on top of lapa_models.data.frames.FrameStore
    plots.py          training curves, reconstruction grid, evaluation figure
    train.py          lapa laq train     --data DIR --out RUN
    label.py          lapa laq label     --checkpoint RUN/final --data DIR
    evaluate.py       lapa laq evaluate  --checkpoint RUN/final --data HELD_OUT
    bench.py          lapa bench laq     --config tiny
"""
from .configuration import CONFIGS, ConfigError, LAQConfig, get_config
from .modeling import CheckpointError, LAQModel, LAQOutput
from .quantizer import NSVQ

__all__ = ["CONFIGS", "CheckpointError", "ConfigError", "LAQConfig", "LAQModel", "LAQOutput", "NSVQ", "get_config"]
