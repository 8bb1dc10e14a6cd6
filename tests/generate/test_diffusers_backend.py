"""img2img through a tiny randomly initialised Stable Diffusion pipeline built from configs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("diffusers", reason="diffusers is not installed")
pytest.importorskip("transformers", reason="transformers is not installed")

from fakescope.cli import app  # noqa: E402
from fakescope.errors import ModelLoadError  # noqa: E402
from fakescope.generate.diffusers_backend import DiffusersImg2Img  # noqa: E402


def _bytes_to_unicode() -> list[str]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [256 + n for n in range(256 - len(keep))]
    return [chr(c) for c in keep + extra]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-sd")
    chars = _bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    pipeline = StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=DDIMScheduler(clip_sample=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def test_img2img_keeps_source_sizes_and_is_seeded(tiny_pipeline):
    backend = DiffusersImg2Img.from_pretrained(tiny_pipeline, device="cpu", prompt="a photo", strength=0.5, steps=2)
    images = [Image.new("RGB", (36, 30), (200, 40, 40)), Image.new("RGB", (32, 32), (10, 90, 200))]
    first = backend.generate(images)
    assert [im.size for im in first] == [(36, 30), (32, 32)]
    assert first[1].tobytes() == backend.generate([images[1]])[0].tobytes()
    assert backend.params()["strength"] == 0.5 and backend.name == "pipeline"
    with pytest.raises(ModelLoadError, match="not found"):
        DiffusersImg2Img.from_pretrained(tiny_pipeline.parent / "missing")


def test_diffusers_command_writes_manifest(tiny_pipeline, tmp_path):
    Image.new("RGB", (40, 40), "green").save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "generate", "diffusers", str(tmp_path / "a.png"), "--out", str(out), "--pipeline", str(tiny_pipeline),
        "--steps", "2", "--strength", "0.5", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest["generator"]) == ["stable-diffusion-img2img"] and list(manifest["width"]) == [40]
    assert Image.open(manifest["uri"][0]).size == (40, 40)


def test_sources_larger_than_max_side_are_denoised_at_max_side_and_scaled_back(tiny_pipeline, monkeypatch):
    backend = DiffusersImg2Img.from_pretrained(tiny_pipeline, device="cpu", strength=0.5, steps=2, max_side=32)
    seen = []
    pipe = backend.pipeline
    monkeypatch.setattr(backend, "pipeline", lambda **kw: seen.append([im.size for im in kw["image"]]) or pipe(**kw))
    out = backend.generate([Image.new("RGB", (100, 60), "red"), Image.new("RGB", (20, 28), "blue")])
    assert seen == [[(32, 16)], [(16, 24)]]  # 100x60 -> 32x19 -> multiples of 8; the small one only rounded
    assert [im.size for im in out] == [(100, 60), (20, 28)] and backend.params()["max_side"] == 32


def _copy(pipeline: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(pipeline, copy)
    return copy


def test_a_broken_pipeline_folder_is_one_line_naming_the_layout(tiny_pipeline, tmp_path):
    """Each loads nothing and says so in one line: before, weights of other shapes ended in a RuntimeError traceback."""
    no_unet = _copy(tiny_pipeline, tmp_path, "no-unet")
    shutil.rmtree(no_unet / "unet")
    cut = _copy(tiny_pipeline, tmp_path, "cut")
    weights = next((cut / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # a download cut short
    other = _copy(tiny_pipeline, tmp_path, "other")
    config = json.loads((other / "unet" / "config.json").read_text())
    (other / "unet" / "config.json").write_text(json.dumps({**config, "block_out_channels": [8, 32]}))
    empty = tmp_path / "empty"
    empty.mkdir()
    Image.new("RGB", (40, 40), "green").save(tmp_path / "a.png")
    for folder, reason in ((empty, "no file named model_index.json"), (no_unet, "config.json"),
                           (cut, "Unable to load weights"), (other, "size mismatch for"), (tmp_path / "none", "not found")):
        result = CliRunner().invoke(app, ["generate", "diffusers", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                                          "--pipeline", str(folder), "--device", "cpu"])
        error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2 and len(error) == 1 and reason in error[0], result.stderr
        assert error[0].endswith("unet/, vae/, text_encoder/, tokenizer/ and scheduler/, as `hf download <repo> "
                                 "--local-dir FOLDER` or `save_pretrained` writes it"), error[0]
        assert "Traceback" not in result.stderr and "accelerate" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["diffusers", "transformers"])
def test_without_diffusers_or_transformers_one_line_says_what_to_install(tiny_pipeline, tmp_path, monkeypatch, missing):
    """diffusers without transformers hands out a stub pipeline whose from_pretrained raised a bare ImportError."""
    for name in [m for m in sys.modules if m.split(".")[0] in (missing, "diffusers")]:  # diffusers imported afresh
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ModuleNotFoundError, as uninstalled
    Image.new("RGB", (40, 40), "green").save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["generate", "diffusers", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                                      "--pipeline", str(tiny_pipeline), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: missing optional package {missing!r}; install it with: pip install \"fakescope[generate]\"\n"


def test_a_bad_device_is_one_line_before_the_pipeline_is_read(tmp_path):
    result = CliRunner().invoke(app, ["generate", "diffusers", str(tmp_path), "--out", str(tmp_path / "out"),
                                      "--pipeline", str(tmp_path / "none"), "--device", "cdua"])
    assert result.exit_code == 2 and result.stderr == "error: invalid device 'cdua': use cpu, cuda, cuda:N, mps or auto\n"
