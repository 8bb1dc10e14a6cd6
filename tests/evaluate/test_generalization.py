"""`score_unseen` (the unseen generator against all test reals and each real source alone) and fold checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fakescope.errors import ConfigError
from fakescope.evaluate import generalization
from fakescope.evaluate.generalization import real_source_table, score_unseen
from fakescope.models.bundle import LoadedModel
from fakescope.models.config import ModelConfig
from fakescope.train.config import TrainConfig


def test_per_source_auc_exposes_a_content_mismatch(monkeypatch):
    # g's images score between the two real sources: perfect against faces, hopeless against scenes
    rows = pd.DataFrame({
        "uri": [f"x{i}" for i in range(12)],
        "label": ["real"] * 8 + ["ai"] * 4,
        "source": ["faces"] * 4 + ["scenes"] * 4 + ["gan"] * 4,
        "generator": [None] * 8 + ["g"] * 4,
        "split": ["test"] * 10 + ["train"] * 2,
    })
    probs = np.r_[[0.1, 0.15, 0.2, 0.25], [0.8, 0.85, 0.9, 0.95], [0.5, 0.55, 0.6, 0.65]]
    monkeypatch.setattr(generalization, "_probabilities", lambda model, scored, batch, images, inspections: probs[scored.index.to_numpy()])
    model = LoadedModel(None, ModelConfig("m", "test_tiny"), "mem")
    table = score_unseen(model, rows, ["g"], TrainConfig(manifest="unused.csv"))
    row = table.iloc[0]
    assert row["n_unseen"] == 4
    assert row["auc_all"] == pytest.approx(0.5)
    assert (row["auc_real_faces"], row["auc_real_scenes"]) == (1.0, 0.0)
    assert real_source_table(table).loc["g"].to_dict() == {"faces": 1.0, "scenes": 0.0}
    # four ai images against eight reals: the 95% interval says how little one AUC of them means
    assert row["auc_all_low"] < row["auc_all"] < row["auc_all_high"] and row["auc_all_high"] - row["auc_all_low"] > 0.3


def test_every_fold_is_scored_through_the_preprocessing_its_training_used(model_dir, dataset):
    """The unseen images go through the recipe's shortcut removal (bottom crop, base JPEG) exactly as training
    scored its val and test splits, so an unseen AUC is not one of differently prepared images."""
    from fakescope.models import load_model
    from fakescope.models.calibration import apply_calibration
    from fakescope.train.augment import AugmentConfig
    from fakescope.train.scoring import _score

    model = load_model(model_dir)
    recipe = TrainConfig(manifest="unused.csv", augment=AugmentConfig(bottom_crop=0.25, base_jpeg_quality=60))
    as_trained = apply_calibration(model.config.calibration,
                                   _score(model.network, model.config, torch.device("cpu"), dataset["uri"].tolist(), recipe))
    probs = generalization._probabilities(model, dataset, batch_size=8)
    np.testing.assert_allclose(probs, as_trained, rtol=1e-5)
    raw = TrainConfig(manifest="unused.csv", augment=AugmentConfig(bottom_crop=0.0, base_jpeg_quality=None))
    unprepared = apply_calibration(model.config.calibration,
                                   _score(model.network, model.config, torch.device("cpu"), dataset["uri"].tolist(), raw))
    assert not np.allclose(probs, unprepared, rtol=1e-3)  # the check can tell


def test_test_images_are_read_once_for_every_fold_within_the_limit(model_dir, dataset, tmp_path):
    """evaluate-logo read and preprocessed the test images again for every fold; a `ReadOnce` of them keeps them (up
    to its limit: past it, and after a change of preprocessing, they are read again), with the same scores."""
    from fakescope.models import load_model

    rows = dataset.assign(uri=[str(tmp_path / Path(u).name) for u in dataset["uri"]])
    for old, new in zip(dataset["uri"], rows["uri"]):
        Path(new).write_bytes(Path(old).read_bytes())
    test = rows.loc[rows["split"] == "test", "uri"]
    model, cfg = load_model(model_dir), TrainConfig(manifest="unused.csv")
    kept, none_kept = generalization.ReadOnce(test), generalization.ReadOnce(test, limit=0)
    first = score_unseen(model, rows, ["g1", "g2"], cfg, images=kept)
    score_unseen(model, rows, ["g1", "g2"], cfg, images=none_kept)
    assert len(kept.kept) == len(test) and kept.used == sum(64 * 36 * 3 for _ in test)  # bottom quarter cropped
    assert none_kept.kept == {} and none_kept.used == 0
    assert kept.limit == 512 * 1024**2  # was 2 GiB, held beside every fold's training
    for uri in test:
        Path(uri).unlink()
    again = score_unseen(model, rows, ["g1", "g2"], cfg, images=kept)  # the next fold: nothing read again
    pd.testing.assert_frame_equal(again, first)
    gone = score_unseen(model, rows, ["g1", "g2"], cfg, images=none_kept).iloc[0]
    assert gone["n_real"] == 0 and np.isnan(gone["auc_all"])
    assert kept.images(list(test), None) == [None] * len(test)  # other preprocessing: read again (and gone)
    assert set(kept.kept.values()) == {None} and kept.used == 0


def test_a_fold_that_cannot_be_trained_is_refused_before_any_training(monkeypatch):
    # the only ai source held out leaves train and val with reals alone
    rows = pd.DataFrame({"uri": [f"x{i}" for i in range(6)], "label": ["real", "ai"] * 3,
                         "source": ["photos", "renders"] * 3, "generator": [None, "g"] * 3,
                         "split": ["train", "train", "val", "val", "test", "test"]})
    monkeypatch.setattr(generalization, "train", lambda *a, **k: pytest.fail("trained an impossible fold"))
    with pytest.raises(ConfigError, match="holding out source 'renders' leaves the 'train' split with one label"):
        generalization.leave_one_generator_out(TrainConfig(manifest="unused.csv"), manifest=rows, by="source")


def test_an_unreadable_image_is_left_out_of_the_scores_with_a_warning(model_dir, with_broken, tmp_path, caplog):
    from fakescope.models import load_model

    rows = with_broken.copy()
    broken = tmp_path / "broken-ai.png"
    broken.write_bytes(b"not an image")
    rows.loc[rows.index[rows["generator"] == "g1"][0], "uri"] = str(broken)
    with caplog.at_level("WARNING", logger="fakescope"):
        table = score_unseen(load_model(model_dir), rows, ["g1"], TrainConfig(manifest="unused.csv")).iloc[0]
    assert table["n_unseen"] == (rows["generator"] == "g1").sum() - 1
    assert 0.0 <= table["auc_all"] <= 1.0
    assert any(str(broken) in r.getMessage() for r in caplog.records)


def test_logo_json_records_the_recipe_without_resume_or_overwrite(tmp_path):
    # as train_config.yaml does: a recorded recipe reused for another run must not replace that run's folder unasked
    results = pd.DataFrame({"held_out": ["g"], "auc_vs_g": [0.9], "n_vs_g": [3], "auc_real_cam": [0.8]})
    paths = generalization.save_generalization(results, tmp_path, TrainConfig(manifest="unused.csv", overwrite=True))
    recipe = json.loads(Path(paths["json"]).read_text())["recipe"]
    assert (recipe["manifest"], recipe["resume"], recipe["overwrite"]) == ("unused.csv", False, False)


def test_an_interrupt_while_the_results_are_written_leaves_the_earlier_ones_whole(tmp_path, monkeypatch):
    """logo.csv was rewritten in place before logo.json was made: a Ctrl-C (or SIGTERM) in between, which
    evaluate-logo answers with its --resume line, left a new logo.csv beside the old logo.json, or half of one."""
    earlier = pd.DataFrame({"held_out": ["g"], "auc_vs_g": [0.9], "n_vs_g": [3], "auc_real_cam": [0.8]})
    paths = generalization.save_generalization(earlier, tmp_path)
    written = {kind: Path(path).read_text() for kind, path in paths.items()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generalization, "real_source_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generalization.save_generalization(earlier.assign(auc_vs_g=[0.5]), tmp_path)
    assert {kind: Path(path).read_text() for kind, path in paths.items()} == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logo.csv", "logo.json"]  # no temporary file left


def test_a_folds_audit_inspects_its_sample_as_the_scoring_reads_it(model_dir, dataset, tmp_path, monkeypatch):
    """evaluate-logo audited each fold's unseen images and the test reals in a pass of its own, after scoring read them:
    each sampled image was read twice. The scoring pass now inspects them as it reads them (an unreadable one too); the
    audit reads none and reports what reading them gives."""
    import collections

    import fakescope.io._local as local
    import fakescope.io.image as image_io
    from fakescope.data.audit import Inspections
    from fakescope.data.manifest import check_rows
    from fakescope.evaluate.shortcuts import audit_rows, shortcut_sample
    from fakescope.models import load_model

    (tmp_path / "gone.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    test = dataset[dataset["split"] == "test"]
    rows = check_rows(pd.concat([test, test.iloc[:1].assign(uri=str(tmp_path / "gone.png"))], ignore_index=True))
    sample = shortcut_sample(rows)
    expected = audit_rows(sample, None, provenance=False)
    reads, read_path, read_bytes = collections.Counter(), image_io._read_path, local.LocalStorage.read_bytes
    monkeypatch.setattr(image_io, "_read_path", lambda source: reads.update([str(source)]) or read_path(source))
    monkeypatch.setattr(local.LocalStorage, "read_bytes",  # the audit's own reads went through storage
                        lambda self, uri, **kw: reads.update([str(uri)]) or read_bytes(self, uri, **kw))
    inspections = Inspections(frozenset(sample.rows["uri"]))
    score_unseen(load_model(model_dir), rows, ["g1", "g2"], TrainConfig(manifest="unused.csv", batch_size=4),
                 inspections=inspections)
    assert audit_rows(sample, None, provenance=False, inspections=inspections) == expected
    assert reads == collections.Counter(rows["uri"]) and expected["notes"][0].startswith("1 image(s) could not be read")
