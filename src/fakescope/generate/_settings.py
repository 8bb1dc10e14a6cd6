"""A rerun's settings against those the ledger paid for: the same sources under other settings are new jobs, paid again."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable

from fakescope.errors import ConfigError
from fakescope.generate.ledger import DONE, RUNNING, JobRecord
from fakescope.generate.openai_images import VARIATION_PROMPT, OpenAIImagesConfig

OPTIONS = {"mode": "--mode", "model": "--model", "size": "--size", "quality": "--quality", "prompt": "--prompt",
           "mask": "--mask", "input_fidelity": "--input-fidelity"}
"""The settings that make a job's key, by the `generate openai` option that sets each."""


def check_settings(records: Iterable[JobRecord], config: OpenAIImagesConfig, source_sha256: str) -> None:
    """Refuse a run whose first source the ledger paid for only under other settings (a rerun missing an option).

    Raises:
        ConfigError: naming the options that differ from the settings last paid for.
    """
    paid = [record for record in records if record.source_sha256 == source_sha256
            and (record.state in (DONE, RUNNING) or record.cost > 0)]
    settings = (config.mode, config.model, config.params_hash())
    if not paid or any((record.mode, record.model, record.params_hash) == settings for record in paid):
        return
    before, now = _settings(paid[-1]), {"mode": config.mode, "model": config.model, **config.params()}
    keys = [key for key in OPTIONS if before is not None and before.get(key) != now.get(key)]
    keys = [key for key in keys if key in ("mode", "model")] or keys  # the other parameters follow from those
    if keys:
        differs = (f"{', '.join(_option(key, before.get(key)) for key in keys)}; this run has "
                   f"{', '.join(_option(key, now.get(key)) for key in keys)}")
    else:  # an older ledger's job that was never done: its parameters are not known
        differs = f"other parameters (hash {paid[-1].params_hash[:6]}) than this run's"
    raise ConfigError(f"the ledger of this --out paid for {paid[-1].source} with {differs}: pass "
                      "the same options to resume that run, --new-settings to pay for a second set beside it, or use "
                      "another --out")


def _settings(record: JobRecord) -> dict | None:
    """The mode, model and parameters of `record`'s run: recorded when it was added, else in its manifest row."""
    params = record.params or (json.loads(record.row)["params"] if record.row else None)
    return {"mode": record.mode, "model": record.model, **json.loads(params)} if params else None


def _option(key: str, value: object) -> str:
    if value is None or (key == "prompt" and value == VARIATION_PROMPT):
        return f"no {OPTIONS[key]}"
    return f"{OPTIONS[key]} {shlex.quote(str(value))}"
