"""Secrets given to the CLI (OpenAI key, AWS keys, the serve token) never show in its output or the files it writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from openai_server import ImagesAPIServer  # noqa: E402

OPENAI_SECRET = "sk-proj-SECRET0penAIkey0123456789"
AWS_SECRET = "AWSsecretKEY/0123456789abcdefSECRET"
AWS_KEY_ID = "AKIASECRETKEYID01234"
TOKEN_SECRET = "fakescope-SECRET-api-token-0123"
SECRETS = (OPENAI_SECRET, AWS_SECRET, AWS_KEY_ID, TOKEN_SECRET)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def refusing_api():
    api = ImagesAPIServer(api_key="sk-another-key").start()  # answers 401 to our key
    yield api
    api.stop()


def _run(tmp_path: Path, cache: str, *args: str, **env: str) -> str:
    environment = {**os.environ, "OPENAI_API_KEY": OPENAI_SECRET, "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
                   "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "FAKESCOPE_API_TOKEN": TOKEN_SECRET,
                   "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}", "AWS_MAX_ATTEMPTS": "1",
                   "FAKESCOPE_CACHE": str(tmp_path / cache), "NO_COLOR": "1", **env}
    done = subprocess.run([sys.executable, "-m", "fakescope", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode != 0, done.stdout + done.stderr  # each of these runs fails
    return done.stdout + done.stderr


def _assert_nowhere(output: str, folder: Path) -> None:
    for secret in SECRETS:
        assert secret not in output
        for path in (p for p in folder.rglob("*") if p.is_file()):
            assert secret.encode() not in path.read_bytes(), f"{secret[:6]}... in {path}"


def test_failing_generate_and_storage_calls_keep_every_secret_out(refusing_api, tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (10, 120, 200)).save(photo)
    runs = [  # side by side, each with its own cache folder (all of them under tmp_path, which is searched)
        (("generate", "openai", str(photo), "-o", str(tmp_path / "out"), "--model", "dall-e-2", "--size", "256x256"),
         {"OPENAI_BASE_URL": refusing_api.base_url}),  # the key is refused
        (("generate", "openai", str(photo), "-o", str(tmp_path / "out2"), "--max-retries", "1"),  # one retry, not 4 backoffs
         {"OPENAI_BASE_URL": f"http://127.0.0.1:{_closed_port()}/v1"}),  # the API is down
        (("detect", "s3://bucket/photo.png"), {}),  # the S3 endpoint is down
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        outputs = list(pool.map(lambda i: _run(tmp_path, f"cache{i}", *runs[i][0], **runs[i][1]), range(len(runs))))
    assert "the API key was refused" in outputs[0]
    assert all(text.strip() for text in outputs)
    _assert_nowhere("\n".join(outputs), tmp_path)
