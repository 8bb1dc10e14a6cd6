"""The loopback Images API server that the environment's key and base URL point the generate tests at."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import API_KEY, ImagesAPIServer  # noqa: E402


@pytest.fixture
def server(monkeypatch) -> Iterator[ImagesAPIServer]:
    api = ImagesAPIServer(api_key=API_KEY).start()
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    yield api
    api.stop()
