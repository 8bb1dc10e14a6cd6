"""Training: configs, the shortcut-neutralizing augmentation pipeline, and the training loop."""

from fakescope._lazy import lazy_attributes as _lazy_attributes
from fakescope.train.augment import AugmentConfig, augment, neutralize

__all__ = ["AugmentConfig", "TrainConfig", "augment", "neutralize", "train"]

# the trainer (torch, scikit-learn) loads on first use; `augment` stays eager: its module is a submodule of the same name
__getattr__, __dir__ = _lazy_attributes(__name__, {
    "TrainConfig": "config",
    "train": "trainer",
})
