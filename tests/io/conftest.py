"""Real storage servers on loopback: SeaweedFS (or moto) for S3, a tiny Drive v3 server for gdrive://."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import googleapiclient.http
import pytest
from drive_server import DRIVE_READONLY_TOKEN, DRIVE_TOKEN, DriveServer, write_token_file
from s3_fault_proxy import S3FaultProxy

ACCESS_KEY = "fakescopetestkey"
SECRET_KEY = "fakescopetestsecret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    enforces_auth: bool


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _wait_for_s3(endpoint: str, process: subprocess.Popen, log: Path, timeout: float = 40.0) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited early:\n{log.read_text()[-2000:]}")
        try:
            client.list_buckets()
            return
        except Exception:  # noqa: BLE001 - whatever botocore raises while the server starts: asked again
            time.sleep(0.3)
    raise RuntimeError(f"weed mini did not serve S3 within {timeout}s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS `weed mini` with an identities config (bad keys are refused); moto if weed is absent."""
    weed = shutil.which("weed") or (str(Path(sys.executable).parent / "weed"))
    if not os.path.exists(weed):
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
        server.start()
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}", enforces_auth=False)
        server.stop()
        return
    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    identity = {"name": "tester", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config.write_text(json.dumps({"identities": [identity]}))
    (root / "data").mkdir()
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "admin.port",
             "admin.port.grpc", "debug.port"]
    ports = dict(zip(names, _free_ports(len(names))))
    args = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.autoCreateBucket=false", f"-s3.config={config}",
            # Every bucket is a collection with volumes of its own. Left alone, `mini` sizes volumes to the
            # disk and allows (free space / size) of them, so a small CI disk ran out of slots after some
            # dozens of buckets and every later write answered InternalError. Small sparse volumes, many slots:
            "-master.volumeSizeLimitMB=64", "-volume.max=2000"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    log = root / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_for_s3(endpoint, process, log)
        yield S3Server(endpoint, enforces_auth=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """Point boto3 at the test server with the test identity, ignoring any user AWS config."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket named after the test."""
    import boto3

    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"t-{readable}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]}"  # unique per parameter too
    boto3.client("s3", endpoint_url=s3_env.endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def fault_proxy(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch):
    """The test server behind `S3FaultProxy`, with the backend pointed at the proxy."""
    with S3FaultProxy(s3_env.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield proxy


@pytest.fixture(scope="session")
def drive_server():
    """The Drive v3 subset server from `drive_server.py`, on a free loopback port."""
    server = DriveServer(token=DRIVE_TOKEN, readonly_token=DRIVE_READONLY_TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def drive_env(drive_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the gdrive backend at the (emptied) test server with a token file it accepts; retry at once."""
    monkeypatch.setenv("FAKESCOPE_GDRIVE_ENDPOINT", drive_server.url)
    monkeypatch.setenv("FAKESCOPE_GDRIVE_TOKEN", str(write_token_file(tmp_path / "token.json", DRIVE_TOKEN)))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setattr(googleapiclient.http.random, "random", lambda: 0.0)  # the client's backoff: no waiting
    drive_server.reset()
    return drive_server
