"""The training loop on an easy generated task: learning, determinism, resume, early stopping, CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from train_helpers import PLAIN
from train_helpers import train_config as _config
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import ConfigError, ImageLoadError
from fakescope.models import apply_calibration, load_model
from fakescope.train import TrainConfig, train
from fakescope.train.dataset import balanced_sampler
from fakescope.train.trainer import process_device


def test_learns_an_easy_task_and_saves_a_calibrated_model(manifest, tmp_path):
    saved = train(_config(manifest, tmp_path, samples_per_epoch=256), progress=False)
    assert saved.metrics["test"]["overall"]["auc"] > 0.85
    assert saved.calibration.method == "temperature" and saved.calibration.temperature > 0
    assert saved.band == (0.3, 0.7)
    assert saved.training["recipe"]["architecture"] == "test_tiny"
    loaded = load_model(tmp_path / "model")
    assert loaded.config.weights_sha256 == saved.weights_sha256
    recorded = yaml.safe_load((tmp_path / "train_config.yaml").read_text())
    assert recorded["epochs"] == 4 and recorded["augment"]["jpeg_prob"] == 0.0
    with open(tmp_path / "metrics.csv") as f:
        log = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in log] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "metrics.json").read_text())["test"]["per_generator"]["checker"]["n"] == 16


def test_calibration_band_and_neutralization_travel_with_the_model_and_are_used_on_load(manifest, tmp_path):
    """Isotonic calibration and the uncertain band go into the saved config, which Detector follows; the recipe's
    neutralization is recorded, and evaluate reapplies it: its AUC on the val split is the one training measured."""
    from fakescope.detector import Detector
    from fakescope.evaluate import evaluate
    from fakescope.train.augment import recipe_preprocessing

    neutral = replace(PLAIN, bottom_crop=0.06, base_jpeg_quality=75)
    saved = train(_config(manifest, tmp_path, epochs=1, calibration="isotonic", band=(0.2, 0.8), augment=neutral),
                  progress=False)
    model = load_model(tmp_path / "model")
    assert (model.config.calibration.method, model.config.band, model.config.threshold) == ("isotonic", (0.2, 0.8), 0.5)
    assert recipe_preprocessing(model.config) == neutral
    rows = pd.read_csv(manifest)
    rows = rows[rows["split"] == "val"].assign(uri=lambda r: [os.path.join(os.path.dirname(manifest), u) for u in r["uri"]])
    detector = Detector(model, provenance=False)
    assert (detector.threshold, detector.band) == (0.5, (0.2, 0.8))
    found = detector.predict(rows["uri"].tolist())
    probs = apply_calibration(model.config.calibration, detector.predict_logits([Image.open(u) for u in rows["uri"]]))
    assert [d.probability for d in found] == pytest.approx(probs.tolist())
    assert [d.verdict for d in found] == ["ai" if p >= 0.8 else "real" if p < 0.2 else "uncertain" for p in probs]
    report = evaluate(tmp_path / "model", rows, "val", robustness=False, bootstrap=0, provenance=False, device="cpu")
    assert report.preprocessing["bottom_crop"] == 0.06
    assert report.pixel_overall["auc"] == pytest.approx(saved.metrics["val"]["auc"])


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_a_val_split_separated_perfectly_warns_that_calibration_saturates(manifest, tmp_path, caplog, method):
    """Temperature scaling of a separable val split fitted T = 0.002: a test image on the wrong side got P(ai) 0.000."""
    with caplog.at_level("WARNING", logger="fakescope"):
        saved = train(_config(manifest, tmp_path, epochs=2, calibration=method), progress=False)
    assert saved.metrics["val"]["auc"] == 1.0
    assert (f"the best epoch separates the val split's 16 images perfectly, so its {method} calibration saturates"
            in caplog.text)
    logits = np.linspace(-20, 20, 4001)
    probs = apply_calibration(saved.calibration, logits)
    assert ((probs > 0.3) & (probs < 0.7)).mean() < 0.01  # what the warning says: the band catches almost nothing


def test_same_seed_gives_identical_weights(manifest, tmp_path):
    train(_config(manifest, tmp_path / "a", epochs=1), progress=False)
    train(_config(manifest, tmp_path / "b", epochs=1), progress=False)
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_recorded_config_replayed_by_the_cli_gives_the_same_weights_and_a_model_detect_loads(manifest, tmp_path,
                                                                                                  one_epoch_run):
    """`fakescope train OUT/train_config.yaml -o OTHER` on the CPU retrains the run bit for bit, as docs/training.md says."""
    run = one_epoch_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["train", str(run / "train_config.yaml"), "-o", str(tmp_path / "again"), "--no-progress"])
    assert result.exit_code == 0, result.output
    a, b = (load_file(folder / "model" / "model.safetensors") for folder in (run, tmp_path / "again"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first, again = (yaml.safe_load((folder / "train_config.yaml").read_text()) for folder in (run, tmp_path / "again"))
    assert {**first, "out": None} == {**again, "out": None}
    image = os.path.join(os.path.dirname(manifest), "test", "ai", "0.png")
    result = CliRunner().invoke(app, ["detect", image, "-m", str(tmp_path / "again" / "model"), "--format", "jsonl",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["model"], found["threshold"]) == (first["name"], 0.5)


def test_metrics_csv_has_the_columns_the_docs_document(one_epoch_run, tmp_path):
    training = (Path(__file__).parents[2] / "docs" / "training.md").read_text()
    documented = re.search(r"metrics\.csv has a row per epoch with columns ([\w, ]+) \(", training).group(1).split(", ")
    with open(one_epoch_run(tmp_path) / "metrics.csv") as f:
        assert next(csv.reader(f)) == documented


@pytest.mark.parametrize(("asked", "env", "used"), [
    ("cuda:1", {}, "cuda:1"),  # one process: the card asked for
    ("cuda:1", {"LOCAL_RANK": "0"}, "cuda:1"),  # a stray LOCAL_RANK outside torchrun moves nothing
    ("cuda:1", {"WORLD_SIZE": "1", "LOCAL_RANK": "0"}, "cuda:1"),  # torchrun with one process
    ("cuda", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:1"),  # torchrun: LOCAL_RANK picks the card
    ("cuda:1", {"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "cuda:0"),  # ... also over an index (with a warning)
    ("cpu", {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cpu"),
])
def test_a_process_uses_the_device_asked_for_and_under_torchrun_card_local_rank(asked, env, used):
    assert process_device(torch.device(asked), env) == torch.device(used)


def test_a_device_string_with_an_index_trains_saves_and_resumes(manifest, tmp_path):
    """`cpu:0` once trained every epoch, then failed to load best.pt ("don't know how to restore data location")."""
    train(_config(manifest, tmp_path, epochs=1, device="cpu:0"), progress=False)
    saved = train(_config(manifest, tmp_path, epochs=2, device="cpu:0", resume=True), progress=False)
    assert (tmp_path / "model" / "model.safetensors").is_file() and saved.metrics["val"]["n"] == 16


def test_resume_continues_from_the_last_checkpoint(manifest, tmp_path):
    train(_config(manifest, tmp_path, epochs=2), progress=False)
    train(_config(manifest, tmp_path, epochs=3, resume=True), progress=False)
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    model = (tmp_path / "model" / "config.json").read_text()
    with pytest.raises(ConfigError, match=re.escape(f"cannot resume from {tmp_path / 'checkpoint.pt'}: it has trained 3 "
                                                    "epochs, more than this run's epochs 2; ask for at least 3")):
        train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)  # else recorded as a 2-epoch model
    assert (tmp_path / "model" / "config.json").read_text() == model
    assert yaml.safe_load((tmp_path / "train_config.yaml").read_text())["epochs"] == 3


@pytest.mark.slow
def test_a_run_killed_after_its_first_checkpoint_resumes_to_the_weights_of_an_unbroken_run(manifest, tmp_path):
    """The checkpoint held Python's random state but not torch's: a resumed run drew other dropout masks than an
    unbroken one (efficientnet_lite0's recipe has dropout), and ended with other weights."""
    import signal
    import subprocess
    import sys
    import time

    cfg = _config(manifest, tmp_path / "killed", epochs=2, samples_per_epoch=128, architecture_kwargs={"drop_rate": 0.5})
    train(replace(cfg, out=str(tmp_path / "unbroken")), progress=False)
    cfg.to_yaml(tmp_path / "train.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "fakescope", "train", str(tmp_path / "train.yaml"), "--no-progress"],
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})  # as this process
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["epoch"] == 1  # killed in epoch 2
    train(replace(cfg, resume=True), progress=False)
    unbroken, resumed = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("unbroken", "killed"))
    assert resumed["epoch"] == unbroken["epoch"] == 2
    assert all(torch.equal(resumed["network"][k], unbroken["network"][k]) for k in unbroken["network"])
    logs = [pd.read_csv(tmp_path / run / "metrics.csv")[["epoch", "train_loss", "val_auc"]] for run in ("unbroken", "killed")]
    assert logs[0].equals(logs[1])


def test_resume_refuses_another_recipe_or_other_rows_but_takes_more_epochs(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path / "run")
    recorded = (tmp_path / "run" / "train_config.yaml").read_text()
    fewer = os.path.join(os.path.dirname(manifest), "fewer.csv")  # beside it: its uris are relative
    rows = pd.read_csv(manifest)
    rows.drop(index=rows.index[rows["split"] == "train"][:4]).to_csv(fewer, index=False)
    for source, changes, message in ((manifest, {"lr": 0.1, "seed": 3}, "this run changes lr 0.003 -> 0.1, seed 0 -> 3;"),
                                     (fewer, {}, "this run changes the manifest's train/val rows;"),
                                     (manifest, {"augment": replace(PLAIN, jpeg_prob=0.5)}, "augment.jpeg_prob 0.0 -> 0.5"),
                                     (manifest, {"augment": replace(PLAIN, small_images="upscale")}, "augment.small_images 'pad' -> 'upscale'")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            train(_config(source, tmp_path / "run", epochs=2, resume=True, **changes), progress=False)
    assert (tmp_path / "run" / "train_config.yaml").read_text() == recorded
    train(_config(manifest, tmp_path / "run", epochs=2, resume=True, patience=5, num_workers=1), progress=False)
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_resume_in_a_folder_without_a_checkpoint_warns_that_it_starts_over(manifest, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="fakescope"):
        train(_config(manifest, tmp_path / "typo", epochs=1, resume=True), progress=False)
    assert f"nothing to resume in {tmp_path / 'typo'} (no checkpoint.pt): training from the first epoch" in caplog.text


def test_resume_logs_each_epoch_once_when_killed_between_the_log_and_the_checkpoint(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path)
    after_epoch_1 = (tmp_path / "checkpoint.pt").read_bytes()
    train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(after_epoch_1)  # epoch 2 logged, its checkpoint never written
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("3,0.5")  # and a row cut short
    train(_config(manifest, tmp_path, epochs=3, resume=True), progress=False)
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_a_resumed_run_killed_in_its_first_epoch_keeps_the_logged_epochs(manifest, tmp_path, one_epoch_run, monkeypatch):
    """A resume rewrote metrics.csv (truncated) and kept the earlier epochs' rows in an unflushed buffer until its
    first epoch was logged: a kill (SIGKILL, out of memory, torchrun's after its grace period) then lost them."""
    from fakescope.train.loop import Loop

    one_epoch_run(tmp_path)
    logged = (tmp_path / "metrics.csv").read_text()
    on_disk = []

    def killed(loop, epoch, progress):  # what the folder holds when the process dies here
        on_disk.append((tmp_path / "metrics.csv").read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(Loop, "run_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    assert on_disk == [logged] and len(logged.splitlines()) == 2


def test_tensorboard_shows_each_epoch_once_after_a_resume_or_a_rerun(manifest, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (the train extra) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_config(manifest, tmp_path, epochs=2), progress=False)
    train(_config(manifest, tmp_path, epochs=1, overwrite=True), progress=False)  # a fresh run over the first
    after_epoch_1 = (tmp_path / "checkpoint.pt").read_bytes()
    train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(after_epoch_1)  # epoch 2 logged, its checkpoint never written
    train(_config(manifest, tmp_path, epochs=3, resume=True), progress=False)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_auc")] == [1, 2, 3]


def test_resume_from_a_truncated_checkpoint_is_refused_in_one_line(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    for damaged in (checkpoint.read_bytes()[:2000], b""):
        checkpoint.write_bytes(damaged)
        _config(manifest, tmp_path / "run", epochs=2).to_yaml(tmp_path / "train.yaml")
        result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--resume", "--no-progress"])
        assert result.exit_code == 2, result.output
        assert f"cannot resume from {checkpoint}: unreadable checkpoint" in result.output
        assert "Traceback" not in result.output and "Aborted" not in result.output


def test_resume_from_a_checkpoint_of_a_newer_format_is_refused_in_one_line_and_one_without_a_format_resumes(
        manifest, tmp_path, one_epoch_run):
    """A newer fakescope's checkpoint may hold state this one would leave unrestored (the resumed run then differs)."""
    from fakescope import __version__

    one_epoch_run(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["format"] == 1
    torch.save({**state, "format": 2}, checkpoint)
    _config(manifest, tmp_path / "run", epochs=2).to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--resume", "--no-progress"])
    assert result.exit_code == 2 and result.stderr == (
        f"error: cannot resume from {checkpoint}: written by a newer fakescope (checkpoint format 2; fakescope {__version__} "
        "reads 1): upgrade fakescope, or replace the run with --overwrite\n"), result.output
    torch.save({k: v for k, v in state.items() if k != "format"}, checkpoint)  # as versions before the format wrote it
    train(_config(manifest, tmp_path / "run", epochs=2, resume=True), progress=False)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2


class _Planted:
    """Unpickling this runs code: it touches `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_resume_never_runs_code_planted_in_a_checkpoint(manifest, tmp_path, one_epoch_run):
    """A run folder from elsewhere may hold a pickle that runs code; checkpoints hold tensors and plain values."""
    one_epoch_run(tmp_path / "run")
    checkpoint, marker = tmp_path / "run" / "checkpoint.pt", tmp_path / "planted"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "best_auc": _Planted(marker)}, checkpoint)
    with pytest.raises(ConfigError, match=f"cannot resume from {re.escape(str(checkpoint))}: unreadable checkpoint"):
        train(_config(manifest, tmp_path / "run", epochs=2, resume=True), progress=False)
    assert not marker.exists()


def test_a_run_killed_while_saving_its_checkpoint_keeps_the_previous_one(manifest, tmp_path, monkeypatch, one_epoch_run):
    one_epoch_run(tmp_path)
    save = torch.save

    def killed_midway(state, path):
        if "checkpoint.pt" in str(path):  # the kill comes halfway through writing it
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        save(state, path)

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("writes", [1, 2])
def test_best_pt_follows_the_checkpoint_whichever_of_an_epochs_files_a_kill_follows(manifest, tmp_path, monkeypatch,
                                                                                     one_epoch_run, writes):
    """best.pt written before the checkpoint and a kill between them: a resume re-ran the epoch from a checkpoint that
    recorded an older best AUC than best.pt's, and could replace best.pt with a worse model or stop early from the
    wrong best."""
    one_epoch_run(tmp_path)
    first_best = torch.load(tmp_path / "best.pt", weights_only=True)["network"]
    rename, renamed = os.replace, []

    def killed_after(src, dst):  # the kill comes right after the epoch's first (or second) .pt file is whole
        rename(src, dst)
        renamed.append(str(dst))
        if sum(name.endswith(".pt") for name in renamed) == writes:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed_after)
    with pytest.raises(KeyboardInterrupt):
        train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    monkeypatch.undo()
    best, state = torch.load(tmp_path / "best.pt", weights_only=True), torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    best = best["network"]
    assert any(all(torch.equal(best[k], w[k]) for k in best) for w in (first_best, state["network"]))  # never ahead
    train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    aucs = pd.read_csv(tmp_path / "metrics.csv")["val_auc"].tolist()
    assert aucs[1] > aucs[0], aucs  # the second epoch is the best: both files were due
    best, state = torch.load(tmp_path / "best.pt", weights_only=True), torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["stale"], state["best_auc"]) == (2, 0, max(aucs))
    assert (best["epoch"], best["val_auc"]) == (2, max(aucs))  # recorded with them
    best = best["network"]
    assert all(torch.equal(best[k], state["network"][k]) for k in best)  # the best epoch's weights, caught up


def test_resume_keeps_the_columns_of_an_older_metrics_file(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path)
    metrics = tmp_path / "metrics.csv"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")  # as written before the lr column
    train(_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    with open(metrics) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "train_loss", "val_auc", "seconds"] and [len(r) for r in rows] == [4, 4, 4]


def test_resume_with_more_epochs_follows_the_longer_runs_schedule(manifest, tmp_path):
    train(_config(manifest, tmp_path / "straight", epochs=4, patience=9), progress=False)
    train(_config(manifest, tmp_path / "resumed", epochs=2, patience=9), progress=False)
    train(_config(manifest, tmp_path / "resumed", epochs=4, patience=9, resume=True), progress=False)
    lrs = {}
    for run in ("straight", "resumed"):
        with open(tmp_path / run / "metrics.csv") as f:
            lrs[run] = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs["resumed"][2:] == pytest.approx(lrs["straight"][2:], rel=1e-9)
    assert lrs["resumed"][2] > 10 * lrs["resumed"][1]  # not left at the shorter run's final learning rate


def test_the_schedule_ends_at_its_floor_when_an_epoch_is_not_whole_batches(manifest, tmp_path):
    train(_config(manifest, tmp_path, epochs=2, samples_per_epoch=120, patience=9), progress=False)  # 7.5 batches
    with open(tmp_path / "metrics.csv") as f:
        last_lr = float(list(csv.DictReader(f))[-1]["lr"])
    assert last_lr == pytest.approx(0.003 / 25 / 1e4)  # OneCycleLR's final learning rate


def test_rows_given_as_a_frame_are_checked_as_a_manifest_file_is(manifest, tmp_path, caplog):
    rows = pd.read_csv(manifest)
    rows["uri"] = [os.path.join(os.path.dirname(manifest), u) for u in rows["uri"]]
    rows["label"] = rows["label"].map({"real": "Real", "ai": "fake"})  # once NaN targets, trained on silently
    rows.loc[rows["label"].eq("fake").idxmax(), "label"] = "AI"
    rows.loc[rows.index[-1], "split"] = None  # unsplit: left out, and said so
    with pytest.raises(ConfigError, match=r"^the manifest rows: unknown split\(s\) 'Test'; expected train, val, test or "
                                          r"empty \(unsplit\)$"):
        train(_config("unused.csv", tmp_path / "typo", epochs=1), rows.replace({"split": {"test": "Test"}}), progress=False)
    assert not (tmp_path / "typo").exists()
    with caplog.at_level("WARNING", logger="fakescope"):
        saved = train(_config("unused.csv", tmp_path / "run", epochs=1), rows, progress=False)
    assert "1 unsplit manifest row(s) (empty split) left out: only train, val and test are used" in caplog.text
    assert saved.metrics["test"]["overall"]["n"] == 15
    assert saved.training["data"]["train/ai/synthetic"] == 24 and "manifest" not in saved.training  # no file read


def test_the_model_records_the_manifest_as_given_and_as_the_absolute_path_it_read(manifest, tmp_path, monkeypatch):
    """config.json recorded only `manifest.csv`, as given: which file that was depended on a folder recorded nowhere."""
    monkeypatch.chdir(os.path.dirname(manifest))
    train(_config("manifest.csv", tmp_path, epochs=1, samples_per_epoch=32), progress=False)
    monkeypatch.chdir(tmp_path)
    recorded = json.loads((tmp_path / "model" / "config.json").read_text())["training"]
    assert (recorded["recipe"]["manifest"], recorded["manifest"]) == ("manifest.csv", manifest)


@pytest.mark.parametrize(("keep", "message"), [
    (lambda r: r["label"] == "real", "the manifest's 'train' split has only real images; training needs images of both "
                                     "labels in it"),
    (lambda r: (r["split"] != "val") | (r["label"] == "ai"), "the manifest's 'val' split has only ai images; "),
    (lambda r: r["split"] != "val", "the manifest's 'val' split has no rows; "),
])
def test_a_train_or_val_split_without_both_labels_says_what_it_holds(manifest, tmp_path, keep, message):
    rows = pd.read_csv(manifest)
    rows["uri"] = [os.path.join(os.path.dirname(manifest), u) for u in rows["uri"]]
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        train(_config("unused.csv", tmp_path / "run"), rows[keep(rows)], progress=False)
    rows["split"] = None
    with pytest.raises(ConfigError, match=re.escape("the manifest's 'train' split has no rows (80 unsplit: fakescope "
                                                    "dataset split assigns splits); ")):
        train(_config("unused.csv", tmp_path / "run"), rows, progress=False)
    assert not (tmp_path / "run").exists()


def test_an_epoch_smaller_than_one_batch_is_refused_not_left_untrained(manifest, tmp_path):
    with pytest.raises(ConfigError, match=r"an epoch of 8 draws .* is less than one batch of 16, so no step would be taken; "
                                          r"lower batch_size \(--batch-size\) or raise a config's samples_per_epoch$"):
        train(_config(manifest, tmp_path, samples_per_epoch=8), progress=False)


@pytest.fixture(scope="module")
def stopped_early(manifest, tmp_path_factory):
    """A run of up to 8 epochs that learns nothing (lr 0) with patience 1, trained once for the tests below. With 256
    draws an epoch its validation AUC still rises once (batch-norm statistics) before it stalls; with 64 it stalls
    at once, and the run would stop at its first chance."""
    out = tmp_path_factory.mktemp("stopped")
    train(_config(manifest, out, epochs=8, lr=0.0, patience=1, samples_per_epoch=256), progress=False)
    return out


def test_early_stopping_after_patience_epochs_without_a_better_validation_auc(stopped_early):
    with open(stopped_early / "metrics.csv") as f:
        aucs = [float(r["val_auc"]) for r in csv.DictReader(f)]
    stale_at = next(i for i in range(1, 8) if aucs[i] <= max(aucs[:i]))  # first epoch with no gain
    assert stale_at > 1, aucs  # an epoch with a gain came first, and did not stop the run
    assert len(aucs) == stale_at + 1
    state, best = (torch.load(stopped_early / name, weights_only=True) for name in ("checkpoint.pt", "best.pt"))
    assert (state["epoch"], best["epoch"], best["val_auc"]) == (stale_at + 1, stale_at, max(aucs))  # counted from 1
    saved = load_file(stopped_early / "model" / "model.safetensors")
    assert all(torch.equal(saved[k], best["network"][k]) for k in saved)  # the best epoch's weights, not the last's
    assert not all(torch.equal(saved[k], state["network"][k]) for k in saved)


def test_resuming_a_run_that_stopped_early_trains_no_further(manifest, stopped_early, tmp_path):
    shutil.copytree(stopped_early, tmp_path, dirs_exist_ok=True)  # the shared run stays as trained
    before = (tmp_path / "metrics.csv").read_text()
    assert len(before.splitlines()) < 9  # it stopped early
    train(_config(manifest, tmp_path, epochs=8, lr=0.0, patience=1, samples_per_epoch=256, resume=True), progress=False)
    assert (tmp_path / "metrics.csv").read_text() == before


@pytest.mark.parametrize("ahead", [False, True])
def test_resume_tells_which_epoch_an_older_best_pt_holds(manifest, stopped_early, tmp_path, caplog, ahead):
    """best.pt recorded no epoch, and an older fakescope wrote it before its epoch's checkpoint: a kill between them,
    after an epoch that did not improve, left one an epoch ahead that a resume kept as the best the checkpoint
    records. best.pt now records its epoch and AUC; an older one is read, and taken as the next epoch's when it is
    newer than the checkpoint: the resumed run warns and takes its next epoch as its best so far."""
    shutil.copytree(stopped_early, tmp_path, dirs_exist_ok=True)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    recorded = torch.load(tmp_path / "best.pt", weights_only=True)
    assert (recorded["epoch"], recorded["val_auc"]) == (state["epoch"] - state["stale"], state["best_auc"])
    torch.save(recorded["network"], tmp_path / "best.pt")  # as an older fakescope wrote it
    written = os.stat(tmp_path / "checkpoint.pt").st_mtime + (5 if ahead else -5)
    os.utime(tmp_path / "best.pt", (written, written))
    done = state["epoch"]
    train(_config(manifest, tmp_path, epochs=done + 1, lr=0.0, patience=9, samples_per_epoch=256, resume=True),
          progress=False)
    auc = pd.read_csv(tmp_path / "metrics.csv")["val_auc"].iloc[-1]
    best, state = torch.load(tmp_path / "best.pt", weights_only=True), torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    warned = f"holds epoch {done + 1}, not the best epoch its checkpoint records (epoch {done - 1}" in caplog.text
    if ahead:  # the new epoch is the best: its weights, epoch and AUC
        assert warned and (best["epoch"], best["val_auc"], state["best_auc"], state["stale"]) == (done + 1, auc, auc, 0)
        assert all(torch.equal(best["network"][k], state["network"][k]) for k in best["network"])
    else:  # the checkpoint's best, kept: this run's epoch did not improve on it
        assert not warned and auc <= recorded["val_auc"] and state["stale"] == 2
        assert all(torch.equal(best[k], recorded["network"][k]) for k in best)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_resume_over_a_damaged_or_missing_best_pt_trains_a_new_best_or_says_in_one_line(manifest, stopped_early, tmp_path,
                                                                                       caplog, damage):
    """A truncated best.pt (a copy cut short) ended a resume in torch's zip-reader traceback; so did a missing one at
    the end of a resume that had no epoch left to train. Both lose the checkpoint's best weights: the resumed run
    warns and takes its next epoch as its best, or, with none left, says so in one line."""
    shutil.copytree(stopped_early, tmp_path, dirs_exist_ok=True)
    best = tmp_path / "best.pt"
    best.write_bytes(best.read_bytes()[:3000]) if damage == "truncated" else best.unlink()
    done = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"]
    cfg = _config(manifest, tmp_path, epochs=8, lr=0.0, patience=1, samples_per_epoch=256, resume=True)
    with pytest.raises(ConfigError, match=f"^cannot read the best epoch's weights {re.escape(str(best))}: .+; resume "
                                          r"with more --epochs \(or a higher patience\) to train a new best"):
        train(cfg, progress=False)  # it stopped early: no epoch left to train
    train(replace(cfg, epochs=done + 1, patience=9), progress=False)
    assert f"{best} is missing or unreadable, not the best epoch its checkpoint records" in caplog.text
    assert torch.load(best, weights_only=True)["epoch"] == done + 1


def test_cli_trains_from_a_manifest_with_flag_overrides(manifest, tmp_path):
    config = tmp_path / "train.yaml"
    cfg = _config(manifest, tmp_path / "run", epochs=1)
    cfg.to_yaml(config)
    result = CliRunner().invoke(app, ["train", str(config), "--epochs", "2", "--name", "faces-mnv2", "--no-progress",
                                      "-o", str(tmp_path / "other"), "--lr", "0.002", "--seed", "7", "-b", "8"])
    assert result.exit_code == 0, result.output
    assert "auc=" in result.output
    recorded = yaml.safe_load((tmp_path / "other" / "train_config.yaml").read_text())  # the effective config
    assert {k: recorded[k] for k in ("out", "epochs", "lr", "seed", "batch_size")} == {
        "out": str(tmp_path / "other"), "epochs": 2, "lr": 0.002, "seed": 7, "batch_size": 8}
    assert not (tmp_path / "run").exists()
    assert load_model(tmp_path / "other" / "model").config.name == "faces-mnv2"  # over the YAML's name:


def test_a_config_without_a_name_is_named_after_its_output_folder(tmp_path):
    assert TrainConfig.from_dict({"manifest": "m.csv", "out": "runs/mnv2/"}).name == "mnv2"
    assert TrainConfig.from_dict({"manifest": "m.csv"}).name == "fakescope-detector"
    assert TrainConfig.from_dict({"manifest": "m.csv", "out": "."}).name == "fakescope-detector"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"manifest": "m.csv", "out": "runs/a", "name": "faces-v1"}))
    (tmp_path / "m.csv").touch()
    assert TrainConfig.from_yaml(config).name == "faces-v1"
    assert TrainConfig.from_yaml(config, out="runs/b").name == "faces-v1"
    assert TrainConfig.from_yaml(config, name="faces-v2").name == "faces-v2"


def test_a_relative_manifest_is_found_from_the_current_folder_else_from_the_configs(tmp_path, monkeypatch):
    """docs/training.md: `fakescope train recipes/default/train.yaml` from the repository root reads data/default/manifest.csv
    (the current folder's), a config elsewhere naming a manifest beside it reads that one."""
    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "m.csv").touch()
    (there / "train.yaml").write_text("manifest: data/m.csv\n")
    monkeypatch.chdir(here)
    assert TrainConfig.from_yaml(there / "train.yaml").manifest == "data/m.csv"
    (here / "data" / "m.csv").unlink()
    assert TrainConfig.from_yaml(there / "train.yaml").manifest == str(there / "data" / "m.csv")
    assert TrainConfig.from_yaml(there / "train.yaml", manifest="data/m.csv").manifest == "data/m.csv"  # a flag's: as given
    (there / "data" / "m.csv").unlink()
    with pytest.raises(ConfigError, match=re.escape(f"{there / 'train.yaml'}: manifest data/m.csv is found neither from the "
                                                    f"current folder ({here}) nor from the config's folder ({there})")):
        TrainConfig.from_yaml(there / "train.yaml")


@pytest.mark.parametrize("name", ["", "  "])
def test_a_blank_name_is_refused_in_python_and_filled_in_from_yaml(name):
    """`TrainConfig(name="")` was taken, and named the model nothing in reports and CAM captions."""
    with pytest.raises(ConfigError, match=f"^training config key 'name' must be non-blank text, got {name!r}$"):
        TrainConfig(manifest="m.csv", name=name)
    assert TrainConfig.from_dict({"manifest": "m.csv", "out": ".", "name": ""}).name == "fakescope-detector"


@pytest.mark.parametrize("name", ["", "  "])
def test_cli_refuses_a_blank_name_in_one_line(tmp_path, name):
    """`--name ""` was taken as no --name: the model was silently named after its folder."""
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"manifest": "m.csv", "out": str(tmp_path / "run")}))
    result = CliRunner().invoke(app, ["train", str(config), "--name", name, "--no-progress"])
    assert (result.exit_code, result.output) == (2, "error: --name must be non-blank text (leave it out to name the model "
                                                    f"after its folder), got {name!r}\n")
    assert not (tmp_path / "run").exists()


def test_cli_says_why_the_test_auc_is_nan(manifest, tmp_path):
    rows = pd.read_csv(manifest)
    one_label = os.path.join(os.path.dirname(manifest), "test_real_only.csv")  # beside it: its uris are relative
    rows[(rows["split"] != "test") | (rows["label"] == "real")].to_csv(one_label, index=False)
    cfg = _config(str(one_label), tmp_path / "run", epochs=1)
    cfg.to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "test auc=nan" in result.output and "(AUC needs both labels in the test split)" in result.output


def test_cli_reports_a_bad_manifest_in_one_line(tmp_path):
    bad = tmp_path / "m.csv"
    pd.DataFrame({"uri": ["a.png"], "label": ["real"]}).to_csv(bad, index=False)
    result = CliRunner().invoke(app, ["train", str(bad), "--no-progress"])
    assert result.exit_code == 2
    assert "missing column(s): split" in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_an_output_folder_that_is_a_file_in_one_line(manifest, tmp_path):
    (tmp_path / "taken").write_text("a file")
    _config(manifest, tmp_path / "taken", epochs=1).to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert f"cannot create the output folder {tmp_path / 'taken'}: File exists" in result.output


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143)])  # Ctrl-C; a scheduler's stop
def test_ctrl_c_or_sigterm_mid_epoch_says_how_to_continue_and_resume_finishes_the_run(manifest, tmp_path, signame, status):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cfg = _config(manifest, out, epochs=2, samples_per_epoch=512, batch_size=8, lr=1e-3)  # 64 steps: seconds
    cfg.to_yaml(tmp_path / "train.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "fakescope", "train", str(tmp_path / "train.yaml"), "--no-progress"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job ignores it
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(getattr(signal, signame))  # early in the second epoch
    assert proc.wait(timeout=60) == status
    assert proc.stderr.read() == (f"interrupted: {out} holds the last finished epoch; continue with fakescope train "
                                  f"{tmp_path / 'train.yaml'} --no-progress --resume\n")
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    if signame == "SIGINT":  # either signal leaves that same checkpoint: its resume (a whole epoch) is run once
        return
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1, 2]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/wchan").is_file(), reason="watches the command's write through Linux /proc")
@pytest.mark.parametrize("third", [False, True])
def test_a_second_sigterm_or_ctrl_c_while_the_first_is_reported_does_not_cut_the_resume_line(manifest, tmp_path, third):
    """The first SIGTERM's handler writes the --resume line to a stderr pipe that is full (a slow reader), so the write
    sleeps; a Ctrl-C then arrives, and dropped the line (exit 130, nothing said). A third signal (here a SIGTERM) ends
    the process at once, its write unfinished: a stop that hangs can still be left."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    _config(manifest, out, epochs=2, samples_per_epoch=512, batch_size=8, lr=1e-3).to_yaml(tmp_path / "train.yaml")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "fakescope", "train", str(tmp_path / "train.yaml"), "--no-progress"],
                            stderr=write_end, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job ignores it
    filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)  # its own, non-blocking, open of the pipe
    os.close(write_end)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        filled = 0
        while True:
            try:
                filled += os.write(filler, b"x" * 4096)
            except BlockingIOError:
                break

        def sleeps_writing() -> None:
            while proc.poll() is None and "pipe_write" not in Path(f"/proc/{proc.pid}/wchan").read_text() \
                    and time.monotonic() < deadline:
                time.sleep(0.02)

        proc.send_signal(signal.SIGTERM)  # early in the second epoch
        for later in (signal.SIGINT, signal.SIGTERM)[:2 if third else 1]:
            sleeps_writing()
            proc.send_signal(later)
        if third:
            proc.wait(timeout=60)  # while the pipe is still full
        sleeps_writing()
    finally:
        os.close(filler)
        with os.fdopen(read_end, "rb") as stderr:
            written = stderr.read()[filled:].decode()  # the pipe's other end closes when the command exits
        proc.wait(timeout=60)
    line = (f"interrupted: {out} holds the last finished epoch; continue with fakescope train {tmp_path / 'train.yaml'} "
            "--no-progress --resume\n")
    assert (proc.returncode, written) == (143, "" if third else line)


def test_exponent_numbers_in_a_yaml_config_are_numbers_not_text(tmp_path):
    path = tmp_path / "train.yaml"  # YAML reads 3e-4 without a dot as the text '3e-4'
    path.write_text("manifest: m.csv\nlr: 3e-4\nweight_decay: 1e-5\nband: [3e-1, 0.7]\naugment: {blur_prob: 1e-1}\n")
    (tmp_path / "m.csv").touch()
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.lr, cfg.weight_decay, cfg.band, cfg.augment.blur_prob) == (3e-4, 1e-5, (0.3, 0.7), 0.1)
    with pytest.raises(ConfigError, match="^training config key 'augment.noise_prob' must be a number, got 'often'$"):
        TrainConfig.from_dict({"manifest": "m.csv", "augment": {"noise_prob": "often"}})


def test_cli_names_a_misspelt_config_key_and_the_closest_one(tmp_path):
    config = tmp_path / "train.yaml"
    for body, message in (({"batch_szie": 8}, "unknown training config key 'batch_szie' (did you mean 'batch_size'?)"),
                          ({"augment": {"blur_prop": 0.5}}, "'augment.blur_prop' (did you mean 'augment.blur_prob'?)")):
        config.write_text(yaml.safe_dump({"manifest": "m.csv", **body}))
        result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
        assert result.exit_code == 2
        assert message in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("body", "message"), [
    ("lr: fast", "training config key 'lr' must be a number, got 'fast'"),
    ("epochs: ten", "training config key 'epochs' must be a whole number, got 'ten'"),
    ("amp: 1", "training config key 'amp' must be true or false, got 1"),
    ("epochs: 0", "training config key 'epochs' must be at least 1, got 0"),
    ("samples_per_epoch: 0", "training config key 'samples_per_epoch' must be at least 1, got 0"),
    ("crop_size: -5", "training config key 'crop_size' must be at least 1, got -5"),
    ("crop_size: 100000", "training config key 'crop_size' must be at most 2048 (a tile's side in pixels), got 100000"),
    ("grid: 33", "training config key 'grid' must be a whole number from 1 to 32 (tiles per side), got 33"),
    ("lr: .nan", "training config key 'lr' must be a finite number, at least 0, got nan"),
    ("weight_decay: .inf", "training config key 'weight_decay' must be a finite number, at least 0, got inf"),
    ("band: 0.5", "training config key 'band' must be a pair [low, high] of numbers, got 0.5"),
    ("band: [0.6, 0.8]", "training config key 'band' must be a pair [low, high] with 0 <= low <= 0.5 (the threshold) "
                         "<= high <= 1, got [0.6, 0.8]"),
    ("band: [0.7, 0.3]", "training config key 'band' must be a pair [low, high] with 0 <= low <= 0.5"),
    ("seed: -1", "training config key 'seed' must be within [0, 4294967295], got -1"),
    ("seed: 4294967296", "training config key 'seed' must be within [0, 4294967295], got 4294967296"),
    ("augment: 5", "training config key 'augment' must be a mapping of augment keys, got 5"),
    ("augment: {jpeg_quality: 70}", "key 'augment.jpeg_quality' must be a pair [low, high] of whole numbers, got 70"),
    ("augment: {resize_scale: [0.5]}", "key 'augment.resize_scale' must be a pair [low, high] of numbers, got (0.5,)"),
    ("- manifest: m.csv", "is not a training config: it holds a list, not a mapping of keys"),
    ("augment: {jpeg_quality: [98, 60]}", "key 'augment.jpeg_quality' must be a pair [low, high] with low <= high, both "
                                          "within [0, 100], got [98, 60]"),
    ("augment: {noise_std: [-1.0, 2.0]}", "key 'augment.noise_std' must be a pair [low, high] with low <= high, both "
                                          "finite, at least 0, got [-1.0, 2.0]"),
    ("augment: {resize_scale: [0.5, .inf]}", "key 'augment.resize_scale' must be a pair [low, high] with low <= high, "
                                             "both finite, at least 0, got [0.5, inf]"),
    ("augment: {base_jpeg_quality: 150}", "key 'augment.base_jpeg_quality' must be within [0, 100], got 150"),
    ("augment: {blur_prob: 1.5}", "key 'augment.blur_prob' must be within [0, 1], got 1.5"),
    ("architecture: efficientnet_lite", "training config key 'architecture': unknown architecture 'efficientnet_lite'; "
                                        "did you mean efficientnet_lite2, efficientnet_lite1, efficientnet_lite0?"),
])
def test_cli_refuses_a_config_value_of_the_wrong_type_or_range_in_one_line(tmp_path, body, message):
    config = tmp_path / "train.yaml"
    config.write_text(body if body.startswith("-") else f"manifest: m.csv\n{body}\n")
    result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_refuses_a_binary_file_given_as_the_config_in_one_line(tmp_path):
    """An image given where the YAML config (or a manifest) belongs ended in a UnicodeDecodeError traceback."""
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    result = CliRunner().invoke(app, ["train", str(image), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output == f"error: {image} is not a YAML training config: it is not UTF-8 text\n"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("train.yaml", b"manifest: [a\nepochs: 2\n", "train.yaml is not valid YAML at line 2, column 7: expected ',' or ']', "
                                                 "but got ':'"),
    ("train.yaml", b"PAR1\xb8\x00\x15", "train.yaml is not a YAML training config: it is not UTF-8 text"),
    ("m.parquet", b"PAR1", "m.parquet is a manifest, not a YAML training config; name it in one (manifest: "),
])
def test_evaluate_logo_refuses_a_config_that_is_no_yaml_in_one_line(tmp_path, name, content, message):
    """`train` takes a manifest for a config; `evaluate-logo` tests a recipe and needs one."""
    (tmp_path / name).write_bytes(content)
    result = CliRunner().invoke(app, ["evaluate-logo", str(tmp_path / name), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output


def test_an_unknown_calibration_method_is_refused_before_training(manifest, tmp_path):
    with pytest.raises(ConfigError, match=re.escape("unknown calibration method 'platt' (use temperature or isotonic)")):
        train(TrainConfig.from_dict({**_config(manifest, tmp_path).to_dict(), "calibration": "platt"}), progress=False)
    assert not (tmp_path / "best.pt").exists()


def test_an_unknown_architecture_is_refused_when_the_config_is_made():
    """It was accepted, and refused only by train() once it had read the manifest."""
    with pytest.raises(ConfigError, match=r"^training config key 'architecture': unknown architecture 'nope'; known: "
                                          r"efficientnet_lite0, .*, test_tiny; for one of your own, import its module"):
        TrainConfig(manifest="m.csv", architecture="nope")
    assert TrainConfig(manifest="m.csv", architecture="test_tiny").architecture == "test_tiny"


def test_the_default_source_balance_trains_a_manifest_without_sources(manifest, tmp_path):
    bare = os.path.join(os.path.dirname(manifest), "no_sources.csv")  # beside it: its uris are relative
    pd.read_csv(manifest).drop(columns=["source"]).to_csv(bare, index=False)
    saved = train(_config(bare, tmp_path, epochs=1, balance="source"), progress=False)
    assert saved.metrics["test"]["overall"]["n"] == 16


def test_the_source_balance_gives_reals_without_a_source_half_the_draws():
    rows = pd.DataFrame({"label": ["real"] * 4 + ["ai"] * 6, "source": [None] * 4 + ["gan"] * 2 + ["diffusion"] * 4})
    weights = balanced_sampler(rows, "source", 10, 0).weights.numpy()
    assert weights[:4].sum() == pytest.approx(weights[4:].sum())  # each label half the draws
    assert weights[4:6].sum() == pytest.approx(weights[6:].sum())  # each ai source a quarter


def test_balance_none_draws_samples_per_epoch_in_shuffled_passes_over_the_rows():
    rows = pd.DataFrame({"label": ["real", "ai"] * 5, "source": ["a"] * 10})
    draws = list(balanced_sampler(rows, "none", 25, 0))
    assert len(draws) == 25
    assert sorted(draws[:10]) == sorted(draws[10:20]) == list(range(10))


def test_cli_refuses_a_balance_column_the_manifest_lacks(manifest, tmp_path):
    _config(manifest, tmp_path / "run", balance="generatr").to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "balance 'generatr' names no manifest column; use none, label, or a column such as source" in result.output


def test_unreadable_images_are_skipped_with_a_warning_not_the_end_of_the_run(manifest, tmp_path, caplog):
    rows = pd.read_csv(manifest)
    rows["uri"] = [os.path.join(os.path.dirname(manifest), u) for u in rows["uri"]]
    broken = [rows.index[(rows["split"] == s) & (rows["label"] == "ai")][0] for s in ("train", "train", "val", "test")]
    broken[1] = rows.index[(rows["split"] == "train") & (rows["label"] == "real")][3]
    for n, row in enumerate(broken):
        (tmp_path / f"broken{n}.png").write_bytes(b"not an image")
        rows.loc[row, "uri"] = str(tmp_path / f"broken{n}.png")
    rows.loc[rows.index[rows["split"] == "train"][5], "uri"] = str(tmp_path / "gone.png")
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    with caplog.at_level("WARNING", logger="fakescope"):
        saved = train(_config(str(tmp_path / "manifest.csv"), tmp_path / "run", epochs=2, samples_per_epoch=512,
                              num_workers=2), progress=False)  # new loader workers each epoch
    skipped = [r.getMessage().split()[3][:-1] for r in caplog.records if r.getMessage().startswith("skipping unreadable image")]
    assert len(skipped) == len(set(skipped))  # each named once, by this process
    assert set(skipped) == {str(tmp_path / f) for f in ("broken0.png", "broken1.png", "broken2.png", "broken3.png", "gone.png")}
    assert saved.metrics["test"]["overall"]["n"] == 15 and saved.metrics["test"]["overall"]["auc"] > 0.85


@pytest.mark.parametrize(("num_workers", "tiny"), [(0, False), (1, False), (0, True)])
def test_a_label_with_no_readable_training_image_stops_in_one_line_also_in_loader_workers(manifest, tmp_path, num_workers,
                                                                                          tiny):
    """The error named the substitute drawn after the last failure (never tried) with no reason, so images too
    small to train on read as damaged ones; it names the last image tried and why."""
    rows = pd.read_csv(manifest)
    rows["uri"] = [os.path.join(os.path.dirname(manifest), u) for u in rows["uri"]]
    gone = (rows["split"] == "train") & (rows["label"] == "ai")
    rows.loc[gone, "uri"] = [str(tmp_path / f"moved{i}.png") for i in range(gone.sum())]
    for uri in rows.loc[gone, "uri"] if tiny else []:
        Image.new("RGB", (3, 2)).save(uri)
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    last = rf"{re.escape(str(tmp_path))}/moved\d+\.png: " + (r"image too small: 3x2 \(minimum side 32 px\)" if tiny else "no such file")
    with pytest.raises(ImageLoadError, match=rf"^9 images of one label in a row were unreadable, the last {last}$"):
        train(_config(str(tmp_path / "manifest.csv"), tmp_path / "run", epochs=1, num_workers=num_workers), progress=False)


def test_a_val_split_with_no_readable_image_of_one_label_is_refused_in_one_line(manifest, tmp_path):
    rows = pd.read_csv(manifest)
    rows["uri"] = [os.path.join(os.path.dirname(manifest), u) for u in rows["uri"]]
    gone = (rows["split"] == "val") & (rows["label"] == "ai")
    rows.loc[gone, "uri"] = [str(tmp_path / f"moved{i}.png") for i in range(gone.sum())]
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    _config(str(tmp_path / "manifest.csv"), tmp_path / "run", epochs=1).to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "the 'val' split has no readable images of one label left" in result.output
    assert "Traceback" not in result.output


def test_a_diverged_network_is_named_not_taken_for_unreadable_images(manifest, tmp_path):
    with pytest.raises(ConfigError, match=r"^training diverged in epoch 1 \(train loss .+, weights not finite\): lower lr$"):
        train(_config(manifest, tmp_path, epochs=2, lr=1e8), progress=False)


def test_validation_images_are_decoded_a_chunk_at_a_time(manifest, tmp_path, monkeypatch):
    from fakescope.detector import Detector
    from fakescope.train import dataset

    sizes, score = [], Detector.predict_logits
    monkeypatch.setattr(dataset, "VAL_CHUNK", 5)
    monkeypatch.setattr(Detector, "predict_logits", lambda self, images: sizes.append(len(images)) or score(self, images))
    saved = train(_config(manifest, tmp_path, epochs=1), progress=False)
    assert max(sizes) == 5 and saved.metrics["test"]["overall"]["n"] == 16
