"""`fakescope detect s3://bucket/prefix` against the loopback SeaweedFS server."""

from __future__ import annotations

import io
import json

from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.io import storage


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((96, 80), 40 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_detect_lists_a_prefix_scores_each_object_and_reports_a_corrupt_one(s3_bucket, tiny_model_dir):
    for name in ("a.png", "sub/b.png"):
        storage.write_bytes(f"s3://{s3_bucket}/scan/{name}", _png(len(name)))
    storage.write_bytes(f"s3://{s3_bucket}/scan/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    storage.write_bytes(f"s3://{s3_bucket}/scan/notes.txt", b"not an image")
    result = CliRunner().invoke(app, ["detect", f"s3://{s3_bucket}/scan", "--model", str(tiny_model_dir),
                                      "--format", "jsonl", "--device", "cpu", "--no-provenance"])
    records = {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert result.exit_code == 1  # one input failed, the others were scored
    assert set(records) == {f"s3://{s3_bucket}/scan/{n}" for n in ("a.png", "broken.jpg", "sub/b.png")}
    assert records[f"s3://{s3_bucket}/scan/a.png"]["label"] in ("ai", "real", "uncertain")
    assert records[f"s3://{s3_bucket}/scan/sub/b.png"]["width"] == 96
    assert "error" in records[f"s3://{s3_bucket}/scan/broken.jpg"]


def test_detect_one_object_by_its_uri(s3_bucket, tiny_model_dir):
    uri = f"s3://{s3_bucket}/one/photo.png"
    storage.write_bytes(uri, _png(3))
    result = CliRunner().invoke(app, ["detect", uri, "--model", str(tiny_model_dir), "--format", "jsonl", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == uri
