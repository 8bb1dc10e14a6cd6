"""`fakescope evaluate` and `fakescope evaluate-logo` through Typer's runner, plus the installed command."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import typer.main
import yaml
from evaluate_helpers import write_dataset
from typer.testing import CliRunner

from fakescope.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cliset")
    write_dataset(root, per_class=4)
    return str(root / "manifest.csv")


def test_evaluate_with_the_bundled_model(small_manifest, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(out), "--no-robustness",
                                 "--bootstrap", "1000", "--examples", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "fakescope-default on test: n=4 auc=" in result.output
    assert ("  intervals: only 2 ai and 2 real image(s): with fewer than 10 of a label the bootstrap intervals "
            "understate the uncertainty (a perfect ranking of 3 and 3 gets AUC [1, 1])") in result.output.splitlines()
    data = json.loads((out / "report.json").read_text())
    assert data["model"] == "fakescope-default" and data["overall"]["n"] == 4 and data["robustness"] == []
    assert [line for line in result.output.splitlines() if line.startswith(("  reals:", "  ai:"))] == [
        _rate_line(data, "reals", "false_positive_rate", ">="), _rate_line(data, "ai", "miss_rate", "<")]
    assert data["provenance"] is True and len(data["examples"]) == 4
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert result.output.splitlines()[-3:] == [f"wrote {out / name}" for name in ("report.html", "report.json", "scores.csv")]
    assert "evaluate" not in result.stderr  # no terminal: no progress unless asked
    shown = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(out), "--no-robustness",
                                "--bootstrap", "0", "--device", "cpu", "--progress"])
    assert shown.exit_code == 0 and "evaluate: " in shown.stderr, shown.output


def test_evaluate_one_perturbation_without_provenance(small_manifest, tmp_path):
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path), "--split", "all",
                                 "--perturbations", "jpeg_q50", "--no-provenance", "--bootstrap", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "n=8" in result.output and "jpeg_q50" in result.output
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["decided_by"] == {"pixel": 8} and data["intervals"] == {}


@pytest.mark.parametrize("extra", [[], ["--explain"]])
def test_an_unknown_split_is_named_before_any_work(small_manifest, tmp_path, extra, monkeypatch):
    """Not 'split 'Test' of the manifest is empty', nor after explaining no images, nor after importing the figures'
    packages (umap and pytorch_grad_cam took 17 s in CI): blocked here, they would be named instead."""
    for name in ("matplotlib", "umap", "pytorch_grad_cam"):
        monkeypatch.setitem(sys.modules, name, None)
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path / "out"),
                                 "--split", "Test", "--device", "cpu", *extra])
    assert (result.exit_code, result.output) == (2, "error: unknown split 'Test': use train, val, test or all\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("count", ["1", "999"])
def test_too_few_bootstrap_resamples_are_refused_before_any_work(small_manifest, tmp_path, count):
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path / "out"),
                                 "--bootstrap", count, "--no-robustness", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.output == (f"error: bootstrap of {count} resample(s) gives no meaningful 95% interval: use at least "
                             "1000, or 0 for no intervals\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("option", "value"), [("--perturbations", ","), ("--perturbations", " "), ("--attributes", ",")])
def test_a_list_option_naming_nothing_is_refused_not_read_as_all(small_manifest, tmp_path, option, value):
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path / "out"),
                                 option, value, "--bootstrap", "0", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.output == f"error: {option} {value!r} names nothing: give comma-separated names, or leave it out for all\n"
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["evaluate-logo", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "logo"),
                                 "--generators", value])
    assert result.exit_code == 2 and "error: --generators" in result.output and not (tmp_path / "logo").exists()


def test_a_manifest_without_split_column_evaluates_all_and_one_label_says_why_auc_is_nan(small_manifest, tmp_path):
    rows = pd.read_csv(small_manifest)
    rows.drop(columns="split").to_csv(tmp_path / "unsplit.csv", index=False)
    options = ["--out", str(tmp_path / "out"), "--no-robustness", "--no-provenance", "--device", "cpu"]
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "unsplit.csv"), "--split", "all",
                                 "--bootstrap", "0", *options])
    assert result.exit_code == 0 and "on all: n=8 " in result.output, result.output
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "unsplit.csv"), *options])
    assert result.exit_code == 2 and result.output == f"error: manifest {tmp_path / 'unsplit.csv'}: missing column(s): split\n"
    rows[rows["label"] == "real"].to_csv(tmp_path / "reals.csv", index=False)
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "reals.csv"), "--bootstrap", "1000", *options])
    assert result.exit_code == 0, result.output
    assert "auc=n/a balanced_accuracy=n/a eer=n/a" in result.output and "(AUC needs both labels in the test split)" in result.output
    data = json.loads((tmp_path / "out" / "report.json").read_text())  # no interval nor FP rate was printed for reals
    assert _rate_line(data, "reals", "false_positive_rate", ">=") in result.output.splitlines()
    assert "  ai:" not in result.output


def _rate_line(data: dict, label: str, error: str, side: str) -> str:
    """The console line of one label's rates, as report.json holds them."""
    wrong, unsure = data["rates"][error], data["rates"][f"uncertain_rate_{label.rstrip('s')}"]
    return (f"  {label}: {error}={wrong['value']:.4f} [{wrong['ci'][0]:.4f}, {wrong['ci'][1]:.4f}] ({wrong['count']} of "
            f"{wrong['of']} at P(ai) {side} {data['threshold']:g}), uncertain={unsure['value']:.4f} [{unsure['ci'][0]:.4f}, "
            f"{unsure['ci'][1]:.4f}] ({unsure['count']} of {unsure['of']})")


def test_parquet_list_and_mapping_columns_are_no_slices_and_refused_as_attributes(small_manifest, tmp_path):
    rows = pd.read_csv(small_manifest)
    rows.assign(tags=[["a", "b"], ["c"]] * 4, meta=[{"k": 1}, {"k": 2}] * 4).to_parquet(tmp_path / "m.parquet")
    options = ["--out", str(tmp_path / "out"), "--no-robustness", "--bootstrap", "0", "--no-provenance", "--device", "cpu"]
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "m.parquet"), *options])
    assert result.exit_code == 0, result.output
    assert list(json.loads((tmp_path / "out" / "report.json").read_text())["slices"]["attributes"]) == ["glasses"]
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "m.parquet"), "--attributes", "glasses,tags",
                                 *options])
    assert (result.exit_code, result.output) == (2, "error: attribute column(s) tags hold lists or mappings, not one value "
                                                    "per image to slice by\n")


def test_attribute_columns_left_unsliced_are_named_with_why(small_manifest, tmp_path):
    """A column of one value in the test split (or none) was left out of the slices without a word."""
    rows = pd.read_csv(small_manifest).assign(hat="no", notes="")
    rows.loc[rows["split"] != "test", "hat"] = "yes"  # constant in the split evaluated only
    rows.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "m.csv"), "--out", str(out),
                                 "--no-robustness", "--bootstrap", "0", "--no-provenance", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    line = "attribute columns not sliced: hat (one value, no, in every row that has one); notes (empty in every row)"
    assert f"  {line}\n" in result.output
    data = json.loads((out / "report.json").read_text())
    assert list(data["slices"]["attributes"]) == ["glasses"]
    assert data["slices"]["not_sliced"] == {"hat": "one value, no, in every row that has one", "notes": "empty in every row"}
    assert f"<p>{line}</p>" in (out / "report.html").read_text()


def test_unreadable_images_are_counted_on_the_console(small_manifest, tmp_path):
    manifest = tmp_path / "manifest.csv"
    lines = Path(small_manifest).read_text().splitlines()
    manifest.write_text("\n".join([*lines, f"{tmp_path / 'gone.png'},real,camera,,test,"]) + "\n")
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(manifest), "--out", str(tmp_path / "out"),
                                 "--no-robustness", "--bootstrap", "0", "--no-provenance", "--device", "cpu"])
    assert result.exit_code == 1, result.output  # the report is written; the exit status says an input failed
    assert (tmp_path / "out" / "report.html").is_file()
    assert "n=4 " in result.output  # the one left out, with why, and no "..." as if more were
    assert (f"  1 image(s) left out (unreadable or no finite score), listed in the report: {tmp_path / 'gone.png'} "
            "(no such file)\n") in result.output


def test_evaluate_errors_are_one_line(small_manifest, tmp_path):
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "none.csv"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output == f"error: {tmp_path / 'none.csv'}: no such file or folder\n"
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    result = runner.invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "bad.parquet"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output == f"error: {tmp_path / 'bad.parquet'} is not a manifest (.csv or .parquet): it is not a Parquet file\n"
    result = runner.invoke(app, ["evaluate", "no-such-model", small_manifest, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path), "--figure", "x"])
    assert result.exit_code == 2 and "TITLE=PATH" in result.output
    (tmp_path / "cam.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')  # once embedded as a broken PNG
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path / "out"),
                                 "--figure", f"CAM={tmp_path / 'cam.svg'}"])
    assert result.exit_code == 2 and result.output == f"error: {tmp_path / 'cam.svg'}: not a PNG or JPEG image, which report figures must be\n"
    assert not (tmp_path / "out").exists()  # refused before scoring


def _logo_recipe(tmp_path, samples_per_epoch: int, relabel=None):
    """A tiny LOGO recipe over `write_dataset` with both generators in every split; returns the config path."""
    frame = write_dataset(tmp_path / "data", per_class=12)
    frame["split"] = [("train", "val", "test")[(i // 4) % 3] for i in range(len(frame))]  # both generators in each
    if relabel:
        relabel(frame)
    frame.to_csv(tmp_path / "data" / "manifest.csv", index=False)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "manifest": str(tmp_path / "data" / "manifest.csv"), "architecture": "test_tiny", "pretrained": False,
        "crop_size": 32, "batch_size": 8, "samples_per_epoch": samples_per_epoch, "num_workers": 0, "device": "cpu",
        "augment": {"bottom_crop": 0.0, "base_jpeg_quality": None}}))
    return config


@pytest.mark.slow
def test_evaluate_logo_trains_one_run_per_generator(tmp_path):
    def pairs(frame):  # ai image i made from real image i, in its split: g1's in train and val are made from trained reals
        frame["pair_id"] = [f"p{i // 2}" for i in range(len(frame))]

    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=pairs)
    out = tmp_path / "logo"
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "g1,g2", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "logo.json").read_text())
    assert [r["held_out"] for r in data["runs"]] == ["g1", "g2"]
    assert set(data["matrix"]) == {"g1", "g2"} and set(data["matrix"]["g1"]) == {"g1", "g2"}
    assert data["runs"][0]["n_unseen"] == 6 and data["runs"][0]["auc_vs_g1"] == data["runs"][0]["auc_all"]
    assert type(data["runs"][0]["n_unseen"]) is int and (out / "logo.csv").read_text().splitlines()[1].startswith("g1,6,")
    g2_test = pd.read_csv(tmp_path / "data" / "manifest.csv").query("generator == 'g2' and split == 'test'")
    assert data["counts"]["g1"] == {"g1": 6, "g2": len(g2_test)} and "ai images behind each AUC" in result.output
    # one real source in this data, so the unseen generator against it equals against all reals
    assert data["by_real_source"] == {r["held_out"]: {"camera": r["auc_all"]} for r in data["runs"]}
    assert "against each real source alone" in result.output
    g1 = data["runs"][0]  # the unseen AUC with its interval, beside the fold's own test AUC (in the run's metrics)
    fold_metrics = json.loads((out / "without-g1" / "model" / "config.json").read_text())["metrics"]
    assert g1["auc_seen_test"] == fold_metrics["test"]["overall"]["auc"]
    assert 0.0 <= g1["auc_all_low"] <= g1["auc_all_high"] <= 1.0
    assert (f"  g1: unseen auc={g1['auc_all']:.4f} [{g1['auc_all_low']:.4f}, {g1['auc_all_high']:.4f}] (n=6)  "
            f"own test auc={g1['auc_seen_test']:.4f}") in result.output.splitlines()
    assert g1["n_paired_trained"] == 4 and (f"    4 of them were made from reals this run trained on (one pair_id): its "
                                            f"test-split images alone (auc_test={g1['auc_test']:.4f}) leave those out"
                                            ) in result.output.splitlines()
    assert (out / "without-g1" / "model" / "model.safetensors").is_file()
    assert result.output.splitlines()[-4:] == [f"wrote {out / 'logo.csv'}", f"wrote {out / 'logo.json'}",
                                               f"wrote {out / 'without-g1'}/ (the run trained without g1)",
                                               f"wrote {out / 'without-g2'}/ (the run trained without g2)"]
    assert "epoch 1/1" not in result.stderr  # no terminal: no progress unless asked


@pytest.mark.slow
def test_a_held_out_generator_whose_images_are_all_unreadable_is_named_with_why_it_has_no_auc(tmp_path):
    """It printed `unseen auc=nan [nan, nan] (n=0)`."""
    def break_g1(frame):
        for uri in frame.loc[frame["generator"] == "g1", "uri"]:
            Path(uri).write_bytes(b"not an image")

    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=break_g1)
    out = tmp_path / "logo"
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "g1", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    g1 = json.loads((out / "logo.json").read_text())["runs"][0]
    assert g1["n_unseen"] == 0
    assert (f"  g1: no unseen auc: none of its images could be read (each named in a warning)  "
            f"own test auc={g1['auc_seen_test']:.4f}") in result.output.splitlines()
    assert "nan" not in result.stdout


@pytest.mark.slow
def test_a_fold_with_no_ai_test_image_prints_n_a_not_nan(tmp_path):
    """With every ai image in train or val, the run's own test AUC and the held-out test images' AUC printed `nan`."""
    def no_ai_in_test(frame):
        ai = frame["label"] == "ai"
        frame.loc[ai, "split"] = [("train", "val")[i // 2 % 2] for i in range(int(ai.sum()))]  # g1 and g2 in each
        frame["pair_id"] = [f"p{i // 2}" for i in range(len(frame))]  # g1's images made from trained reals

    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=no_ai_in_test)
    out = tmp_path / "logo"
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "g1", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    g1 = json.loads((out / "logo.json").read_text())["runs"][0]
    assert g1["auc_seen_test"] is None and g1["auc_test"] is None and g1["n_paired_trained"] > 0
    assert "own test auc=n/a" in result.stdout and "(auc_test=n/a)" in result.stdout and "nan" not in result.stdout


@pytest.mark.slow
def test_evaluate_logo_takes_generators_named_by_numbers(tmp_path, monkeypatch):
    def versions(frame):
        frame["generator"] = frame["generator"].map({"g1": "2021", "g2": "2022"})  # reals: none, so the CSV column reads as floats

    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=versions)
    out = tmp_path / "logo"
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "2022", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "logo.json").read_text())
    assert [r["held_out"] for r in data["runs"]] == ["2022"] and set(data["matrix"]["2022"]) == {"2021", "2022"}
    assert (out / "without-2022" / "model").is_dir()
    from fakescope.evaluate import generalization

    def interrupted_while_writing(*args, **kwargs):  # a Ctrl-C there ended the command without a word
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(generalization, "save_generalization", interrupted_while_writing)
    again = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "2022", "--epochs", "1",
                                 "--resume"])
    assert again.exit_code == 130 and again.stderr == (f"interrupted: continue with fakescope evaluate-logo {config} --out "
                                                        f"{out} --generators 2022 --epochs 1 --resume (finished folds "
                                                        "are only scored again)\n"), again.output


@pytest.mark.slow
def test_evaluate_logo_by_source_holds_out_a_whole_family(tmp_path):
    def families(frame):
        ai = frame["label"] == "ai"
        frame.loc[ai, "source"] = ["family-a" if g == "g1" else "family-b" for g in frame.loc[ai, "generator"]]

    config = _logo_recipe(tmp_path, samples_per_epoch=64, relabel=families)
    out = tmp_path / "logo"
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--by", "source",
                                 "--generators", "family-a", "--epochs", "1", "--samples-per-epoch", "16",
                                 "--num-workers", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "logo.json").read_text())
    assert [r["held_out"] for r in data["runs"]] == ["family-a"] and data["runs"][0]["n_unseen"] == 6
    assert set(data["matrix"]["family-a"]) == {"family-a", "family-b"}
    assert data["recipe"]["samples_per_epoch"] == 16 and data["recipe"]["num_workers"] == 1


@pytest.mark.slow
def test_evaluate_logo_audits_each_folds_unseen_images_for_shortcuts(tmp_path, monkeypatch):
    """evaluate-logo ran no shortcut audit, so an unseen AUC that a file format alone gives read as transfer. Every
    fold audits the test reals: they are inspected once, by the first (they were again for each fold)."""
    from PIL import Image

    from fakescope.data import audit

    inspected, inspect, audits_read, map_images = [], audit.inspect_image, [], audit.map_images
    monkeypatch.setattr(audit, "inspect_image",
                        lambda data, name="", decoded=None: inspected.append(name) or inspect(data, name, decoded))
    monkeypatch.setattr(audit, "map_images", lambda fn, uris, **kw: audits_read.extend(uris) or map_images(fn, uris, **kw))

    def jpeg_g1(frame):  # g1's images JPEGs, every other image a PNG: the format alone tells g1 from the reals
        for i in frame.index[frame["generator"] == "g1"]:
            path = Path(frame.at[i, "uri"]).with_suffix(".jpg")
            Image.open(frame.at[i, "uri"]).save(path, quality=90)
            frame.at[i, "uri"] = str(path)

    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=jpeg_g1)
    out = tmp_path / "logo"
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "g1,g2", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert ("warning: in fold g1's unseen images and the test reals, file format alone separates real from ai "
            "(SHORTCUT, separability 1.00): the figures may measure it; see fakescope dataset audit") in warnings
    runs = {r["held_out"]: r for r in json.loads((out / "logo.json").read_text())["runs"]}
    assert "format" in runs["g1"]["shortcuts"]["flagged"] and "format" not in runs["g2"]["shortcuts"]["flagged"]
    assert runs["g1"]["shortcuts"]["inspected"] == {"ai": 6, "real": 4}  # g1's images and the test reals
    assert (runs["g1"]["n_unseen"], runs["g1"]["n_real"]) == (6, 4)
    assert len(inspected) == len(set(inspected)) == 6 + runs["g2"]["shortcuts"]["inspected"]["ai"] + 4
    assert audits_read == []  # g2's test images, kept unread from fold g1 for fold g2, were read by g2's audit
    assert ("    interval: only 6 ai and 4 real image(s): with fewer than 10 of a label the bootstrap intervals "
            "understate the uncertainty (a perfect ranking of 3 and 3 gets AUC [1, 1])") in result.output.splitlines()
    assert len(warnings) == sum(len(r["shortcuts"]["flagged"]) for r in runs.values())
    table = pd.read_csv(out / "logo.csv", keep_default_na=False).set_index("held_out")
    assert table.loc["g1", "shortcuts_flagged"].split("; ") == runs["g1"]["shortcuts"]["flagged"]
    again = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(out), "--generators", "g1", "--epochs", "1",
                                "--resume", "--no-audit"])
    assert again.exit_code == 0 and "warning: " not in again.stderr, again.output
    assert json.loads((out / "logo.json").read_text())["runs"][0]["shortcuts"] is None
    assert "shortcuts_flagged" not in pd.read_csv(out / "logo.csv").columns


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143)])  # Ctrl-C; a scheduler's stop
def test_ctrl_c_or_sigterm_during_evaluate_logo_says_how_to_continue(tmp_path, signame, status):
    import os
    import signal
    import sys
    import time

    config = _logo_recipe(tmp_path, samples_per_epoch=100_000)
    out = tmp_path / "logo"
    proc = subprocess.Popen([sys.executable, "-m", "fakescope", "evaluate-logo", str(config), "-o", str(out), "--by", "generator",
                             "--epochs", "1", "--overwrite"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job ignores it
    deadline = time.monotonic() + 240
    while not (out / "without-g1" / "train_config.yaml").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(getattr(signal, signame))  # in the first fold's epoch
    assert proc.wait(timeout=60) == status
    # the options that pick the folds and their epochs, else `--resume -o OUT` ran other folds or more epochs unasked
    assert proc.stderr.read() == (f"interrupted: continue with fakescope evaluate-logo {config} --out {out} --by "
                                  "generator --epochs 1 --resume (finished folds are only scored again)\n")


@pytest.mark.parametrize("relabel", [
    lambda frame: frame.__setitem__("generator", None),  # ai images of no named generator
    lambda frame: frame.__setitem__("label", "real"),  # reals only
])
def test_evaluate_logo_with_no_generator_to_hold_out_is_refused_in_one_line(tmp_path, relabel):
    """Not a KeyError traceback after writing an empty logo.csv."""
    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=relabel)
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(tmp_path / "logo")])
    assert (result.exit_code, result.output) == (2, "error: no ai image of the manifest names its generator (column "
                                                    "'generator'): there is none to hold out\n")
    assert not (tmp_path / "logo").exists()


def test_evaluate_logo_holds_out_by_generator_or_source_only(tmp_path):
    """--by uri (any column was taken) trained one model per ai image, without a word."""
    config = _logo_recipe(tmp_path, samples_per_epoch=16)
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(tmp_path / "logo"), "--by", "uri"])
    assert (result.exit_code, result.output) == (2, "error: cannot hold out by 'uri': use generator (one generator per "
                                                    "fold) or source (one ai source, a family, per fold)\n")
    assert not (tmp_path / "logo").exists()


@pytest.mark.parametrize("relabel", [
    lambda frame: frame.__setitem__("split", frame["split"].replace({"test": "val"})),  # no test split
    lambda frame: frame.__setitem__("label", frame["label"].where(frame["split"] != "test", "ai")),  # no test reals
])
def test_evaluate_logo_without_test_reals_is_refused_before_any_fold_trains(tmp_path, relabel):
    """Not a scikit-learn traceback after the first fold trained, nor a matrix of NaN."""
    config = _logo_recipe(tmp_path, samples_per_epoch=16, relabel=relabel)
    result = runner.invoke(app, ["evaluate-logo", str(config), "--out", str(tmp_path / "logo")])
    assert (result.exit_code, result.output) == (2, "error: the manifest's 'test' split has no real images, against which "
                                                    "every held-out generator is scored\n")
    assert not (tmp_path / "logo").exists()


@pytest.mark.skipif(shutil.which("fakescope") is None, reason="the fakescope command is not installed")
def test_installed_command_lists_both_verbs():
    done = subprocess.run(["fakescope", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "evaluate-logo" in done.stdout and "evaluate " in done.stdout


@pytest.mark.parametrize("option, value, error", [
    ("--perturbations", "jpeg_q75", "error: unknown perturbation(s) jpeg_q75; known: "),
    ("--attributes", "glases", "error: no attribute column(s) glases in the manifest; it has "),
])
def test_explain_figures_wait_until_every_option_is_checked(small_manifest, tmp_path, option, value, error):
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path), "--split", "all",
                                 "--explain", option, value, "--bootstrap", "0", "--device", "cpu"])
    assert result.exit_code == 2 and result.stderr.startswith(error), result.output
    assert list(tmp_path.iterdir()) == []  # the figures were drawn and written to OUT/figures before the refusal


@pytest.mark.slow
def test_explain_warns_once_of_a_repeated_uri(small_manifest, model_dir, tmp_path, monkeypatch):
    """The warning came twice: when the split was scored, and again when its figures embedded the rows. The tiny
    model: the bundled one's scoring and Grad-CAM cost seconds and test_evaluate_with_explanation_figures_in_the_report
    draws its figures. Each figure drawn was read back twice, to copy it to OUT/figures and to embed it: now once."""
    from pathlib import Path

    reads, read_bytes = [], Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: reads.append(path.name) or read_bytes(path))
    rows = pd.read_csv(small_manifest)
    pd.concat([rows, rows.head(1)]).to_csv(tmp_path / "twice.csv", index=False)
    result = runner.invoke(app, ["evaluate", str(model_dir), str(tmp_path / "twice.csv"), "--out", str(tmp_path / "out"),
                                 "--split", "all", "--no-robustness", "--bootstrap", "0", "--no-provenance", "--explain",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warning = f"warning: 1 row(s) of split 'all' repeat a uri already in it (first: {rows['uri'].iloc[0]})"
    assert result.stderr.count("repeat a uri") == 1 and warning in result.stderr, result.stderr
    assert "on all: n=9 " in result.output  # each row still scored
    assert len(pd.read_parquet(tmp_path / "out" / "figures" / "embeddings.parquet")) == 8  # each image drawn once
    drawn = [p.name for p in (tmp_path / "out" / "figures").rglob("*.png")]
    assert len(drawn) > 4 and sorted(name for name in reads if name in drawn) == sorted(drawn)  # each read back once


@pytest.mark.slow
def test_evaluate_with_explanation_figures_in_the_report(small_manifest, tmp_path):
    result = runner.invoke(app, ["evaluate", "fakescope-default", small_manifest, "--out", str(tmp_path), "--split", "all",
                                 "--no-robustness", "--bootstrap", "0", "--no-provenance", "--explain", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert any(name.startswith("umap") for name in figures)
    written = {line.removeprefix("wrote ") for line in result.output.splitlines() if line.startswith("wrote ")}
    assert written == {str(tmp_path / n) for n in ("report.html", "report.json", "scores.csv")} | {
        str(p) for p in (tmp_path / "figures").rglob("*") if p.is_file()}
    html = (tmp_path / "report.html").read_text()
    assert "UMAP" in html and html.count("data:image/png;base64,") >= len(figures)


def test_evaluate_also_takes_the_model_as_the_other_verbs_do(small_manifest, tmp_path):
    """`evaluate MODEL MANIFEST` (documented) and `evaluate MANIFEST --model MODEL` (as detect, scan, explain) alike;
    `evaluate MANIFEST` alone, refused as 'missing MANIFEST', takes the bundled model, as those verbs do."""
    options = ["--out", str(tmp_path / "out"), "--no-robustness", "--bootstrap", "0", "--no-provenance", "--device", "cpu"]
    for given in (["-m", "fakescope-default"], []):
        result = runner.invoke(app, ["evaluate", small_manifest, *given, *options])
        assert result.exit_code == 0, result.output
        assert "fakescope-default on test: n=4 auc=" in result.output
        assert "intervals:" not in result.output  # --bootstrap 0: no interval to flag
        assert json.loads((tmp_path / "out" / "report.json").read_text())["model"] == "fakescope-default"
    for args, message in [(["-m", "fakescope-default"], "missing MANIFEST: give MODEL MANIFEST, MANIFEST alone (the "
                                                          "bundled model), or MANIFEST with --model MODEL"),
                          (["fakescope-default", small_manifest, "--model", "fakescope-default"],
                           "the model is given twice, as 'fakescope-default' and --model 'fakescope-default'; give it one way")]:
        refused = runner.invoke(app, ["evaluate", *args, *options])
        assert (refused.exit_code, refused.stderr) == (2, f"error: {message}\n")
    command = typer.main.get_command(app).commands["evaluate"]  # its --model help says what MANIFEST alone takes
    assert "Default: the bundled model" in next(p.help for p in command.params if "--model" in p.opts)


def test_the_rate_lines_print_exact_intervals_of_what_was_counted():
    """0 of 500 reals flagged printed no FP rate at all, and its bootstrap interval would be [0, 0]."""
    import numpy as np

    from fakescope.cli.evaluate import _rate_lines
    from fakescope.evaluate.metrics import rate_intervals

    labels, probs = np.r_[np.zeros(500, int), np.ones(20, int)], np.r_[np.full(500, 0.1), np.full(18, 0.9), 0.4, 0.4]
    assert _rate_lines(rate_intervals(labels, probs, 0.5, (0.3, 0.7)), 0.5) == [
        "  reals: false_positive_rate=0.0000 [0.0000, 0.0074] (0 of 500 at P(ai) >= 0.5), uncertain=0.0000 [0.0000, "
        "0.0074] (0 of 500)",
        "  ai: miss_rate=0.1000 [0.0123, 0.3170] (2 of 20 at P(ai) < 0.5), uncertain=0.1000 [0.0123, 0.3170] (2 of 20)"]
    assert len(_rate_lines(rate_intervals(labels[:500], probs[:500], 0.5, (0.3, 0.7)), 0.5)) == 1  # no ai: no ai line
