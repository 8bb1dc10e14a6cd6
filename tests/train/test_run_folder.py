"""An output folder that already holds a run: refused unless --resume continues it or --overwrite replaces it."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from train_helpers import train_config
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import ConfigError, FakescopeError
from fakescope.evaluate import generalization
from fakescope.models import load_model
from fakescope.train import TrainConfig, train

REFUSED = "already holds a training run ({}); continue it with --resume or replace it with --overwrite"


def _epochs(folder: Path) -> list[int]:
    with open(folder / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_training_into_a_finished_run_is_refused_in_one_line_and_keeps_it(manifest, tmp_path, one_epoch_run):
    run = one_epoch_run(tmp_path / "run")
    weights = (run / "model" / "model.safetensors").read_bytes()
    result = CliRunner().invoke(app, ["train", manifest, "-o", str(run), "--no-progress"])
    assert result.exit_code == 2, result.output
    held = "train_config.yaml, checkpoint.pt, best.pt, metrics.csv, metrics.json, model"  # and tensorboard, when installed
    assert result.output.count("\n") == 1
    assert re.search(re.escape(f"{run} {REFUSED.format(held)}").replace(r"model\)", r"model(, tensorboard)?\)"), result.output)
    assert "Traceback" not in result.output
    assert (run / "model" / "model.safetensors").read_bytes() == weights and _epochs(run) == [1]


def test_a_run_killed_before_it_finished_is_refused_too(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path)
    shutil.rmtree(tmp_path / "model")  # as if killed after the first checkpoint
    (tmp_path / "metrics.json").unlink()
    held = re.escape(REFUSED.format("train_config.yaml, checkpoint.pt, best.pt, metrics.csv"))
    held = held.replace(r"csv\)", r"csv(, tensorboard)?\)")
    with pytest.raises(ConfigError, match=held):
        train(train_config(manifest, tmp_path, epochs=2), progress=False)
    train(train_config(manifest, tmp_path, epochs=2, resume=True), progress=False)
    assert _epochs(tmp_path) == [1, 2]


def test_a_rerun_after_a_run_that_failed_in_its_first_epoch_is_told_to_overwrite(manifest, tmp_path):
    """A run stopped by bad data leaves train_config.yaml, metrics.csv (and tensorboard/) but no checkpoint: the rerun
    after fixing the data was refused as if the folder held a run, without saying it finished no epoch."""
    bad = tmp_path / "bad.csv"
    rows = pd.read_csv(manifest)
    rows["uri"] = [str(Path(manifest).parent / u) if s != "train" else str(tmp_path / "gone.png")
                   for u, s in zip(rows["uri"], rows["split"])]
    rows.to_csv(bad, index=False)
    run = tmp_path / "run"
    with pytest.raises(FakescopeError, match="images of one label in a row were unreadable"):
        train(train_config(str(bad), run, epochs=1), progress=False)
    train_config(manifest, run, epochs=1).to_yaml(tmp_path / "fixed.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "fixed.yaml"), "--no-progress"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert re.fullmatch(re.escape(f"error: {run} holds the files of a run that finished no epoch (train_config.yaml, "
                                  "metrics.csv") + r"(, tensorboard)?" + re.escape("; no checkpoint.pt); start it over with "
                                  "--overwrite, or --resume, which starts it from its first epoch (config keys overwrite: "
                                  "true / resume: true)\n"), result.output)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "fixed.yaml"), "--overwrite", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _epochs(run) == [1]


def test_overwrite_replaces_the_run(manifest, tmp_path):
    train(train_config(manifest, tmp_path / "run", epochs=2), progress=False)
    train_config(manifest, tmp_path / "run", epochs=2, seed=1).to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--overwrite", "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _epochs(tmp_path / "run") == [1]
    assert TrainConfig.from_yaml(tmp_path / "run" / "train_config.yaml").seed == 1


def test_the_recorded_config_neither_resumes_nor_overwrites_when_reused(manifest, tmp_path):
    train(train_config(manifest, tmp_path / "a", epochs=1), progress=False)
    train(train_config(manifest, tmp_path / "a", epochs=1, overwrite=True), progress=False)
    recorded = TrainConfig.from_yaml(tmp_path / "a" / "train_config.yaml")
    assert not (recorded.overwrite or recorded.resume)
    assert not (load_model(tmp_path / "a" / "model").config.training["recipe"]["overwrite"])
    train(train_config(manifest, tmp_path / "b", epochs=1), progress=False)
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'b'} already holds a training run")):
        train(TrainConfig.from_yaml(tmp_path / "a" / "train_config.yaml", out=str(tmp_path / "b")), progress=False)
    train(TrainConfig.from_yaml(tmp_path / "a" / "train_config.yaml", resume=True), progress=False)


def test_an_overwrite_that_fails_mid_run_keeps_the_old_model_and_none_of_its_other_files(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path)
    weights = (tmp_path / "model" / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="training diverged in epoch 1"):
        train(train_config(manifest, tmp_path, epochs=2, lr=1e8, overwrite=True), progress=False)
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == weights
    assert not any((tmp_path / name).exists() for name in ("checkpoint.pt", "best.pt", "metrics.json"))
    assert TrainConfig.from_yaml(tmp_path / "train_config.yaml").lr == 1e8


def test_an_overwrite_refused_before_training_leaves_the_old_run_whole(manifest, tmp_path, one_epoch_run):
    one_epoch_run(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="is less than one batch of 16"):
        train(train_config(manifest, tmp_path, overwrite=True, samples_per_epoch=8), progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_run_refused_before_training_leaves_no_empty_output_folder(manifest, tmp_path):
    for changes in ({"architecture": "nope"}, {"band": (0.8, 0.2)}, {"samples_per_epoch": 8}):
        with pytest.raises(FakescopeError):
            train(train_config(manifest, tmp_path / "run", **changes), progress=False)
        assert not (tmp_path / "run").exists()


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(ConfigError, match=r"^resume \(continue the run in out\) and overwrite \(replace it\) exclude each "
                                          r"other$"):
        TrainConfig(manifest="m.csv", resume=True, overwrite=True)


def test_a_resume_or_overwrite_flag_wins_over_the_config_key(manifest, tmp_path, one_epoch_run):
    """--no-resume and --no-overwrite were ignored, and a config's overwrite: true made the --resume line an
    interrupted run prints fail ("exclude each other"): a flag given now wins, and one asked for turns the other off."""
    run = one_epoch_run(tmp_path / "run")
    first_epoch = (run / "metrics.csv").read_text().splitlines()[1]
    train_config(manifest, run, epochs=2, overwrite=True).to_yaml(tmp_path / "overwrite.yaml")
    train_config(manifest, run, epochs=2, resume=True).to_yaml(tmp_path / "resume.yaml")
    for config, flags, refused in (("resume.yaml", ["--no-resume"], REFUSED.format(
                                        "train_config.yaml, checkpoint.pt, best.pt, metrics.csv, metrics.json, model, tensorboard")),
                                   ("overwrite.yaml", ["--resume", "--overwrite"], "resume (continue the run in out) and "
                                                                                   "overwrite (replace it) exclude each other")):
        result = CliRunner().invoke(app, ["train", str(tmp_path / config), *flags, "--no-progress"])
        assert result.exit_code == 2 and refused in result.output, result.output
    result = CliRunner().invoke(app, ["train", str(tmp_path / "overwrite.yaml"), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert _epochs(run) == [1, 2] and (run / "metrics.csv").read_text().splitlines()[1] == first_epoch  # resumed, not replaced


def _two_generators(manifest: str) -> pd.DataFrame:
    rows = pd.read_csv(manifest)
    rows["uri"] = [str(Path(manifest).parent / u) for u in rows["uri"]]
    ai = rows["label"] == "ai"
    rows.loc[ai, "generator"] = ["g1", "g2"] * (ai.sum() // 2)
    return rows


def test_logo_refuses_a_fold_folder_holding_a_run_before_any_fold_trains(manifest, tmp_path, monkeypatch):
    (tmp_path / "without-g2").mkdir()
    (tmp_path / "without-g2" / "checkpoint.pt").write_bytes(b"an earlier fold's run")
    monkeypatch.setattr(generalization, "train", lambda *a, **k: pytest.fail("trained a fold before refusing"))
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'without-g2'} {REFUSED.format('checkpoint.pt')}")):
        generalization.leave_one_generator_out(train_config(manifest, tmp_path), manifest=_two_generators(manifest))


def test_logo_rerun_with_resume_scores_the_finished_folds_again_without_training(manifest, tmp_path):
    cfg = train_config(manifest, tmp_path, epochs=1, crop_size=32, samples_per_epoch=32)
    rows = _two_generators(manifest)
    first = generalization.leave_one_generator_out(cfg, ["g1"], rows)
    log = (tmp_path / "without-g1" / "metrics.csv").read_text()
    again = generalization.leave_one_generator_out(TrainConfig(**{**cfg.__dict__, "resume": True}), ["g1"], rows)
    pd.testing.assert_frame_equal(first, again)
    assert (tmp_path / "without-g1" / "metrics.csv").read_text() == log


@pytest.mark.parametrize("command", ["train", "evaluate-logo"])
def test_a_storage_uri_as_output_folder_is_refused_not_written_to_a_local_s3_folder(manifest, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    train_config(manifest, "run").to_yaml(tmp_path / "train.yaml")
    result = CliRunner().invoke(app, [command, str(tmp_path / "train.yaml"), "-o", "s3://bucket/runs/a", "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.output == ("error: training config key 'out' must be a local folder path, not 's3://bucket/runs/a': a run "
                             "writes its checkpoints as it trains; copy OUT/model afterwards, or push it with fakescope "
                             "models push\n")
    assert not (tmp_path / "s3:").exists()


def test_logo_keeps_each_fold_in_its_own_folder_whatever_the_generator_is_called(manifest, tmp_path):
    rows = _two_generators(manifest)
    rows["generator"] = rows["generator"].map({"g1": "sd/v1.5", "g2": "sd"})
    cfg = train_config(manifest, tmp_path / "logo", epochs=1, crop_size=32, samples_per_epoch=32)
    generalization.leave_one_generator_out(cfg, ["sd", "sd/v1.5"], rows)
    assert sorted(p.name for p in (tmp_path / "logo").iterdir()) == ["without-sd", "without-sd%2Fv1.5"]
    assert all((tmp_path / "logo" / fold / "model" / "config.json").is_file() for fold in ("without-sd", "without-sd%2Fv1.5"))


def test_evaluate_logo_rerun_into_the_same_out_is_refused_in_one_line_naming_its_options(manifest, tmp_path):
    _two_generators(manifest).to_csv(tmp_path / "gens.csv", index=False)
    train_config(str(tmp_path / "gens.csv"), "unused").to_yaml(tmp_path / "train.yaml")
    (tmp_path / "logo" / "without-g1").mkdir(parents=True)
    (tmp_path / "logo" / "without-g1" / "train_config.yaml").write_text("an earlier evaluate-logo's fold")
    result = CliRunner().invoke(app, ["evaluate-logo", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "logo")])
    assert (result.exit_code, result.output) == (2, f"error: {tmp_path / 'logo' / 'without-g1'} holds the files of a run "
                                                    "that finished no epoch (train_config.yaml; no checkpoint.pt); start it "
                                                    "over with --overwrite, or --resume, which starts it from its first "
                                                    "epoch (config keys overwrite: true / resume: true)\n")
    assert sorted(p.name for p in (tmp_path / "logo").iterdir()) == ["without-g1"]  # no fold trained


def test_train_help_quotes_the_config_defaults_of_its_overriding_options():
    """`train --help` showed no default for --epochs, --batch-size, --lr, --seed...: each now quotes TrainConfig's."""
    defaults = TrainConfig(manifest="m.csv")
    text = " ".join(CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"}).output.split())
    for option, key in (("--out", "out"), ("--architecture", "architecture"), ("--epochs", "epochs"),
                        ("--batch-size", "batch_size"), ("--lr", "lr"), ("--device", "device"),
                        ("--num-workers", "num_workers"), ("--seed", "seed")):
        assert re.search(rf"{option} .*?default: the config's(?: out:)?, else {getattr(defaults, key)}\)", text), option
    assert defaults.pretrained is True and "else pretrained)" in text


def test_train_shows_progress_only_on_a_terminal_unless_told(manifest, tmp_path):
    """`train` showed its bars by default, into logs too, while evaluate and evaluate-logo did not: one rule for all now."""
    train_config(manifest, tmp_path / "run", epochs=1, samples_per_epoch=32).to_yaml(tmp_path / "train.yaml")
    quiet = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml")])  # stderr is no terminal here
    assert quiet.exit_code == 0 and "epoch 1/1" not in quiet.stderr, quiet.output
    shown = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--overwrite", "--progress"])
    assert shown.exit_code == 0 and "epoch 1/1" in shown.stderr, shown.output


@pytest.mark.skipif(not Path("/proc/self/io").is_file(), reason="counts the bytes read through Linux /proc")
def test_the_epoch_a_best_pt_records_is_read_without_reading_its_weights(tmp_path):
    """A resume read all of best.pt (a large network's hundreds of MB) for its epoch alone."""
    import torch

    from fakescope.train.run_folder import read_best, recorded_epoch, save_best

    weights = {"w": torch.ones(10_000_000)}  # 40 MB
    save_best(weights, tmp_path, 3, 0.9)
    torch.save(weights, tmp_path / "older.pt")  # as an older fakescope wrote it: the weights alone

    def read() -> int:
        return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])

    before = read()
    assert recorded_epoch(tmp_path / "best.pt") == 3
    assert read() - before < 1_000_000
    assert recorded_epoch(tmp_path / "older.pt") is None
    assert read_best(tmp_path / "best.pt", torch.device("cpu"))[1:] == (3, 0.9)


def test_a_run_logged_counting_epochs_from_0_resumes_counting_from_1(manifest, tmp_path, one_epoch_run):
    """metrics.csv counted epochs from 0, where progress bars, log lines, best.pt and checkpoints count from 1."""
    run = one_epoch_run(tmp_path / "run")
    assert _epochs(run) == [1]
    older = (run / "metrics.csv").read_text().replace("\n1,", "\n0,")  # as an older fakescope wrote it
    (run / "metrics.csv").write_text(older)
    train(train_config(manifest, run, epochs=2, resume=True), progress=False)
    assert _epochs(run) == [1, 2] and (run / "metrics.csv").read_text().startswith(older.replace("\n0,", "\n1,"))
