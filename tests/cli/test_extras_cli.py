"""A command whose optional extra is not installed fails with one line naming the extra."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import fakescope.evaluate
from fakescope.cli import app


def _without(monkeypatch, *modules: str) -> None:
    """Make `import module` raise ModuleNotFoundError, as when its package is not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(("args", "missing", "hint"), [
    (["serve"], "uvicorn", 'pip install "fakescope[serve]"'),
    (["app"], "streamlit", 'pip install "fakescope[serve]"'),
    (["scan", "x.jpg", "--out", "{tmp}/scan", "--engine", "ray"], "ray", 'pip install "fakescope[scale]"'),
    (["generate", "openai", "x.jpg", "--out", "{tmp}/gen"], "openai", 'pip install "fakescope[generate]"'),
    (["detect", "s3://bucket/prefix"], "boto3", 'pip install "fakescope[storage]"'),
    (["export", "--onnx", "{tmp}/d.onnx", "--model", "{model}"], "onnx", 'pip install "fakescope[scale]"'),
    (["export", "--onnx", "{tmp}/d.onnx", "--model", "{model}", "--int8", "--calibration", "{tmp}"], "onnxruntime",
     'pip install "fakescope[scale]"'),
    (["detect", "x.jpg", "--model", "{model}", "--precision", "int8"], "onnxruntime", 'pip install "fakescope[scale]"'),
])
def test_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path, tiny_model_dir, args, missing, hint):
    _without(monkeypatch, missing)
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail(f"started {a[0]} without {missing}"))
    args = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: missing optional package {missing!r}; install it with: {hint}\n"


def test_serve_without_uvicorn_is_one_line_where_the_server_modules_are_imported_already(monkeypatch):
    """A test or program that imported `fakescope.serve.connections` earlier holds uvicorn's module in it: serve still
    names the extra (it failed in uvicorn's logging set-up, `Unable to configure formatter 'default'`, exit 1)."""
    pytest.importorskip("uvicorn")
    import fakescope.serve.connections  # noqa: F401 - imported before uvicorn goes missing

    _without(monkeypatch, "uvicorn")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: missing optional package 'uvicorn'; install it with: pip install \"fakescope[serve]\"\n"


def test_explain_without_grad_cam_names_how_to_install_it_only_where_needed(monkeypatch, tmp_path, tiny_model_dir,
                                                                            image_factory):
    _without(monkeypatch, "pytorch_grad_cam")
    for name in [m for m in sys.modules if m.startswith("fakescope.explain")]:
        monkeypatch.delitem(sys.modules, name)
    from fakescope.explain.report import overlay_name

    image = tmp_path / "x.png"
    image.write_bytes(image_factory.bytes("PNG", (128, 96)))
    explain = ["explain", str(image), "--model", str(tiny_model_dir), "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(app, [*explain, "--method", "gradcam"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [("error: missing optional package 'pytorch_grad_cam'; install it with: "
                                           'pip install "fakescope[explain]" && pip install --no-deps grad-cam')]
    for method in ("tiles", "cam"):  # these need no pytorch-grad-cam
        done = CliRunner().invoke(app, [*explain, "--method", method])
        assert done.exit_code == 0 and (tmp_path / "x" / f"{overlay_name(str(image))}_{method}.png").is_file(), done.output
    default = CliRunner().invoke(app, [*explain[:-2], "--out", str(tmp_path / "all")])  # was the error above: nothing written
    assert default.exit_code == 0, default.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [f"{overlay_name(str(image))}_{m}.png" for m in ("cam", "tiles")]
    assert default.stderr == ("note: gradcam and gradcam++ skipped: missing optional package 'pytorch_grad_cam'; install it "
                              'with: pip install "fakescope[explain]" && pip install --no-deps grad-cam\n')


def test_evaluate_without_matplotlib_fails_before_scoring(monkeypatch, tmp_path, tiny_model_dir):
    _without(monkeypatch, "matplotlib")
    monkeypatch.setattr(fakescope.evaluate, "evaluate", lambda *a, **k: pytest.fail("scored without matplotlib"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri,label\nx.jpg,real\n")
    result = CliRunner().invoke(app, ["evaluate", str(tiny_model_dir), str(manifest), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: missing optional package 'matplotlib'; install it with: pip install \"fakescope[evaluate]\"\n"


def test_explain_and_embed_without_matplotlib_name_their_own_extra(monkeypatch, tmp_path, tiny_model_dir, image_factory):
    """matplotlib comes with the evaluate, explain and serve extras: `[evaluate]` would leave embed without umap."""
    _without(monkeypatch, "matplotlib")
    for name in [m for m in sys.modules if m.startswith("fakescope.explain")]:
        monkeypatch.delitem(sys.modules, name)
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(image_factory.bytes("PNG", (128, 96), seed=i))
    (tmp_path / "m.csv").write_text("uri,label\n" + "".join(f"{i}.png,{('real', 'ai')[i % 2]}\n" for i in range(6)))
    hint = "error: missing optional package 'matplotlib'; install it with: pip install \"fakescope[explain]\""
    model = ["--model", str(tiny_model_dir)]
    embed = CliRunner().invoke(app, ["embed", str(tmp_path / "m.csv"), *model, "--out", str(tmp_path / "e")])
    assert embed.exit_code == 2 and embed.stderr == f"{hint}\n", embed.output
    explain = CliRunner().invoke(app, ["explain", str(tmp_path / "0.png"), *model, "--method", "tiles",
                                       "--out", str(tmp_path / "x")])
    assert explain.stderr.splitlines()[-1] == hint, explain.output


def test_embed_without_umap_says_so_before_embedding_any_image(monkeypatch, tmp_path, tiny_model_dir, image_factory):
    """The missing umap-learn was named only after every image of the manifest was embedded, and nothing was kept."""
    import fakescope.explain.report

    _without(monkeypatch, "umap")
    monkeypatch.setattr(fakescope.explain.report, "embed_images", lambda *a, **k: pytest.fail("embedded without umap"))
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(image_factory.bytes("PNG", (128, 96), seed=i))
    (tmp_path / "m.csv").write_text("uri,label\n" + "".join(f"{i}.png,{('real', 'ai')[i % 2]}\n" for i in range(6)))
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "m.csv"), "--model", str(tiny_model_dir), "--out",
                                      str(tmp_path / "e")])
    assert result.exit_code == 2, result.output
    assert result.stderr == "error: missing optional package 'umap'; install it with: pip install \"fakescope[explain]\"\n"


@pytest.mark.parametrize(("missing", "hint"), [
    ("umap", 'pip install "fakescope[explain]"'),
    ("pytorch_grad_cam", 'pip install "fakescope[explain]" && pip install --no-deps grad-cam'),
])
def test_evaluate_explain_without_its_packages_fails_before_scoring(monkeypatch, tmp_path, tiny_model_dir, missing, hint):
    _without(monkeypatch, missing)  # the figures are drawn after scoring: a missing package must not wait for them
    monkeypatch.setattr(fakescope.evaluate, "evaluate", lambda *a, **k: pytest.fail(f"scored without {missing}"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri,label\nx.jpg,real\n")
    result = CliRunner().invoke(app, ["evaluate", str(tiny_model_dir), str(manifest), "--out", str(tmp_path / "eval"),
                                      "--split", "all", "--explain"])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: missing optional package {missing!r}; install it with: {hint}\n"
