"""`fakescope` with one extra test architecture without batch norm, for the DDP equivalence test.

Batch norm normalises each process's share of a batch with its own statistics (synchronised
batch norm needs CUDA), so only a network without it can match a one-process run exactly.
With FAKESCOPE_TEST_PROBE set to a folder, each rank appends to rank{RANK}.txt there, for every
training forward pass, a digest of torch's random state as it starts and the features the head's dropout kept.
"""

import hashlib
import os
import sys
from pathlib import Path

import timm
import torch

from fakescope.cli import main
from fakescope.models.config import InputPolicy
from fakescope.models.families import Classifier
from fakescope.models.registry import register_model


@register_model(input=InputPolicy(crop_size=64, grid=2))
def test_tiny_gn(pretrained: bool | str = False, **kwargs) -> Classifier:
    """timm's test EfficientNet with group norm."""
    network = Classifier(timm.create_model("test_efficientnet_gn", pretrained=False, num_classes=1, **kwargs))
    if os.environ.get("FAKESCOPE_TEST_PROBE"):
        _probe(network, Path(os.environ["FAKESCOPE_TEST_PROBE"]) / f"rank{os.environ.get('RANK', '0')}.txt")
    return network


def _probe(network: Classifier, path: Path) -> None:
    def write(line: str) -> None:
        with path.open("a") as f:
            f.write(line + "\n")

    def start(module, args):
        if module.training:
            write("rng " + hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest())

    def kept(module, args):  # the classifier's input: the pooled features after dropout, zero where dropped
        if module.training:
            write("kept " + "".join("1" if v else "0" for v in (args[0] != 0).flatten().tolist()))

    network.register_forward_pre_hook(start)
    network.backbone.get_classifier().register_forward_pre_hook(kept)


if __name__ == "__main__":
    sys.exit(main())
