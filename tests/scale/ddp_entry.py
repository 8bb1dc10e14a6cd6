"""`fakescope` with one extra test architecture without batch norm, for the DDP equivalence test.

Batch norm normalises each process's share of a batch with its own statistics (synchronised
batch norm needs CUDA), so only a network without it can match a one-process run exactly.
"""

import sys

import timm

from fakescope.cli import main
from fakescope.models.config import InputPolicy
from fakescope.models.families import Classifier
from fakescope.models.registry import register_model


@register_model(input=InputPolicy(crop_size=64, grid=2))
def test_tiny_gn(pretrained: bool | str = False, **kwargs) -> Classifier:
    """timm's test EfficientNet with group norm."""
    return Classifier(timm.create_model("test_efficientnet_gn", pretrained=False, num_classes=1, **kwargs))


if __name__ == "__main__":
    sys.exit(main())
