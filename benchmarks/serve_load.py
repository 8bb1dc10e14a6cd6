"""Load test of `fakescope serve` on loopback: N concurrent clients for a bounded time.

Starts `fakescope serve` on a free 127.0.0.1 port (or targets `--url`, which must be a
loopback address), then for each client count posts one generated image per request to
`/v1/detect` until `--duration` seconds pass, and prints requests/s and p50/p95/p99 latency.

    python benchmarks/serve_load.py --clients 1 4 16 --duration 10
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
from _machine import machine
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="Concurrent clients, one run each.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per run (at most 120).")
    parser.add_argument("--size", type=int, default=256, help="Side of the square JPEG sent.")
    parser.add_argument("--url", help="A running loopback server; default: start one.")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="The started server's --max-batch: most images it scores in one model call.")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="The started server's --max-wait-ms: how long it waits to fill a batch.")
    parser.add_argument("--token", default=os.environ.get("FAKESCOPE_API_TOKEN"),
                        help="Bearer token sent with each request (default: $FAKESCOPE_API_TOKEN).")
    args = parser.parse_args()
    if not 0 < args.duration <= 120:
        parser.error(f"--duration {args.duration:g}: give more than 0 and at most 120 seconds")
    if min(args.clients) < 1 or args.size < 1:
        parser.error("--clients and --size must be at least 1")
    if args.url:
        _require_loopback(args.url)
    image = _jpeg(args.size)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    server = None if args.url else _start_server(args.max_batch, args.max_wait_ms)
    url = args.url or server[1]
    try:
        try:
            httpx.post(f"{url}/v1/detect", content=image, headers=headers, timeout=120).raise_for_status()  # warm-up
        except httpx.HTTPError as exc:
            raise SystemExit(f"the warm-up request to {url}/v1/detect failed: {str(exc).splitlines()[0]}") from None
        print(machine() + ("; the server's own: --device cpu, default threads" if server else f"; the server at {url}"))
        print(f"{'clients':>7} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'mean batch':>10}")
        for clients in args.clients:
            before = httpx.get(f"{url}/healthz").json()["batching"]
            latencies, errors, elapsed = _run(url, image, headers, clients, args.duration)
            after = httpx.get(f"{url}/healthz").json()["batching"]
            calls = max(after["calls"] - before["calls"], 1)
            p50, p95, p99 = (np.percentile(latencies, q) * 1000 if latencies else float("nan") for q in (50, 95, 99))
            print(f"{clients:>7} {len(latencies):>8} {len(latencies) / elapsed:>7.2f} {p50:>8.0f} {p95:>8.0f} {p99:>8.0f} "
                  f"{errors:>6} {(after['items'] - before['items']) / calls:>10.2f}")
    finally:
        if server:
            server[0].terminate()
            server[0].wait(20)


def _run(url: str, image: bytes, headers: dict, clients: int, duration: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + duration

    def client() -> None:
        with httpx.Client(timeout=120) as session:
            while time.monotonic() < stop_at:
                began = time.monotonic()
                ok = session.post(f"{url}/v1/detect", content=image, headers=headers).status_code == 200
                with lock:
                    if ok:
                        latencies.append(time.monotonic() - began)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.monotonic() - start


def _jpeg(size: int) -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x, y, (x + y) / 2], axis=-1) * (255 / size) + rng.normal(0, 10, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _start_server(max_batch: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", "from fakescope.cli import main; main()", "serve", "--port", str(port), "--device", "cpu",
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
    env = {k: v for k, v in os.environ.items() if k != "FAKESCOPE_API_TOKEN"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("the server did not start within 120 s")


def _require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to load-test {host or url!r}: only loopback addresses are allowed")


if __name__ == "__main__":
    main()
