"""Training engine: one loop for every task (objective + data sets in, checkpoints out)."""

from attnlab.training.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from attnlab.training.distributed import DistInfo, cleanup_distributed, init_distributed, pick_device
from attnlab.training.objectives import ClassificationObjective, Objective
from attnlab.training.trainer import TrainConfig, Trainer, TrainingError

__all__ = [
    "TrainConfig", "Trainer", "TrainingError", "Objective", "ClassificationObjective",
    "save_weights", "load_weights", "save_checkpoint", "load_checkpoint",
    "DistInfo", "init_distributed", "cleanup_distributed", "pick_device",
]
