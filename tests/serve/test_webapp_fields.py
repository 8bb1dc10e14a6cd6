"""The generator's typed fields survive a page link clicked right after Enter (real Chromium, the app on loopback).

The app's websocket is routed through Playwright: the test holds what the page sends while the user types, presses
Enter and clicks the link, then lets both rerun requests reach the app at once, as they do when the app is busy or
the user quick. The other fixtures are those of `test_webapp_browser.py`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator

import pytest
from test_webapp_browser import API_KEY, app_url, browser, image_origin, images_api, page, streamlit_log, sync_api  # noqa: F401

pytestmark = pytest.mark.browser


class _Socket:
    """The app's websocket, passed through: counts the runs that finish and can hold the page's messages."""

    def __init__(self, page):  # noqa: F811 - the fixtures imported from test_webapp_browser
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.page, self.finished, self.held, self._back, self._forward = page, 0, None, BackMsg, ForwardMsg
        page.route_web_socket(re.compile(r"/_stcore/stream$"), self._route)

    def _route(self, socket) -> None:
        self._server = socket.connect_to_server()
        socket.on_message(self._from_page)
        self._server.on_message(lambda payload: self._to_page(socket, payload))

    def _to_page(self, socket, payload: bytes | str) -> None:
        if isinstance(payload, bytes):
            message = self._forward.FromString(payload)
            if message.WhichOneof("type") == "script_finished" and message.script_finished == message.FINISHED_SUCCESSFULLY:
                self.finished += 1
        socket.send(payload)

    def _from_page(self, payload: bytes | str) -> None:
        if self.held is None:
            self._server.send(payload)
        else:
            self.held.append(payload)

    def _wait(self, done, what: str) -> None:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, f"{what} in 30 s"
            self.page.wait_for_timeout(20)  # Playwright hands over the websocket's messages while it waits

    @contextlib.contextmanager
    def rerun(self) -> Iterator[None]:
        """Wait after the block until a run has finished since it began."""
        before = self.finished
        yield
        self._wait(lambda: self.finished > before, "the app finished no run")

    @contextlib.contextmanager
    def held_together(self, reruns: int) -> Iterator[None]:
        """Hold what the page sends in the block until it has asked for `reruns` runs, then send it all at once."""
        self.held = []
        yield
        self._wait(lambda: sum(self._is_rerun(p) for p in self.held) >= reruns, f"the page asked for no {reruns} runs")
        held, self.held = self.held, None
        for payload in held:
            self._server.send(payload)

    def _is_rerun(self, payload: bytes | str) -> bool:
        return isinstance(payload, bytes) and self._back.FromString(payload).WhichOneof("type") == "rerun_script"


@pytest.fixture
def socket(page) -> _Socket:  # noqa: F811 - the fixtures imported from test_webapp_browser
    """Set up before the test opens the app, so that its websocket is routed from the start."""
    return _Socket(page)


def _type_then_leave(page, socket: _Socket, label: str, value: str) -> None:  # noqa: F811 - the fixtures imported from test_webapp_browser
    """Type `value`, press Enter and click the Detector link before the app has its run; then come back."""
    field = page.get_by_label(label, exact=True)
    with socket.rerun(), socket.held_together(reruns=2):
        field.fill(value)
        field.press("Enter")
        page.get_by_role("link", name="Detector").click()
    page.get_by_text("No image yet").wait_for(timeout=30_000)
    sync_api.expect(page.get_by_label(label, exact=True)).to_have_count(0)  # the generator, drawn by the app, is gone
    with socket.rerun():
        page.get_by_role("link", name="Generator").click()
    page.get_by_text("Real image").wait_for(timeout=30_000)


def test_a_key_entered_and_left_at_once_is_kept(app_url, page, socket):  # noqa: F811 - the fixtures imported from test_webapp_browser
    with socket.rerun():
        page.goto(f"{app_url}/generator")
    for typed in (API_KEY, f"{API_KEY}-2", f"{API_KEY}-3"):  # the app may take the first request before the second
        _type_then_leave(page, socket, "OpenAI API key", typed)
        sync_api.expect(page.get_by_label("OpenAI API key", exact=True)).to_have_value(typed)
        assert not page.get_by_text("No OpenAI API key set").count()


def test_a_prompt_entered_and_left_at_once_is_kept(app_url, page, socket):  # noqa: F811 - the fixtures imported from test_webapp_browser
    with socket.rerun():
        page.goto(f"{app_url}/generator")
    with socket.rerun():
        page.get_by_text("edit", exact=True).click()
    for typed in ("a watercolour", "an etching", "a mosaic"):
        _type_then_leave(page, socket, "Edit prompt", typed)
        with socket.rerun():  # the mode is not kept: edit again shows the prompt
            page.get_by_text("edit", exact=True).click()
        sync_api.expect(page.get_by_label("Edit prompt", exact=True)).to_have_value(typed)
