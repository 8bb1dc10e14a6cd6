"""Generation and dataset building with Google Drive on both ends, against the loopback Drive server."""

from __future__ import annotations

import io
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.io import storage

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from openai_server import ImagesAPIServer  # noqa: E402


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 30 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_openai_generation_into_new_drive_folders_makes_each_folder_once_and_reruns_anywhere_pay_nothing_twice(
    drive_env, tmp_path, monkeypatch
):
    root = f"gdrive://{drive_env.root_id}/set"
    for i in range(6):
        storage.write_bytes(f"{root}/real/{i}.png", _png(i))
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))  # the ledger of a remote --out lives there
    server = ImagesAPIServer(api_key="sk-drive").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-drive")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out = f"{root}/fake/dall-e-2"
    args = ["generate", "openai", f"{root}/real", "--out", out, "--model", "dall-e-2", "--size", "256x256", "-j", "4"]
    try:
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0 and "done 0, already done 6" in again.output and server.billable == 6
        monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "elsewhere"))  # another machine: the ledger is not there
        elsewhere = CliRunner().invoke(app, args)
        assert elsewhere.exit_code == 0 and "done 0, already done 6" in elsewhere.output and server.billable == 6
    finally:
        server.stop()
    names = Counter((f["name"], tuple(f["parents"])) for f in drive_env.files.values())
    assert max(names.values()) == 1, [n for n, c in names.items() if c > 1]  # no twin folders or files
    manifest = pd.read_csv(io.BytesIO(storage.read_bytes(f"{out}/manifest.csv")), keep_default_na=False)
    assert len(manifest) == 6 and all(uri.startswith(out + "/") for uri in manifest["uri"])

    built = tmp_path / "manifest.csv"
    result = CliRunner().invoke(app, ["dataset", "build", root, "--out", str(built)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(built, keep_default_na=False)
    assert Counter(frame["label"]) == {"ai": 6, "real": 6}
