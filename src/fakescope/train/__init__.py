"""Training: configs, the shortcut-neutralizing augmentation pipeline, and the training loop."""

from fakescope.train.augment import AugmentConfig, augment, neutralize
from fakescope.train.config import TrainConfig
from fakescope.train.trainer import train

__all__ = ["AugmentConfig", "TrainConfig", "augment", "neutralize", "train"]
