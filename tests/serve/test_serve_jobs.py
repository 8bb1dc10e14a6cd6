"""Cancelling and deleting generation jobs, the bound on queued jobs, and path-free job errors."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time

import httpx
import pytest
from openai_server import ImagesAPIServer
from serve_helpers import TOKEN, LiveServer, ended

from fakescope.generate import OpenAIImagesConfig
from fakescope.serve.jobs import CANCELLED_QUEUED, CANCELLED_RUNNING, JobStore
from fakescope.serve.schemas import Job

API_KEY = "sk-jobs-test-key"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def held_api(monkeypatch):
    """The Images API holding every request until `release` is set (then answered and billed)."""
    api = ImagesAPIServer(api_key=API_KEY).start()
    api.hold_after, api.answer_held = 0, True
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield api
    api.stop()


def _submit(url: str, photo_bytes: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/generate", headers={**AUTH, "X-OpenAI-Key": API_KEY}, data={"model": "dall-e-2", "size": "256x256"},
                      files={"file": ("cat.jpg", photo_bytes, "image/jpeg")})


def _until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


def test_delete_cancels_queued_and_running_jobs_then_removes_finished_ones(detector, held_api, photo_bytes, tmp_path):
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, jobs_dir=tmp_path, max_jobs=4)
    with LiveServer(config, detector) as live:
        running, other, queued = (_submit(live.url, photo_bytes).json()["id"] for _ in range(3))  # 2 workers
        _until(lambda: held_api.held == 2, "two jobs to reach the API")
        url = f"{live.url}/v1/jobs"
        cancelled = httpx.delete(f"{url}/{queued}", headers=AUTH)
        assert cancelled.status_code == 200 and Job.model_validate(cancelled.json())
        assert (cancelled.json()["state"], cancelled.json()["error"]) == ("cancelled", CANCELLED_QUEUED)
        stopped = httpx.delete(f"{url}/{running}", headers=AUTH).json()
        assert (stopped["state"], stopped["error"]) == ("cancelled", CANCELLED_RUNNING)
        still_writing = httpx.delete(f"{url}/{running}", headers=AUTH)  # its worker still waits on the API
        assert still_writing.status_code == 409 and "still finishing" in still_writing.json()["detail"]

        held_api.release.set()  # the two requests sent are answered (and billed)
        done = _until(lambda: (j := httpx.get(f"{url}/{other}", headers=AUTH).json())["state"] == "done" and j, "job")
        assert len(done["outputs"]) == 1
        kept = _until(lambda: (j := httpx.get(f"{url}/{running}", headers=AUTH).json())["outputs"] and j, "outputs")
        assert (kept["state"], kept["error"]) == ("cancelled", CANCELLED_RUNNING)  # paid for: its image is kept
        assert httpx.get(f"{live.url}{kept['outputs'][0]['image']}", headers=AUTH).status_code == 200
        assert len(held_api.requests) == 2 and held_api.billable == 2  # the queued job never reached the API

        _until(lambda: httpx.delete(f"{url}/{running}", headers=AUTH).status_code == 200, "the delete")
        assert httpx.get(f"{url}/{running}", headers=AUTH).status_code == 404
        assert not (tmp_path / running).exists() and (tmp_path / other).is_dir()
        gone = httpx.delete(f"{url}/{running}", headers=AUTH)
        assert gone.status_code == 404 and gone.json() == {"detail": f"no job {running!r}"}
    assert JobStore(tmp_path, detector.predict).get(queued).state == "cancelled"  # the record outlives a restart


def test_generation_past_max_jobs_is_503_with_retry_after(detector, held_api, photo_bytes, tmp_path):
    from fakescope.serve import ServeConfig

    with LiveServer(ServeConfig(token=TOKEN, jobs_dir=tmp_path, max_jobs=1), detector) as live:
        first = _submit(live.url, photo_bytes)
        refused = _submit(live.url, photo_bytes)
        assert first.status_code == 202 and refused.status_code == 503
        assert refused.headers["Retry-After"] == "30"  # no job has run yet: nothing to estimate from
        assert refused.json() == {"detail": "too many generation jobs: 1 are queued or running; try again later"}
        head = ["POST /v1/generate HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}", "Connection: close",
                "Content-Length: 100000", "Content-Type: multipart/form-data; boundary=XX"]
        with socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())  # and none of the upload
            unread = http.client.HTTPResponse(sock)
            unread.begin()  # was answered once the whole upload was in (here: 408 after 30 s)
            assert unread.status == 503 and unread.getheader("Retry-After") == "30"
        httpx.delete(f"{live.url}/v1/jobs/{first.json()['id']}", headers=AUTH)  # a cancelled job frees its place
        assert _submit(live.url, photo_bytes).status_code == 202
        held_api.release.set()
    assert len(list(tmp_path.iterdir())) == 2  # the refused one left no folder


def test_the_generation_retry_after_is_estimated_from_the_jobs_run(detector, held_api, photo_bytes, tmp_path):
    from fakescope.serve import ServeConfig

    held_api.hold_after = 1  # the first job is answered at once, the next ones wait
    with LiveServer(ServeConfig(token=TOKEN, jobs_dir=tmp_path, max_jobs=1), detector) as live:
        started = time.monotonic()
        done = _submit(live.url, photo_bytes).json()["id"]
        _until(lambda: httpx.get(f"{live.url}/v1/jobs/{done}", headers=AUTH).json()["state"] == "done", "the first job")
        first_s = time.monotonic() - started  # the job ran within this: about a second idle, more under load
        assert _submit(live.url, photo_bytes).status_code == 202
        refused = _submit(live.url, photo_bytes)
        held_api.release.set()
    # one job waits, at the first job's time: at most the time seen here, not the 30 s used before any job ran
    assert refused.status_code == 503 and 1 <= int(refused.headers["Retry-After"]) <= max(1, round(first_s)) < 30


def test_a_job_error_names_no_local_path_and_the_log_keeps_it(tmp_path, photo_bytes, caplog):
    import openai

    api = ImagesAPIServer(api_key=API_KEY).start()
    try:
        client = openai.OpenAI(api_key=API_KEY, base_url=api.base_url, max_retries=0)
        scratch = tmp_path / "scratch" / ".upload-1a2b.part"

        def detect(data: bytes):  # scoring reads a temporary file that a cleaner already removed
            return scratch.read_bytes()

        store = JobStore(tmp_path / "jobs", detect)
        with caplog.at_level(logging.WARNING, logger="fakescope.serve.jobs"):
            job = ended(store.submit(photo_bytes, OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256"), client,
                                     filename="cat.jpg"))
            store.close()
    finally:
        api.stop()
    assert job.state == "failed"
    assert job.error == "FileNotFoundError: [Errno 2] No such file or directory: '<path>'"
    assert str(tmp_path) not in (tmp_path / "jobs" / job.id / "job.json").read_text()
    assert str(scratch) in caplog.text  # the operator still sees which file


@pytest.mark.parametrize(("message", "public"), [
    ("cannot open job ledger /srv/jobs/ab/ai/.ledger.sqlite: disk I/O error", "cannot open job ledger <path>: disk I/O error"),
    ("[Errno 28] No space left on device: 'C:\\jobs\\x.part'", "[Errno 28] No space left on device: '<path>'"),
    ("cannot read ~/.cache/fakescope/x.png.", "cannot read <path>."),
    ("Error code: 404 - unknown path at http://127.0.0.1:9/v1/images/edits (1/2 failed)",
     "Error code: 404 - unknown path at http://127.0.0.1:9/v1/images/edits (1/2 failed)"),
])
def test_public_error_hides_local_paths_only(message, public):
    from fakescope.serve.generation import public_error

    assert public_error(message) == public


def test_a_record_that_no_longer_reads_back_is_warned_of_once_and_kept(tmp_path, detector, caplog):
    import json

    from fakescope.serve import jobs

    for job_id in ("0000aaaa", "1111bbbb"):
        jobs.GenerationJob(job_id, OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256"), tmp_path / job_id,
                           state="done", finished=time.time()).save()
    old = tmp_path / "0000aaaa" / "job.json"  # a size that stricter checks now refuse
    record = json.loads(old.read_text())
    old.write_text(json.dumps({**record, "config": {**record["config"], "size": "1536x1024"}}))
    damaged = tmp_path / "1111bbbb" / "job.json"
    damaged.write_text("{")
    kept = {path: path.read_bytes() for path in (old, damaged)}
    with caplog.at_level(logging.WARNING, logger="fakescope.serve.jobs"):
        store = JobStore(tmp_path, detector.predict)
    assert store.get("0000aaaa") is None and store.get("1111bbbb") is None
    assert [r.getMessage() for r in caplog.records] == [
        "generation job 0000aaaa is not restored (its job.json is kept): size 1536x1024 is not one dall-e-2 makes: "
        "use 256x256, 512x512, 1024x1024",
        "generation job 1111bbbb is not restored (its job.json is kept): JSONDecodeError: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)"]
    assert {path: path.read_bytes() for path in (old, damaged)} == kept


def test_a_job_saved_before_the_format_option_shows_the_png_it_made(tmp_path, detector):
    """A job saved before `output_format` existed (its images the API's PNGs) showed `output_format: None` once restored,
    as new jobs did for their default (`source`). A restored job shows `png`, a new one `source`, which reads back."""
    import json

    from fakescope.serve import jobs

    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    for job_id in ("0000aaaa", "1111bbbb"):
        jobs.GenerationJob(job_id, config, tmp_path / job_id, state="done", finished=time.time()).save()
    old = tmp_path / "0000aaaa" / "job.json"
    record = json.loads(old.read_text())
    assert record["config"]["output_format"] == "source"
    del record["config"]["output_format"], record["config"]["resize_to_source"]  # as versions before --format saved it
    old.write_text(json.dumps(record))
    store = JobStore(tmp_path, detector.predict)
    assert Job.model_validate(store.get("0000aaaa").to_dict()).config["output_format"] == "png"
    assert store.get("0000aaaa").config.params() == OpenAIImagesConfig(model="dall-e-2", size="256x256",
                                                                        output_format="png").params()
    assert store.get("1111bbbb").to_dict()["config"]["output_format"] == "source"
    assert store.get("1111bbbb").config.params() == config.params()


def test_a_job_whose_folder_is_half_deleted_stays_deleted_after_a_restart(tmp_path, detector, monkeypatch, caplog):
    import shutil

    from fakescope.serve import jobs

    job = jobs.GenerationJob("0123abcd", OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256"), tmp_path / "0123abcd",
                             state="done", finished=time.time())
    (job.folder / "ai").mkdir(parents=True)
    (job.folder / "ai" / "out.png").write_bytes(b"png")
    job.outputs = [jobs.JobOutput(job.folder / "ai" / "out.png", {})]
    job.save()
    store = JobStore(tmp_path, detector.predict)

    rmtree = shutil.rmtree

    def fails_partway(folder, ignore_errors=False):  # as a busy disk or a file held open on Windows leaves it
        rmtree(folder / "ai")
    monkeypatch.setattr(jobs.shutil, "rmtree", fails_partway)
    with caplog.at_level(logging.WARNING, logger="fakescope.serve.jobs"):
        assert store.delete(job.id).state == "done"
    assert job.folder.is_dir() and "files remain" in caplog.text
    assert store.get(job.id) is None and JobStore(tmp_path, detector.predict).get(job.id) is None  # was back after a restart


def _stopped_running(note: str) -> bool:
    return note == ("interrupted by a server stop: of 1 image(s), 0 billed and 1 sent but unanswered (maybe billed); a job "
                    "is not resumed: submit the image again (a new job, paid again)")


def test_a_stop_cancels_queued_jobs_and_gives_running_ones_a_bounded_grace(detector, held_api, photo_bytes, tmp_path):
    """`close` waited for every job, a queued one started meanwhile: a stop lasted as long as the API took (up to the
    client's timeout, 300 s), past the orchestrator's SIGKILL, and paid for jobs it had not started."""
    from fakescope.serve.batching import ServerBusy
    from fakescope.serve.generation import openai_client
    from fakescope.serve.jobs import STOPPED_QUEUED, STOPPING

    others = set(threading.enumerate())  # other stores' idle workers, of tests before this one in the process
    store = JobStore(tmp_path, detector.predict)  # 2 workers
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    running, other, queued = (store.submit(photo_bytes, config, openai_client(API_KEY)) for _ in range(3))
    _until(lambda: held_api.held == 2, "two jobs to reach the API")
    started = time.monotonic()
    assert store.close(grace_s=0.5) == 2
    assert time.monotonic() - started < 2  # not the API's time
    with pytest.raises(ServerBusy, match=STOPPING):
        store.submit(photo_bytes, config, openai_client(API_KEY))
    restarted = JobStore(tmp_path, detector.predict)
    for job in (queued, restarted.get(queued.id)):
        assert (job.state, job.error) == ("cancelled", STOPPED_QUEUED)
    for job in (running, other, restarted.get(running.id), restarted.get(other.id)):
        assert job.state == "failed" and _stopped_running(job.error), job.error
    held_api.release.set()  # the requests on the wire are answered (billed) once the store gave up on them
    _until(lambda: held_api.billable == 2, "the held answers")
    assert len(held_api.requests) == 2  # the queued job never reached the API
    _until(lambda: not [t for t in threading.enumerate() if t.name.startswith("fakescope-generate") and t not in others],
           "the workers")
    assert _stopped_running(JobStore(tmp_path, detector.predict).get(running.id).error)  # the record stays as it was told


def test_a_stopping_server_starts_no_job_and_ends_within_its_grace(detector, held_api, photo_bytes, tmp_path):
    """A stop waited for the requests in flight before the jobs heard of it: an upload answered meanwhile started a job
    (paid) after the stop began, and its grace came after theirs."""
    from fakescope.serve import ServeConfig
    from fakescope.serve.jobs import STOPPED_QUEUED, STOPPING

    live = LiveServer(ServeConfig(token=TOKEN, jobs_dir=tmp_path, max_jobs=4, shutdown_grace_s=1.0), detector).__enter__()
    try:
        running, other, queued = (_submit(live.url, photo_bytes).json()["id"] for _ in range(3))  # 2 workers
        _until(lambda: held_api.held == 2, "two jobs to reach the API")
        body = (b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat.jpg\"\r\n"
                b"Content-Type: image/jpeg\r\n\r\n" + photo_bytes + b"\r\n--XX--\r\n")
        head = ["POST /v1/generate HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}", f"X-OpenAI-Key: {API_KEY}",
                f"Content-Length: {len(body)}", "Content-Type: multipart/form-data; boundary=XX"]
        with socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:100])
            time.sleep(0.2)  # its head is in: admitted
            started = time.monotonic()
            live.server.should_exit = True
            _until(lambda: _refused(live.app.state.jobs), "the stop")
            sock.sendall(body[100:])
            late = http.client.HTTPResponse(sock)
            late.begin()
            assert late.status == 503 and STOPPING in late.read().decode()
    finally:
        live.__exit__()
    assert time.monotonic() - started < 1.0 + 1.5 and not live.thread.is_alive()
    assert live.app.state.abandoned == 2
    restarted = JobStore(tmp_path, detector.predict)
    assert (restarted.get(queued).state, restarted.get(queued).error) == ("cancelled", STOPPED_QUEUED)
    assert all(_stopped_running(restarted.get(job).error) for job in (running, other))
    assert len(list(tmp_path.iterdir())) == 3 and len(held_api.requests) == 2  # the late upload made no job


def _refused(jobs: JobStore) -> bool:
    from fakescope.serve.batching import ServerBusy

    try:
        jobs.check_room()
    except ServerBusy:
        return True
    return False


def test_a_job_found_unfinished_at_restart_says_what_its_ledger_records_as_billed(tmp_path, detector):
    """A job a crash (or SIGKILL) left running came back 'interrupted by a server restart', saying nothing of the
    images its requests had paid for."""
    from fakescope.generate import Ledger
    from fakescope.generate.runner import default_ledger_path
    from fakescope.serve.jobs import GenerationJob

    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=3)
    job = GenerationJob("crashed0000000000", config, tmp_path / "crashed0000000000", state="running")
    job.save()
    with Ledger(default_ledger_path(str(job.folder / "ai"))) as book:
        for index in range(3):
            book.add(f"k{index}", "cat.jpg", "ab", "variation", "dall-e-2", "p", index)
        book.mark_running("k0", 0.02)
        book.mark_done("k0", str(job.folder / "ai" / "cat-0.png"), 0.02, {}, 0.02)
        book.mark_running("k1", 0.02)  # in flight when the server died
    restored = JobStore(tmp_path, detector.predict).get(job.id)
    assert restored.state == "failed" and restored.error == (
        "interrupted by a server stop: of 3 image(s), 1 billed and 1 sent but unanswered (maybe billed); a job is not "
        "resumed: submit the image again (a new job, paid again)")
