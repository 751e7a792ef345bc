"""What LAQ training (lapa_models.laq.train) and policy training (lapa_models.policy.training) share:
the run on ``accelerate`` (processes, resume, checkpoints, metrics, trackers) and the checkpoint format.

    run.py          TrainingRun: Accelerator, data loaders of global batches, LR setting, sharded
                    reductions, checkpoints written once, resume, metrics.jsonl + trackers
    checkpoints.py  checkpoint-<step>/ in safetensors + JSON: optimizer by parameter name, per-process RNG
"""
from .checkpoints import (TrainingStateError, find_checkpoints, load_training_state, save_training_state)
from .run import REPORT_TO, TrainingRun, add_run_arguments, check_report_to, default_workers

__all__ = ["REPORT_TO", "TrainingRun", "TrainingStateError", "add_run_arguments", "check_report_to",
           "default_workers", "find_checkpoints", "load_training_state", "save_training_state"]
