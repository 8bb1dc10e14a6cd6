"""`fakescope serve` as a real process on loopback; `fakescope app` help."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.serve import config as serve_config

CHECK_PORT_FREE = serve_config.check_port_free


@pytest.fixture(autouse=True)
def _default_ports_may_be_taken(monkeypatch):
    """The tests below that stop short of serving use the default ports, which a developer's own server may hold;
    the port check is tested on its own (test_a_port_in_use_is_one_line_before_serving)."""
    monkeypatch.setattr(serve_config, "check_port_free", lambda host, port: None)


STARTUP_S = 300
"""How long a started server may take to answer: 20 s on an idle 2-core machine, 40 s on a loaded one, and its first
import of torch on a clean CI machine is slower still; only a server that never starts waits this long."""


def _wait_healthy(url: str, process: subprocess.Popen) -> None:
    """Wait up to STARTUP_S for a started `fakescope serve` to answer /healthz."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            assert process.poll() is None and time.monotonic() < deadline, "fakescope serve did not start"
            time.sleep(0.3)


@pytest.mark.slow  # starts a process that loads the model
def test_serve_process_answers_with_token_and_limits(tmp_path, flat_png):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-c", "from fakescope.cli import main; main()", "serve", "--port", str(port),
               "--device", "cpu", "--max-upload-mb", "0.01", "--max-batch", "4", "--jobs-dir", str(tmp_path),
               "--runtime", "onnx", "--grid", "1", "--header-timeout", "1"]
    env = {**os.environ, "FAKESCOPE_API_TOKEN": "cli-token", "FAKESCOPE_CACHE": str(tmp_path / "cache")}
    process = subprocess.Popen(command, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        auth = {"Authorization": "Bearer cli-token"}
        assert httpx.post(f"{url}/v1/detect", content=flat_png).status_code == 401
        record = httpx.post(f"{url}/v1/detect", content=flat_png, headers=auth).json()
        assert (record["width"], record["model"]) == (96, "fakescope-default")
        wide = io.BytesIO()
        Image.linear_gradient("L").resize((400, 300)).convert("RGB").save(wide, "JPEG", quality=40)  # under 0.01 MB
        tiled = httpx.post(f"{url}/v1/detect", content=wide.getvalue(), headers=auth).json()
        assert "over 1 tile(s)" in tiled["evidence"][0]["detail"]  # --grid 1
        assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))  # --runtime onnx exported the network
        big = httpx.post(f"{url}/v1/detect", content=b"\x89PNG\r\n\x1a\n" + bytes(20_000), headers=auth)
        assert big.status_code == 413 and big.json()["detail"] == "upload too large: the limit is 0.01 MB per image"
        with socket.create_connection(("127.0.0.1", port), timeout=20) as stalled:  # --header-timeout 1
            stalled.sendall(b"GET /healthz HT")
            started = time.monotonic()
            assert stalled.recv(1) == b"" and time.monotonic() - started < 5
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "cli-token" not in output


@pytest.mark.slow  # starts Streamlit
def test_app_process_stops_its_web_server_on_sigterm(tmp_path):
    """`fakescope app` ran Streamlit as a child: a SIGTERM (kill, a process manager) left it serving, orphaned."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "fakescope", "app", "--port", str(port), "--device", "cpu"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": str(tmp_path)})
    url = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, "fakescope app did not start"
                time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(timeout=20)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


def test_cli_help_lists_serve_and_app():
    runner = CliRunner()
    assert "--max-upload-mb" in runner.invoke(app, ["serve", "--help"]).output
    assert "--precision" in runner.invoke(app, ["serve", "--help"]).output
    result = runner.invoke(app, ["app", "--help"])
    assert result.exit_code == 0 and "detector, generator and report pages" in result.output


def test_serve_with_an_unknown_model_is_one_clean_line():
    result = CliRunner().invoke(app, ["serve", "--model", "no-such-model", "--port", "1"])
    assert result.exit_code == 2
    assert "error: unknown model 'no-such-model'; known: fakescope-default" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("host", "token", "anonymous", "started", "generation"), [
    ("0.0.0.0", None, False, False, None), ("192.168.1.5", None, False, False, None), ("::", None, False, False, None),
    ("0.0.0.0", None, True, True, False), ("::", None, True, True, False), ("0.0.0.0", "secret", False, True, True),
    ("127.0.0.1", None, False, True, True), ("localhost", None, False, True, True), ("::1", None, False, True, True),
])
def test_serving_beyond_loopback_needs_a_token_or_allow_anonymous(host, token, anonymous, started, generation,
                                                                  monkeypatch, tmp_path):
    """Beyond loopback without a token, `serve` only warned, and then anyone could spend the server's OpenAI key."""
    from fakescope.serve import connections

    served = []
    monkeypatch.setattr(connections, "run", lambda app, config, **kw: served.append((kw["host"], app.state.config.generation)))
    monkeypatch.chdir(tmp_path)  # no .env with a token
    if token:
        monkeypatch.setenv("FAKESCOPE_API_TOKEN", token)
    else:
        monkeypatch.delenv("FAKESCOPE_API_TOKEN", raising=False)
    flags = ["--allow-anonymous"] if anonymous else []
    result = CliRunner().invoke(app, ["serve", "--host", host, "--device", "cpu", "--jobs-dir", str(tmp_path), *flags])
    if not started:
        assert result.exit_code == 2 and served == [] and result.stdout == "", result.output  # one line, on stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"error: refusing to serve on {host} without FAKESCOPE_API_TOKEN")
        assert "set FAKESCOPE_API_TOKEN (environment or .env), or pass --allow-anonymous" in result.stderr
        return
    assert result.exit_code == 0 and served == [(host, generation)], result.output
    assert ("/v1/generate and /v1/jobs are off (403)" in result.stderr) is (not generation)


@pytest.mark.slow  # starts a process that loads the model
def test_anonymous_server_beyond_loopback_scores_but_never_generates(tmp_path, flat_png):
    """A real `serve --host 0.0.0.0 --allow-anonymous`: detection only (refused without the flag:
    test_serving_beyond_loopback_needs_a_token_or_allow_anonymous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "fakescope", "serve", "--host", "0.0.0.0", "--port", str(port), "--device", "cpu",
               "--jobs-dir", str(tmp_path / "jobs"), "--runtime", "torch", "--allow-anonymous"]
    env = {key: value for key, value in os.environ.items() if key != "FAKESCOPE_API_TOKEN"}
    env["OPENAI_API_KEY"] = "sk-server-key"
    process = subprocess.Popen(command, env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        assert httpx.post(f"{url}/v1/detect", content=flat_png).json()["width"] == 96  # no token needed
        for answer in (httpx.post(f"{url}/v1/generate", files={"file": ("a.png", flat_png)}),
                       httpx.get(f"{url}/v1/jobs/some-job"), httpx.delete(f"{url}/v1/jobs/some-job"),
                       httpx.get(f"{url}/v1/jobs/some-job/outputs/0")):
            assert answer.status_code == 403 and "generation is off" in answer.json()["detail"]
        assert httpx.post(f"{url}/v1/generate/", files={"file": ("a.png", flat_png)}).status_code == 404  # no route left
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert "/v1/detect" in paths and not [path for path in paths if "generate" in path or "jobs" in path]
        assert not list((tmp_path / "jobs").glob("*/*"))
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert "/v1/generate and /v1/jobs are off (403)" in output


@pytest.mark.slow  # starts a process that loads the model
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stopped_server_exits_within_its_grace_while_a_job_waits_on_the_api(stop, tmp_path, photo_bytes):
    """Ctrl-C waited for the running job's request (up to --timeout, 300 s): Python joins its thread at exit."""
    import signal

    from openai_server import ImagesAPIServer

    from fakescope.serve.jobs import JobStore

    api = ImagesAPIServer(api_key="sk-held").start()
    api.hold_after, api.answer_held = 0, True  # answered only once released
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FAKESCOPE_API_TOKEN": "t", "OPENAI_BASE_URL": api.base_url}
    command = [sys.executable, "-m", "fakescope", "serve", "--port", str(port), "--device", "cpu", "--runtime", "torch",
               "--jobs-dir", str(tmp_path / "jobs"), "--shutdown-grace-s", "1"]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        job = httpx.post(f"{url}/v1/generate", headers={"Authorization": "Bearer t", "X-OpenAI-Key": "sk-held"},
                         data={"model": "dall-e-2", "size": "256x256"}, files={"file": ("cat.jpg", photo_bytes)}).json()
        deadline = time.monotonic() + 30
        while api.held < 1:
            assert time.monotonic() < deadline and process.poll() is None, "the job did not reach the API"
            time.sleep(0.05)
        started = time.monotonic()
        process.send_signal(getattr(signal, stop))
        output = process.communicate(timeout=20)[0]
        assert time.monotonic() - started < 1 + 5, output  # not the held request's time
    finally:
        process.kill()
        api.stop()
    assert process.returncode == (0 if stop == "SIGINT" else -signal.SIGTERM), output
    assert "was still running 1 s after the server began to stop" in output
    error = JobStore(tmp_path / "jobs", lambda data: None).get(job["id"]).error
    assert error.startswith("interrupted by a server stop: of 1 image(s), 0 billed and 1 sent but unanswered"), error


def test_serve_with_an_origin_a_browser_never_sends_is_one_clean_line(monkeypatch):
    from fakescope.serve import connections

    monkeypatch.setattr(connections, "run", lambda app, config, **kw: pytest.fail("served despite a bad origin"))
    result = CliRunner().invoke(app, ["serve", "--cors-origin", "https://ok.example", "--cors-origin",
                                      "http://localhost:3000/", "--port", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == ("error: CORS origin 'http://localhost:3000/': expected scheme://host[:port] with no "
                                     "path or trailing slash (as https://app.example.com), or *")


def test_serve_passes_queue_bounds_and_origins_to_the_app(monkeypatch, tmp_path):
    from fakescope.serve import connections

    served = []
    monkeypatch.setattr(connections, "run", lambda app, config, **kw: served.append((app.state.config, kw)))
    result = CliRunner().invoke(app, ["serve", "--device", "cpu", "--jobs-dir", str(tmp_path), "--max-queue", "100",
                                      "--max-jobs", "3", "--cors-origin", "https://a.example", "--cors-origin", "*",
                                      "--allowed-host", "API.example.com", "--allowed-host", "[::2]",
                                      "--max-connections", "40", "--header-timeout", "2.5", "--max-body-memory-mb", "512",
                                      "--max-body-seconds", "120", "--shutdown-grace-s", "8"])
    assert result.exit_code == 0, result.output
    config, _ = served[0]
    options = connections.uvicorn_options(config)
    assert (config.max_queue, config.max_jobs, config.cors_origins) == (100, 3, ("https://a.example", "*"))
    assert config.allowed_hosts == ("api.example.com", "::2")
    assert (config.max_body_memory_mb, config.max_body_seconds) == (512, 120)
    assert options["http"].keywords == {"header_timeout_s": 2.5, "max_connections": 40}
    assert config.shutdown_grace_s == options["timeout_graceful_shutdown"] == 8


def test_serve_and_app_with_any_allowed_host_warn_that_the_rebinding_check_is_off(monkeypatch, tmp_path):
    """`--allowed-host '*'` turned the DNS-rebinding check off without a word."""
    from fakescope.cli import serve as cli_serve
    from fakescope.serve import connections

    started = []
    monkeypatch.setattr(connections, "run", lambda app, config, **kw: started.append(app.state.config.allowed_hosts))
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: started.append(env["FAKESCOPE_APP_ALLOWED_HOSTS"]))
    serve_args = ["serve", "--device", "cpu", "--jobs-dir", str(tmp_path)]
    for command, args in (("serve", serve_args), ("app", ["app"])):
        warning = (f"warning: --allowed-host * turns the DNS-rebinding check off: a web page under any name that "
                   f"resolves to this machine can use fakescope {command}; allow only the names a proxy sends\n")
        result = CliRunner().invoke(app, [*args, "--allowed-host", "proxy.example", "--allowed-host", " * "])
        assert result.exit_code == 0 and result.stderr == warning, result.output
        quiet = CliRunner().invoke(app, [*args, "--allowed-host", "proxy.example"])
        assert quiet.exit_code == 0 and quiet.stderr == "", quiet.output
    assert started == [("proxy.example", "*"), ("proxy.example",), "proxy.example,*", "proxy.example"]


def test_serve_with_an_allowed_host_that_is_not_a_host_name_is_one_clean_line(monkeypatch):
    from fakescope.serve import connections

    monkeypatch.setattr(connections, "run", lambda app, config, **kw: pytest.fail("served despite a bad host"))
    result = CliRunner().invoke(app, ["serve", "--allowed-host", "http://proxy.example:8080"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == ("error: allowed host 'http://proxy.example:8080': expected a host name or IP "
                                     "address without scheme, port or path (as api.example.com), or *")


def test_app_hands_its_pixel_limit_to_the_web_app_and_refuses_a_bad_one(monkeypatch):
    from fakescope.cli import serve as cli_serve
    from fakescope.serve.limits import MAX_PIXELS_ENV, env_max_pixels

    started = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: started.append(env))  # no Streamlit
    assert CliRunner().invoke(app, ["app", "--max-pixels", "2000000"]).exit_code == 0
    monkeypatch.setenv(MAX_PIXELS_ENV, started[0][MAX_PIXELS_ENV])
    assert env_max_pixels() == 2_000_000  # what the web app then reads
    result = CliRunner().invoke(app, ["app", "--max-pixels", str(10**12)])
    assert result.exit_code == 2 and result.stderr == ("error: Invalid value for '--max-pixels': 1000000000000 is not in "
                                                       "the range 1<=x<=200000000. See 'fakescope app -h'.\n")
    assert len(started) == 1


def test_app_hands_its_free_space_floor_to_the_web_app(monkeypatch):
    from fakescope.cli import serve as cli_serve
    from fakescope.errors import ConfigError
    from fakescope.serve.limits import DEFAULT_MIN_FREE_MB, MIN_FREE_ENV, env_min_free_mb

    started = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: started.append(env))  # no Streamlit
    for flags, expected in (([], DEFAULT_MIN_FREE_MB), (["--min-free-mb", "300"], 300)):
        assert CliRunner().invoke(app, ["app", *flags]).exit_code == 0
        monkeypatch.setenv(MIN_FREE_ENV, started[-1][MIN_FREE_ENV])
        assert env_min_free_mb() == expected  # what the web app then reads
    monkeypatch.setenv(MIN_FREE_ENV, "1 GB")
    with pytest.raises(ConfigError, match="FAKESCOPE_APP_MIN_FREE_MB='1 GB': expected a whole number of MB"):
        env_min_free_mb()


@pytest.mark.parametrize(("host", "flags", "started"), [
    ("0.0.0.0", [], False), ("192.168.1.5", [], False), ("::", [], False),
    ("0.0.0.0", ["--allow-anonymous"], True), ("127.0.0.1", [], True), ("localhost", [], True),
])
def test_app_beyond_loopback_needs_allow_anonymous(host, flags, started, monkeypatch, tmp_path):
    """The web app has no login: `app --host 0.0.0.0` served the generator (with the server's key) to anyone."""
    from fakescope.cli import serve as cli_serve
    from fakescope.serve.config import APP_ANONYMOUS_ENV
    from fakescope.serve.paths import ROOT_ENV

    execs = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: execs.append((command, env)))  # no Streamlit
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    result = CliRunner().invoke(app, ["app", "--host", host, *flags])
    if not started:
        assert result.exit_code == 2 and execs == [] and result.output.count("\n") == 1, result.output
        assert result.output.startswith(f"error: refusing to serve the web app on {host}: it has no login")
        assert result.output.rstrip().endswith("or pass --allow-anonymous (its generator then takes the visitor's own key only)")
        return
    assert result.exit_code == 0, result.output
    ((command, env),) = execs
    assert command[command.index("--server.address") + 1] == host and env[ROOT_ENV] == str(tmp_path.resolve())
    assert env[APP_ANONYMOUS_ENV] == ("1" if flags else "0")  # open beyond loopback: never the server's OpenAI key


def test_app_hands_its_allowed_hosts_to_the_web_app_and_refuses_a_bad_one(monkeypatch):
    from fakescope.cli import serve as cli_serve
    from fakescope.serve.origins import APP_ALLOWED_HOSTS_ENV

    execs = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: execs.append(env))  # no Streamlit
    monkeypatch.setenv(APP_ALLOWED_HOSTS_ENV, "inherited.example")  # the flags alone decide
    assert CliRunner().invoke(app, ["app"]).exit_code == 0
    result = CliRunner().invoke(app, ["app", "--allowed-host", "Proxy.Example.", "--allowed-host", "[::2]"])
    assert result.exit_code == 0, result.output
    assert [env[APP_ALLOWED_HOSTS_ENV] for env in execs] == ["", "proxy.example,::2"]
    result = CliRunner().invoke(app, ["app", "--allowed-host", "proxy.example:8080"])
    assert result.exit_code == 2 and len(execs) == 2
    assert result.output == ("error: allowed host 'proxy.example:8080': expected a host name or IP address without "
                             "scheme, port or path (as api.example.com), or *\n")


@pytest.mark.parametrize(("host", "flags", "admitted"), [
    ("127.0.0.1", [], ["localhost", "127.0.0.1", "::1"]),
    ("127.0.0.2", ["--allowed-host", "Proxy.Example"], ["localhost", "127.0.0.1", "::1", "127.0.0.2", "proxy.example"]),
    ("0.0.0.0", ["--allow-anonymous"], []),  # open to anyone: no Host check, as in the page script
])
def test_app_has_streamlit_admit_only_its_host_names_to_a_session(host, flags, admitted, monkeypatch):
    """The Host check ran in the page script only: a page under a rebound name still got a session and uploads."""
    from fakescope.cli import serve as cli_serve

    commands = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: commands.append(command))  # no Streamlit
    assert CliRunner().invoke(app, ["app", "--host", host, *flags]).exit_code == 0
    assert [commands[0][i + 1] for i, arg in enumerate(commands[0]) if arg == "--server.allowedHosts"] == admitted


def test_app_hands_its_root_to_the_web_app_and_refuses_a_missing_one(monkeypatch, tmp_path):
    from fakescope.cli import serve as cli_serve
    from fakescope.serve.paths import ROOT_ENV

    execs = []
    monkeypatch.setattr(cli_serve.os, "execve", lambda path, command, env: execs.append(env))
    (tmp_path / "data").mkdir()
    assert CliRunner().invoke(app, ["app", "--root", str(tmp_path / "data" / ".." / "data")]).exit_code == 0
    assert execs[0][ROOT_ENV] == str(tmp_path / "data")
    result = CliRunner().invoke(app, ["app", "--root", str(tmp_path / "missing")])
    assert result.exit_code == 2 and len(execs) == 1
    assert result.output == f"error: the app's root {tmp_path / 'missing'} is not a folder\n"


def test_app_with_a_bad_model_or_device_is_one_line_before_streamlit_starts(monkeypatch, tmp_path):
    """Streamlit started and the page said so only once a browser opened it."""
    from fakescope.cli import serve as cli_serve

    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: pytest.fail("Streamlit started"))
    for flags, said in ((["--model", "no-such-model"], "error: unknown model 'no-such-model'"),
                        (["--model", str(tmp_path / "gone.safetensors")], f"error: model path not found: {tmp_path}"),
                        (["--device", "tpu"], "error: invalid device 'tpu': use cpu, cuda, cuda:N, mps or auto")):
        result = CliRunner().invoke(app, ["app", *flags])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith(said), result.output


def test_app_process_beyond_loopback_is_refused_before_streamlit_starts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fakescope", "app", "--host", "0.0.0.0", "--port", "1"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: refusing to serve the web app on 0.0.0.0") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["serve", "app"])
def test_a_port_in_use_is_one_line_before_serving(command, monkeypatch):
    """uvicorn printed '[Errno 98] address already in use' among its log lines after the model loaded, and exited 3;
    `app` checked only after importing Streamlit and torch and resolving the model (so a bad --model said that)."""
    from fakescope.cli import serve as cli_serve

    monkeypatch.setattr(serve_config, "check_port_free", CHECK_PORT_FREE)
    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: pytest.fail("Streamlit started on a taken port"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, [command, "--port", str(port), "--device", "cpu", "--model", "no-such-model"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output == (f"error: port {port} on 127.0.0.1 is already in use (another server?): "
                             "choose another with --port\n")
    CHECK_PORT_FREE("127.0.0.1", port)  # free again once let go


@pytest.mark.parametrize("command", ["serve", "app"])
@pytest.mark.parametrize(("host", "why"), [("nosuch.invalid", "cannot listen on nosuch.invalid: "),
                                           ("192.0.2.1", "cannot listen on 192.0.2.1 port 8000: ")])
def test_a_host_this_machine_cannot_listen_on_is_one_line_before_the_model_loads(command, host, why, monkeypatch):
    """A name that does not resolve, or an address the machine lacks, was uvicorn's '[Errno 99] error while attempting
    to bind' among its log lines after the model loaded (exit 3), or Streamlit's traceback."""
    from fakescope.cli import serve as cli_serve

    monkeypatch.setattr(serve_config, "check_port_free", CHECK_PORT_FREE)
    monkeypatch.setattr(serve_config.ServeConfig, "load_detector", lambda self: pytest.fail("the model loaded"))
    monkeypatch.setattr(cli_serve.os, "execve", lambda *args: pytest.fail("Streamlit started"))
    result = CliRunner().invoke(app, [command, "--host", host, "--port", "8000", "--allow-anonymous"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: {why}") and result.output.endswith("(check --host and --port)\n"
                                                                                if "port" in why else "(check --host)\n")
