"""Architectures of one's own for the tests: the network contract as a base class, and a plugin module
(`qa_plugin`, architecture `qa_tiny_conv`, built on that class) with a model folder saved by a process that imported it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

from torch import nn


class FeatureHead(nn.Module):
    """The registry's contract over a subclass's `features` and `head`: pooled features, one logit per input."""

    def forward_features(self, x):
        return self.features(x)

    def embed(self, x):
        return self.forward_features(x).mean((2, 3))

    def forward_head(self, features):
        return self.head(features.mean((2, 3))).squeeze(-1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


PLUGIN = textwrap.dedent('''
    """A researcher's architecture, outside the package."""
    from torch import nn

    from fakescope.models import InputPolicy, register_model


''') + inspect.getsource(FeatureHead) + textwrap.dedent('''

    class TinyConv(FeatureHead):
        def __init__(self, width=4):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU())
            self.head = nn.Linear(width, 1)


    @register_model(input=InputPolicy(crop_size=48, grid=2))
    def qa_tiny_conv(pretrained=False, **kwargs):
        """A one-layer conv net of a plugin."""
        return TinyConv(**kwargs)
''')
"""The plugin module's text: a separate process imports it, so it carries `FeatureHead`'s source rather than importing it."""


def save_plugin_model(folder: Path) -> Path:
    """Write module `qa_plugin` into `folder` and a model folder of its architecture, saved by a process that imported it."""
    (folder / "qa_plugin.py").write_text(PLUGIN)
    model = folder / "model"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import qa_plugin\n"
              "from fakescope.models import ModelConfig, InputPolicy, save_model\n"
              "save_model(qa_plugin.TinyConv(), ModelConfig(name='qa', architecture='qa_tiny_conv', "
              "input=InputPolicy(crop_size=48, grid=2)), sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, str(folder), str(model)], check=True, timeout=120)
    return model
