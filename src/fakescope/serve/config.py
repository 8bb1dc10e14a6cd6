"""`ServeConfig`: everything the REST server needs, with the CLI flags' names."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fakescope.cache import cache_dir
from fakescope.errors import ConfigError
from fakescope.io import storage
from fakescope.serve.limits import (
    DEFAULT_MAX_BODY_MEMORY_MB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SHUTDOWN_GRACE_S,
    MULTIPART_MAX_FILES,
    MULTIPART_OVERHEAD,
    checked_max_pixels,
)
from fakescope.serve.origins import checked_host, is_loopback

if TYPE_CHECKING:  # annotations only: no import cost
    from fakescope.detector import Detector

TOKEN_ENV = "FAKESCOPE_API_TOKEN"
ANONYMOUS_FLAG = "--allow-anonymous"
APP_ANONYMOUS_ENV = "FAKESCOPE_APP_ANONYMOUS"  # "1": the web app is open beyond loopback, so never uses the server's key
GENERATION_OFF = (f"generation is off: this server runs without {TOKEN_ENV} ({ANONYMOUS_FLAG}); its operator must set "
                  "a token to serve /v1/generate and /v1/jobs")


def _env_token() -> str | None:
    """`FAKESCOPE_API_TOKEN` from the environment or a `.env` file."""
    storage.load_env_file()
    return os.environ.get(TOKEN_ENV) or None


@dataclass(frozen=True)
class ServeConfig:
    """Server settings.

    Args:
        model: Model name, path or `hf://owner/name` (None: the bundled default).
        device: `auto`, `cpu`, `cuda`, `cuda:N`, `mps`.
        max_upload_mb: Largest accepted image upload (per file); larger answers 413 (in a batch, that file's error record).
        max_pixels: Largest accepted image (width x height); larger answers 422.
        max_batch: Most images gathered into one model call by the micro-batcher.
        max_wait_ms: How long the micro-batcher waits for more requests after the first.
        max_files: Most files in one `/v1/detect/batch` request (at most 1000, as the multipart parser takes).
        max_queue: Most images waiting for the model; more answer 503 with `Retry-After` (at least `max_files`).
        max_jobs: Most generation jobs queued or running; more answer 503 with `Retry-After`.
        cors_origins: Web origins (`https://app.example.com`, or `*`) whose pages may call the API; none by default.
            A POST or DELETE from any other page (its `Origin` is neither these nor the server's own) answers 403.
        allowed_hosts: Host names (or `*`) a request that reached a loopback address may name in `Host` besides
            localhost and loopback addresses (a proxy's name); any other answers 403 (DNS rebinding).
        token: Bearer token every `/v1/*` request must carry; default `FAKESCOPE_API_TOKEN` (environment or
            `.env`), None = open.
        jobs_dir: Where generation jobs write their sources and outputs.
        runtime: `torch`, `onnx` (onnxruntime on the CPU, 2-3x faster there) or `auto` (onnx on a CPU where installed).
        grid: At most grid x grid tiles per image (None: the model's own grid).
        precision: `fp32`, `bf16` (torch runtime; faster on GPUs and CPUs with bf16 instructions) or `int8` (onnx
            runtime on the CPU, after `fakescope export --int8`; faster there, scores differ slightly).
        body_timeout_s: A request whose body sends no bytes for this long answers 408 (a stalled client would hold its
            connection and spooled upload forever).
        body_min_rate: Bytes per second a body must bring over each `body_timeout_s` (counted afresh once that many
            seconds' worth are in, so a fast start saves up no time); a slower one answers 408 (a byte dripped every
            few seconds held its connection for hours).
        max_body_seconds: A body holding more of `max_body_memory_mb` than `body_min_rate` pays for must bring, in each
            `body_timeout_s`, the bytes it holds (an upload's `Content-Length`, a chunked one's bytes so far) over this
            many seconds, so all of it within about this long (a 20 MB upload: 34,953 bytes/s); a slower one answers 408
            and gives its bytes back (at 500 bytes/s, 103 bodies of 20 MB held all 2048 MB for 11 h).
        header_timeout_s: A connection whose request line and headers are not all in this long after it opened (or
            after its last answer) is closed (`serve.connections`: a client sending half a request would hold it forever).
        max_connections: Most connections and requests at once (uvicorn's `limit_concurrency` rule); a request beyond
            answers 503 with `Retry-After`. Sockets beyond it are still accepted, each held until its request head or
            `header_timeout_s`.
        max_body_memory_mb: Most request-body bytes held at once, all requests together (at least one upload's
            request: `max_upload_mb` plus 64 KB): an upload's body is counted from its `Content-Length` before it is
            read (a chunked one as it comes) until it is answered; one that does not fit answers 503 with
            `Retry-After`, one larger than the whole budget (a batch) 413. An image URL's fetch counts `max_upload_mb`
            while it runs (not while it waits for a thread), then its bytes until answered; a generation job's upload
            counts until the job ends.
        shutdown_grace_s: Seconds a stopping server (Ctrl-C, SIGTERM) gives its running generation jobs to record the
            answers of their requests on the wire, counted from when it begins to stop; queued jobs never start, and
            running ones send nothing more. Those still running then are marked failed, saying what was billed.
        generation: Serve `/v1/generate` and `/v1/jobs/*` (off: they answer 403 and leave the spec); `for_host`
            turns it off for an anonymous server beyond loopback, which would let anyone spend `OPENAI_API_KEY`.
    """

    model: str | None = None
    device: str = "auto"
    max_upload_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_files: int = 64
    max_queue: int = 256
    max_jobs: int = 16
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = field(default_factory=_env_token, repr=False)
    jobs_dir: Path = field(default_factory=lambda: cache_dir("serve-jobs"))
    runtime: str = "auto"
    grid: int | None = None
    precision: str = "fp32"
    body_timeout_s: float = 30.0
    body_min_rate: float = 500.0
    max_body_seconds: float = 600.0
    header_timeout_s: float = 10.0
    max_connections: int = 512
    max_body_memory_mb: float = DEFAULT_MAX_BODY_MEMORY_MB
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    generation: bool = True

    def __post_init__(self) -> None:
        from fakescope.detector import check_runtime  # torch: the server loads it next anyway
        from fakescope.models.acceleration import input_dtype

        check_runtime(self.runtime)  # else refused only when the server starts and loads its detector
        input_dtype(self.precision)  # refuses an unknown precision
        if self.max_upload_mb <= 0:
            raise ConfigError("max_upload_mb must be positive")
        for name in ("body_timeout_s", "body_min_rate", "max_body_seconds", "header_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not self.shutdown_grace_s >= 0:  # NaN too
            raise ConfigError("shutdown_grace_s must be 0 or more")
        if self.max_body_memory_bytes < self.max_upload_bytes + MULTIPART_OVERHEAD:
            raise ConfigError(f"max_body_memory_mb ({self.max_body_memory_mb:g}) must be at least max_upload_mb "
                              f"({self.max_upload_mb:g}) plus 64 KB, so that one image's request fits")
        checked_max_pixels(self.max_pixels)
        if min(self.max_batch, self.max_files, self.max_jobs, self.max_connections) < 1:
            raise ConfigError("max_batch, max_files, max_jobs and max_connections must be at least 1")
        if self.max_files > MULTIPART_MAX_FILES:
            raise ConfigError(f"max_files ({self.max_files}) must be at most {MULTIPART_MAX_FILES}: the multipart "
                              "parser refuses more files in one request (400)")
        if self.max_queue < self.max_files:
            raise ConfigError(f"max_queue ({self.max_queue}) must be at least max_files ({self.max_files}): "
                              "a full batch request must fit in the queue")
        for origin in self.cors_origins:
            _check_origin(origin)
        object.__setattr__(self, "allowed_hosts", tuple(map(checked_host, self.allowed_hosts)))  # as compared
        if Path(self.jobs_dir).exists() and not Path(self.jobs_dir).is_dir():
            raise ConfigError(f"jobs_dir {self.jobs_dir} is a file, not a folder (--jobs-dir)")

    def load_detector(self) -> Detector:
        """The `Detector` these settings describe (batches of `max_batch`, 2 decoding threads)."""
        from fakescope.detector import Detector

        return Detector.load(self.model, device=self.device, batch_size=self.max_batch, workers=2,
                             runtime=self.runtime, grid=self.grid, precision=self.precision)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_memory_bytes(self) -> int:
        return int(self.max_body_memory_mb * 1024 * 1024)


def for_host(config: ServeConfig, host: str, *, allow_anonymous: bool = False) -> ServeConfig:
    """`config` as it may serve on `host`: as it is with a token or on loopback; beyond loopback without a token,
    refused (`ConfigError`) unless `allow_anonymous`, and then with generation off."""
    if config.token is not None or is_loopback(host):
        return config
    if not allow_anonymous:
        raise ConfigError(f"refusing to serve on {host} without {TOKEN_ENV}: anyone who can reach the port could use "
                          f"the API; set {TOKEN_ENV} (environment or .env), or pass {ANONYMOUS_FLAG} to serve detection "
                          "to anyone (generation stays off)")
    return replace(config, generation=False)


def app_is_anonymous(host: str, *, allow_anonymous: bool = False) -> bool:
    """Whether the web app, which has no login, serves anyone beyond loopback on `host`: refused (`ConfigError`)
    unless `allow_anonymous`."""
    if is_loopback(host):
        return False
    if not allow_anonymous:
        raise ConfigError(f"refusing to serve the web app on {host}: it has no login, so anyone who can reach the port "
                          f"could use it (and the server's OPENAI_API_KEY); keep 127.0.0.1 behind an authenticating proxy "
                          f"(--allowed-host admits the name it sends), or pass {ANONYMOUS_FLAG} (its generator then "
                          "takes the visitor's own key only)")
    return True


def _check_origin(origin: str) -> None:
    """Refuse what a browser never sends as `Origin` (a path, a trailing slash): it would never match."""
    if origin == "*":
        return
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or origin != f"{parts.scheme}://{parts.netloc}":
        raise ConfigError(f"CORS origin {origin!r}: expected scheme://host[:port] with no path or trailing slash "
                          "(as https://app.example.com), or *")


def check_port_free(host: str, port: int) -> None:
    """Refuse in one line a port another server listens on, or a `host` this machine cannot listen on (a name that
    does not resolve, an address it lacks, a port it may not use): uvicorn and Streamlit say so among their log lines,
    after the model has loaded. Bound as they bind (SO_REUSEADDR), on every address `host` names, then let go; one
    address that binds is enough (`localhost` may name an IPv6 `::1` the machine lacks)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror} (check --host)") from None
    failures = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"port {port} on {host} is already in use (another server?): "
                                      "choose another with --port") from None
                failures.append(exc.strerror)
    if failures and len(failures) == len(addresses):
        raise ConfigError(f"cannot listen on {host} port {port}: {failures[0]} (check --host and --port)")
