"""A real HTTP server on loopback that speaks the OpenAI Images API wire format, for tests.

POST /v1/images/variations and /v1/images/edits (multipart), /v1/images/generations (JSON).
GPT image models (any model not named dall-e-*) speak today's API: no variations, always b64_json,
a `response_format` refused (400), and a `usage` block in every answer; `input_fidelity` is taken by edits
only, as `FIDELITIES` says (400 otherwise); models in `retired` answer 404 `model_not_found`. dall-e models keep the legacy behaviour: b64_json or a URL the server
serves itself (GET /files/<n>.png; /files/drip.png only its headers, a byte every 0.3 s), no usage. Like the real API, a dall-e-2 edit
is refused (400) unless its image has transparency or it comes with a mask of the image's size that
has some (transparent pixels mark what may change); sizes, qualities and n a known model does not take, a
non-square dall-e-2 image and a mask of another size than its image are refused (400) too. Faults queued in `faults`
(429 with Retry-After, 500; "retry-after=S": a 429 with Retry-After S seconds only; "quota": a 429 insufficient_quota; "unreadable": a billed 200 whose image is not one; "broken": a billed
200 whose body, whole, is cut-off JSON; "badbase64": a billed 200 whose image is not base64; "gone": a billed
200 whose URL answers 404; "url=U": a billed 200 whose URL is U; "slow": a billed 200 whose body stops halfway for
`slow_seconds`; "cut": a billed 200 whose connection closes halfway through its body; (status, message[, code]): an
error answer whose message has `{authorization}` replaced by the request's Authorization header, as a proxy echoing it
would) answer the next requests in order. `hold_after` makes image requests beyond that many billable answers wait for `release` and then
drop the connection unanswered (never billed), so a client can be killed with nothing in flight paid for; with
`answer_held` set they are answered (and billed) instead, as a slow server would. `paid` holds, per billed
answer, a digest of what was asked for (the pixels of the first image sent, else the prompt). `gather` makes image
requests wait (30 s at most) until that many have arrived, so a client's concurrent requests are all sent before any
is answered.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

ENDPOINTS = {"/v1/images/variations": "variations", "/v1/images/edits": "edits", "/v1/images/generations": "generations"}
FIDELITIES = {"gpt-image-1.5": ("high", "low"), "gpt-image-1-mini": ("low",), "gpt-image-2": (), "gpt-image-2-2026-04-21": ()}
"""The edits' `input_fidelity` per model, as the API reference states it; other GPT image models take high and low."""


API_KEY = "sk-test-key-not-a-secret"
"""The key the generate tests' server (tests/generate/conftest.py) takes."""


class ImagesAPIServer(ThreadingHTTPServer):
    """The server; read `billable`, `counts` and `requests` from tests."""

    daemon_threads = True

    def __init__(self, api_key: str = "sk-test-key"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_key = api_key
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        """(endpoint, status) -> number of answers."""
        self.requests: list[dict] = []
        """Fields of every image request received (file parts replaced by their decoded size)."""
        self.faults: list[int | str] = []
        self.hold_after: int | None = None
        self.answer_held = False
        self.gather = 0
        self.arrival = threading.Condition()
        self.slow_seconds = 2.0
        self.held = 0
        self.admitted = 0
        """Image requests let through to a 200 answer (counted before answering, so holds are exact)."""
        self.release = threading.Event()
        self.files: dict[str, bytes] = {}
        self.retired: set[str] = set()
        """Models answered 404 model_not_found, as api.openai.com answers a retired one."""
        self.max_prompt: int | None = None
        """The longest prompt taken, of any model: a longer one is answered 400 `string_above_max_length`, as the API
        answers one over its model's limit."""
        self.paid: list[str] = []
        """A digest of each billed request's image (or prompt), in billing order."""
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def billable(self) -> int:
        """Image requests answered 200."""
        with self.lock:
            return sum(n for (endpoint, status), n in self.counts.items() if status == 200 and endpoint in ENDPOINTS.values())

    def wait_held(self, process, billed: int, held: int, timeout: float = 60.0) -> None:
        """Wait until `billed` answers were billed and `held` requests are held, while `process` runs."""
        deadline = time.monotonic() + timeout
        while (self.held < held or self.billable < billed) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        state = (self.held, self.billable)
        assert state == (held, billed), f"held, billed = {state}: " + (process.stdout.read() if process.poll() is not None else "")

    def start(self) -> ImagesAPIServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ImagesAPIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.partition("?")[0].removeprefix("/files/")  # a signed URL's query
        data = self.server.files.get(name)
        if data is None:
            return self._send(404, {"error": {"message": "no such file"}}, "files")
        if name == "drip.png":
            return self._drip(f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drip(self, head: bytes) -> None:
        """Send `head` a byte every 0.3 s, then close the connection (the client gives up first)."""
        self.close_connection = True
        try:
            for byte in head:
                time.sleep(0.3)
                self.wfile.write(bytes([byte]))
        except OSError:
            pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        endpoint = ENDPOINTS.get(self.path)
        if endpoint is None:
            return self._send(404, {"error": {"message": f"unknown path {self.path}"}}, "unknown")
        if self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, endpoint)
        fields, images = self._parse(body)
        first = next(iter(images.values()), None)
        self.digest = hashlib.sha256(first.tobytes() if first else str(fields.get("prompt")).encode()).hexdigest()
        model = str(fields.get("model", "dall-e-2"))
        if (refusal := _model_refusal(endpoint, model, fields, self.server.retired)) is not None:
            return self._send(*refusal, endpoint)
        if (refusal := _fidelity_refusal(endpoint, model, fields)) is not None:
            return self._send(400, refusal, endpoint)
        if (refusal := _param_refusal(endpoint, model, fields, images)) is not None:
            message, param = refusal
            return self._send(400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                              "code": "invalid_value"}}, endpoint)
        prompt, limit = str(fields.get("prompt") or ""), self.server.max_prompt
        if limit is not None and len(prompt) > limit:
            message = (f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, but got a "
                       f"string with length {len(prompt)} instead.")
            return self._send(400, {"error": {"message": message, "type": "invalid_request_error", "param": "prompt",
                                              "code": "string_above_max_length"}}, endpoint)
        if endpoint == "edits" and model == "dall-e-2" and (refusal := _edit_refusal(images)):
            return self._send(400, {"error": {"message": refusal, "type": "invalid_request_error"}}, endpoint)
        server = self.server
        with server.arrival:
            server.requests.append({"endpoint": endpoint, **fields})
            server.arrival.notify_all()
            server.arrival.wait_for(lambda: len(server.requests) >= server.gather, timeout=30)
        with server.lock:
            fault = server.faults.pop(0) if server.faults else None
            hold = fault is None and server.hold_after is not None and server.admitted >= server.hold_after
            if hold:
                server.held += 1
            elif fault is None:
                server.admitted += 1
        if hold:
            server.release.wait()
            if not server.answer_held:
                self.close_connection = True
                return
        if fault == 429:
            return self._send(429, {"error": {"message": "Rate limit reached", "type": "requests"}}, endpoint,
                              {"Retry-After": "1", "retry-after-ms": "20"})
        if isinstance(fault, str) and fault.startswith("retry-after="):
            return self._send(429, {"error": {"message": "Rate limit reached", "type": "requests"}}, endpoint,
                              {"Retry-After": fault.removeprefix("retry-after=")})
        if fault == "quota":
            return self._send(429, {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                                              "type": "insufficient_quota", "code": "insufficient_quota"}}, endpoint)
        if fault == "unreadable":
            return self._send(200, {"created": 1700000000, "data": [{"b64_json": base64.b64encode(b"<html>").decode()}]}, endpoint)
        if fault == "broken":
            return self._send(200, {}, endpoint, body=b'{"created": 1700000000, "data": [{"b64_json": "iVBOR')
        if fault == "badbase64":
            return self._send(200, {"created": 1700000000, "data": [{"b64_json": "iVBOR*"}]}, endpoint)
        if fault == "gone":
            return self._send(200, {"created": 1700000000, "data": [{"url": f"http://127.0.0.1:{server.server_address[1]}/files/gone.png"}]}, endpoint)
        if isinstance(fault, str) and fault.startswith("url="):
            return self._send(200, {"created": 1700000000, "data": [{"url": fault.removeprefix("url=")}]}, endpoint)
        if isinstance(fault, tuple):
            status, message, *code = fault
            message = message.replace("{authorization}", self.headers.get("Authorization", ""))
            error = {"message": message, "type": "invalid_request_error", **({"code": code[0]} if code else {})}
            return self._send(status, {"error": error}, endpoint)
        if fault in ("slow", "cut"):
            return self._answer(endpoint, fields, halfway=fault)
        if fault is not None:
            return self._send(fault, {"error": {"message": "The server had an error", "type": "server_error"}}, endpoint)
        self._answer(endpoint, fields)

    def _answer(self, endpoint: str, fields: dict, halfway: str | None = None) -> None:
        width, height = (int(v) for v in str(fields.get("size") or "256x256").replace("auto", "256x256").split("x"))
        with self.server.lock:
            number = len(self.server.requests)
        image = Image.new("RGB", (width, height), ((number * 37) % 256, (number * 91) % 256, 128))
        image.putpixel((0, 0), (number % 256, number // 256 % 256, 7))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        answer: dict = {"created": 1700000000}
        if fields.get("response_format") == "url":
            name = f"{number}.png"
            self.server.files[name] = data
            answer["data"] = [{"url": f"http://127.0.0.1:{self.server.server_address[1]}/files/{name}"}]
        else:
            answer["data"] = [{"b64_json": base64.b64encode(data).decode()}]
        if not str(fields.get("model", "dall-e-2")).startswith("dall-e"):
            answer["usage"] = _usage(endpoint, fields, width * height)
        self._send(200, answer, endpoint, halfway=halfway)

    def _parse(self, body: bytes) -> tuple[dict, dict[str, Image.Image]]:
        """The request's fields (a file part as its image size) and its images by part name."""
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            return json.loads(body), {}
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict = {}
        images: dict[str, Image.Image] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if part.get_filename():
                images[name] = Image.open(io.BytesIO(payload))
                fields[name] = images[name].size
            else:
                fields[name] = payload.decode()
        return fields, images

    def _send(self, status: int, payload: dict, endpoint: str, headers: dict | None = None, halfway: str | None = None,
              body: bytes | None = None) -> None:
        """Answer `payload` as JSON, or `body` as it is (`halfway`: "slow" pauses, "cut" closes the connection, halfway
        through the body)."""
        data = json.dumps(payload).encode() if body is None else body
        with self.server.lock:
            self.server.counts[(endpoint, status)] += 1
            if status == 200 and endpoint in ENDPOINTS.values():
                self.server.paid.append(self.digest)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if halfway is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[:len(data) // 2])
        self.wfile.flush()
        if halfway == "cut":
            self.close_connection = True
            return
        time.sleep(self.server.slow_seconds)
        self.wfile.write(data[len(data) // 2:])


def _model_refusal(endpoint: str, model: str, fields: dict, retired: set[str]) -> tuple[int, dict] | None:
    """The real API's refusal of a retired model, a GPT image model's variation or `response_format`, else None."""
    if model in retired:
        return 404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                               "type": "invalid_request_error", "code": "model_not_found"}}
    if model.startswith("dall-e"):
        return None
    if endpoint == "variations":
        return 400, {"error": {"message": f"Invalid value: '{model}'. Value must be 'dall-e-2'.",
                               "type": "invalid_request_error", "param": "model", "code": "invalid_value"}}
    if "response_format" in fields:
        return 400, {"error": {"message": "Unknown parameter: 'response_format'.", "type": "invalid_request_error",
                               "param": "response_format", "code": "unknown_parameter"}}
    return None


def _fidelity_refusal(endpoint: str, model: str, fields: dict) -> dict | None:
    """The real API's 400 for an `input_fidelity` outside an edit or one the model does not take, else None."""
    if "input_fidelity" not in fields:
        return None
    value = fields["input_fidelity"]
    if endpoint != "edits" or model.startswith("dall-e"):
        return {"error": {"message": "Unknown parameter: 'input_fidelity'.", "type": "invalid_request_error",
                          "param": "input_fidelity", "code": "unknown_parameter"}}
    if value not in FIDELITIES.get(model, ("high", "low")):
        return {"error": {"message": f"Invalid value: '{value}'. input_fidelity is not supported with {model} for this value.",
                          "type": "invalid_request_error", "param": "input_fidelity", "code": "invalid_value"}}
    return None


def _usage(endpoint: str, fields: dict, pixels: int) -> dict:
    """A GPT image answer's token usage: deterministic, from the prompt, the input images and the output size."""
    text = len(str(fields.get("prompt", "")).split())
    image = 323 if endpoint == "edits" else 0
    output = max(pixels // 1000, 1)
    return {"input_tokens": text + image, "input_tokens_details": {"text_tokens": text, "image_tokens": image},
            "output_tokens": output, "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
            "total_tokens": text + image + output}


def _param_refusal(endpoint: str, model: str, fields: dict, images: dict[str, Image.Image]) -> tuple[str, str] | None:
    """The real API's 400 message, and the parameter it names, for a size, quality or n a known model does not take, a dall-e-2 image that is not
    square, or an edit's mask of another size than its image (as the `openai` client's types document them), else None."""
    size, quality, n = str(fields.get("size") or "auto"), fields.get("quality"), int(fields.get("n") or 1)
    image, mask = images.get("image"), images.get("mask")
    if mask is not None and image is not None and mask.size != image.size:
        return "Invalid mask image - image and mask must have the same dimensions.", "mask"
    if not 1 <= n <= (1 if model == "dall-e-3" else 10):
        return f"Invalid value for 'n': {n}.", "n"
    known = _KNOWN_OPTIONS.get(model) or (_KNOWN_OPTIONS["gpt-image"] if model.startswith(("gpt-image", "chatgpt-image"))
                                          else None)
    if known is None:
        return None
    sizes, qualities = known
    custom = model.startswith(("gpt-image-2-", "gpt-image-2.5")) or model == "gpt-image-2"
    if size not in sizes and not (custom and size != "auto"):
        return f"Invalid value: '{size}'. Supported values are: {', '.join(repr(one) for one in sizes)}.", "size"
    if quality is not None and quality not in qualities + (("xhigh", "max") if model.startswith("gpt-image-2.5") else ()):
        return f"Invalid value: '{quality}'. Supported values are: {', '.join(repr(one) for one in qualities)}.", "quality"
    if model == "dall-e-2" and image is not None and image.width != image.height:
        return "Invalid input image - image must be square.", "image"
    return None


_KNOWN_OPTIONS = {
    "dall-e-2": (("256x256", "512x512", "1024x1024"), ("standard",)),
    "dall-e-3": (("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd")),
    "gpt-image": (("1024x1024", "1536x1024", "1024x1536", "auto"), ("low", "medium", "high", "auto")),
}
"""(sizes, qualities) per model, GPT image models under `gpt-image` (gpt-image-2 and 2.5 also take any WxH, 2.5 also
xhigh and max qualities)."""


def _edit_refusal(images: dict[str, Image.Image]) -> str | None:
    """The real API's 400 message for a dall-e-2 edit whose image and mask leave nothing to change, else None."""
    image, mask = images.get("image"), images.get("mask")
    marked = mask if mask is not None else image
    what = "mask" if mask is not None else "input"
    if marked is None or marked.mode not in ("RGBA", "LA", "L"):
        return f"Invalid {what} image - format must be in ['RGBA', 'LA', 'L'], got {getattr(marked, 'mode', None)}."
    if mask is not None and image is not None and mask.size != image.size:
        return "Invalid mask image - image and mask must have the same dimensions."
    if marked.mode != "L" and marked.getchannel("A").getextrema()[0] == 255:
        return f"Invalid {what} image - it has no transparent pixels to edit."
    return None
