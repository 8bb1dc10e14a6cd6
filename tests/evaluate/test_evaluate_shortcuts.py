"""`evaluate` audits the rows it scores: a shortcut in the test set is a warning on the console, in report.json and
in the HTML report, unless the model's own preprocessing takes it away."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from evaluate_helpers import noisy, tiny_model
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.evaluate import evaluate

runner = CliRunner()
PER_CLASS = 6


def _write_set(root: Path, confounded: bool) -> str:
    """Camera-like images of both labels; `confounded`: every real a JPEG and every ai a PNG, else the same PNGs."""
    root.mkdir()
    rows = []
    for i in range(PER_CLASS):
        for label in ("real", "ai"):
            image = noisy(i + (100 if confounded and label == "ai" else 0))
            path = root / f"{label}{i}.{'jpg' if confounded and label == 'real' else 'png'}"
            image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
            rows.append({"uri": str(path), "label": label, "split": "test"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return str(root / "manifest.csv")


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("shortcut_sets")
    return {kind: _write_set(root / kind, kind == "confounded") for kind in ("confounded", "neutral")}


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """A tiny model whose recipe neutralizes nothing."""
    return tiny_model(tmp_path_factory.mktemp("plain") / "model")


def _run(model: Path, manifest: str, out: Path, *extra: str):
    result = runner.invoke(app, ["evaluate", str(model), manifest, "--out", str(out), "--no-robustness",
                                 "--bootstrap", "0", "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


def test_a_format_confounded_set_is_warned_of_on_the_console_in_json_and_html(plain_model, sets, tmp_path):
    result, data, page = _run(plain_model, sets["confounded"], tmp_path)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert ("warning: in the images scored, file format alone separates real from ai (SHORTCUT, separability "
            "1.00): the figures may measure it; see fakescope dataset audit") in warnings, result.stderr
    assert len(warnings) == len(data["shortcuts"]["flagged"])
    assert {"format", "jpeg_quality", "bits_per_pixel"} <= set(data["shortcuts"]["flagged"])
    fmt = next(c for c in data["shortcuts"]["checks"] if c["name"] == "format")
    assert (fmt["separability"], fmt["neutralized"], fmt["per_class"]) == (1.0, "no", {"real": "JPEG 100%",
                                                                                       "ai": "PNG 100%"})
    assert data["shortcuts"]["inspected"] == {"ai": PER_CLASS, "real": PER_CLASS}
    assert page.index("<div class='warn'>") < page.index("<h2>Overall</h2>")
    assert "<li>file format: SHORTCUT, separability 1.00</li>" in page


def test_a_neutral_set_gets_no_warning(plain_model, sets, tmp_path):
    result, data, page = _run(plain_model, sets["neutral"], tmp_path)
    assert "warning" not in result.stderr, result.stderr
    assert data["shortcuts"]["flagged"] == [] and {c["level"] for c in data["shortcuts"]["checks"]} == {"ok"}
    assert "<h2>Shortcuts</h2>" in page and "class='warn'" not in page


def test_no_audit_skips_it(plain_model, sets, tmp_path):
    result, data, page = _run(plain_model, sets["confounded"], tmp_path, "--no-audit")
    assert "warning" not in result.stderr and data["shortcuts"] is None
    assert "Not audited" in page and "class='warn'" not in page


def test_what_the_recipe_neutralizes_is_not_flagged(model_dir, sets):
    """The conftest model re-encodes as JPEG quality 60 and crops the bottom 25%: the watermark strip is gone, the
    format and JPEG quality only partly (a first JPEG compression leaves traces), the size not at all."""
    rows = pd.read_csv(sets["confounded"])
    checks = {c["name"]: c for c in evaluate(model_dir, rows, robustness=False, bootstrap=0, device="cpu",
                                             provenance=False).shortcuts["checks"]}
    assert checks["format"]["level"] == "SHORTCUT" and checks["format"]["neutralized"] == "partly"
    assert checks["jpeg_quality"]["neutralized"] == "partly" and checks["width"]["neutralized"] == "no"
    assert checks["border_overlay"]["neutralized"] == "yes" and checks["has_exif"]["neutralized"] == "yes"
    report = evaluate(model_dir, rows, robustness=False, bootstrap=0, device="cpu", audit=False)
    assert report.shortcuts is None


def test_the_audit_inspects_the_images_as_scoring_reads_them_each_read_once(plain_model, sets, tmp_path, monkeypatch):
    """The audit read its sample (about 1000 images per label) in a pass of its own before scoring read every image
    again: now it inspects them as the scoring pass reads them (greyscale, alpha, EXIF-turned, too small to score and
    broken files among them), its findings those of an audit reading them itself."""
    import collections

    from PIL import Image

    import fakescope.io._local as local
    import fakescope.io.image as image_io
    from fakescope.data.manifest import check_rows
    from fakescope.evaluate import recipe_preprocessing
    from fakescope.evaluate.shortcuts import audit_rows, shortcut_sample
    from fakescope.models import load_model

    turned = Image.Exif()
    turned[0x0112] = 6  # EXIF orientation: rotate 90 degrees
    extra = {"grey.jpg": (noisy(50).convert("L"), {}), "alpha.png": (noisy(51).convert("RGBA"), {}),
             "tiny.png": (noisy(52, (16, 16)), {}), "turned.jpg": (noisy(53), {"exif": turned.tobytes()})}
    for name, (image, options) in extra.items():
        image.save(tmp_path / name, **options)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    added = [{"uri": str(tmp_path / name), "label": ("real", "ai")[i % 2], "split": "test"}
             for i, name in enumerate([*extra, "broken.png"])]
    rows = pd.concat([pd.read_csv(sets["confounded"]), pd.DataFrame(added)], ignore_index=True)
    reads, read_path, read_bytes = collections.Counter(), image_io._read_path, local.LocalStorage.read_bytes
    monkeypatch.setattr(image_io, "_read_path", lambda source: reads.update([str(source)]) or read_path(source))
    monkeypatch.setattr(local.LocalStorage, "read_bytes",  # the audit's own reads went through storage
                        lambda self, uri, **kw: reads.update([str(uri)]) or read_bytes(self, uri, **kw))
    report = evaluate(plain_model, rows, robustness=False, bootstrap=0, examples=0, device="cpu")
    assert reads == collections.Counter(rows["uri"])  # each image once
    assert len(report.failures) == 2 and report.shortcuts["notes"] == ["1 image(s) could not be read and were left out"]
    reads.clear()
    recipe = recipe_preprocessing(load_model(plain_model).config)
    checked = check_rows(rows, split_required=False)  # as evaluate takes them
    assert report.shortcuts == audit_rows(shortcut_sample(checked), recipe, provenance=True)  # as evaluate audited them first: reading them
    assert reads == collections.Counter(rows["uri"]) and "format" in report.shortcuts["flagged"]
