"""Generation through the REST API and `save_pair`, against the loopback OpenAI Images server."""

from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pandas as pd
import pytest
from openai_server import ImagesAPIServer
from PIL import Image
from serve_helpers import ended

from fakescope.generate import OpenAIImagesConfig
from fakescope.generate.openai_images import VARIATION_PROMPT
from fakescope.serve import save_pair
from fakescope.serve.schemas import Job

API_KEY = "sk-serve-test-key"


@pytest.fixture
def images_api(monkeypatch):
    api = ImagesAPIServer(api_key=API_KEY).start()
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield api
    api.stop()


def _wait(server, auth, job_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_generate_job_makes_and_scores_variations(server, auth, images_api, photo_bytes):
    answer = httpx.post(
        f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
        files={"file": ("my cat!.jpg", photo_bytes, "image/jpeg")},
        data={"mode": "variation", "model": "dall-e-2", "size": "256x256", "n": "2"},
    )
    assert answer.status_code == 202 and answer.json()["state"] in ("queued", "running")
    job = _wait(server, auth, answer.json()["id"])
    assert job["state"] == "done" and job["error"] is None
    assert images_api.billable == 2 and images_api.requests[0]["image"] == (256, 256)
    assert [o["index"] for o in job["outputs"]] == [0, 1]
    Job.model_validate(answer.json())  # as /openapi.json describes it, key for key
    Job.model_validate(job)
    for output in job["outputs"]:  # saved like the JPEG upload, not as the API's PNG
        assert (output["detection"]["width"], output["detection"]["format"]) == (256, "JPEG")
        assert 0.0 <= output["detection"]["score"] <= 1.0
        assert output["detection"]["path"].startswith("my_cat_") and output["detection"]["path"].endswith(".jpg")
    assert job["created"] <= job["finished"]
    picture = httpx.get(server.url + job["outputs"][1]["image"], headers=auth)
    assert picture.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(picture.content)).size == (256, 256)


def test_generate_without_a_key_is_422(server, auth, images_api, photo_bytes):
    answer = httpx.post(f"{server.url}/v1/generate", headers=auth, files={"file": ("cat.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "no OpenAI API key: send one in the X-OpenAI-Key header, or set OPENAI_API_KEY for the server"
    assert images_api.requests == []


def test_generate_with_a_refused_key_fails_the_job_without_echoing_it(server, auth, images_api, photo_bytes):
    answer = httpx.post(
        f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": "sk-wrong-key-123"},
        files={"file": ("cat.jpg", photo_bytes, "image/jpeg")}, data={"mode": "edit", "prompt": "a hat", "model": "dall-e-2", "size": "256x256"},
    )
    job = _wait(server, auth, answer.json()["id"])
    assert job["state"] == "failed" and job["error"].endswith("the API key was refused; check the key given")
    assert "sk-wrong-key-123" not in str(job) and images_api.billable == 0


def test_a_failed_job_says_why(server, auth, images_api, photo_bytes):
    answer = httpx.post(
        f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
        files={"file": ("cat.jpg", photo_bytes, "image/jpeg")}, data={"model": "a-model-of-its-own", "size": "16x16"},  # the API answers 16x16
    )
    job = _wait(server, auth, answer.json()["id"])
    assert job["state"] == "failed" and job["error"].startswith("no image was generated (1 request(s) failed: ")
    assert "image too small: 16x16 (minimum side 32 px)" in job["error"]


def test_generating_again_into_the_same_folder_returns_the_images_already_made(tmp_path, images_api, photo_bytes, detector):
    import openai

    from fakescope.serve import generate_from_upload

    client = openai.OpenAI(api_key=API_KEY, base_url=images_api.base_url, max_retries=0)
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    first, again = (generate_from_upload(photo_bytes, config, tmp_path, client=client, detect=detector.predict, filename="cat.jpg")
                    for _ in range(2))
    assert [o.data for o in again] == [o.data for o in first] and len(first) == 1 and images_api.billable == 1


def test_the_app_keeps_each_models_images_from_one_upload_apart(tmp_path, images_api, photo_bytes, detector):
    import openai

    from fakescope.serve import generate_from_upload
    from fakescope.serve.generation import upload_folder

    client = openai.OpenAI(api_key=API_KEY, base_url=images_api.base_url, max_retries=0)
    configs = [OpenAIImagesConfig(model=model, mode="edit", prompt="a sunny day", size="1024x1024") for model in ("gpt-image-2.6-flare",
                                                                                         "gpt-image-2.6-sunburst")]
    assert configs[0].params_hash() == configs[1].params_hash()  # the same parameters: only the model differs
    made = [generate_from_upload(photo_bytes, config, upload_folder(tmp_path, photo_bytes, config), client=client,
                                 detect=detector.predict, filename="cat.jpg") for config in configs]
    assert [len(outputs) for outputs in made] == [1, 1] and images_api.billable == 2
    assert [request["model"] for request in images_api.requests] == ["gpt-image-2.6-flare", "gpt-image-2.6-sunburst"]
    assert made[0][0].path.parent.parent != made[1][0].path.parent.parent
    assert upload_folder(tmp_path, photo_bytes, configs[0]) == made[0][0].path.parent.parent  # the same settings: found again


def test_generate_by_default_asks_a_current_model_for_a_whole_image_edit(server, auth, images_api, photo_bytes):
    answer = httpx.post(f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
                        files={"file": ("cat.jpg", photo_bytes, "image/jpeg")})
    job = _wait(server, auth, answer.json()["id"])
    assert job["state"] == "done", job
    sent = images_api.requests[0]
    assert (sent["endpoint"], sent["model"], sent["size"], sent["image"]) == ("edits", "gpt-image-2.6-flare", "1024x1024", (160, 120))
    assert "mask" not in sent and "response_format" not in sent and sent["prompt"] == VARIATION_PROMPT


def test_a_retired_model_on_api_openai_com_is_422_before_any_work(server, auth, monkeypatch, photo_bytes):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    answer = httpx.post(f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
                        files={"file": ("cat.jpg", photo_bytes, "image/jpeg")}, data={"model": "dall-e-2", "size": "256x256"})
    assert answer.status_code == 422 and answer.json()["detail"].startswith(
        "dall-e-2 was shut down on api.openai.com on 2026-05-12; use gpt-image-2.6-flare")


def test_input_fidelity_is_sent_with_the_edit_and_one_the_model_does_not_take_is_422_unpaid(server, auth, images_api,
                                                                                             photo_bytes):
    post = dict(url=f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
                files={"file": ("cat.jpg", photo_bytes, "image/jpeg")})
    refused = httpx.post(**post, data={"model": "gpt-image-2", "input_fidelity": "high"})
    assert refused.status_code == 422 and images_api.requests == []
    assert refused.json()["detail"] == "input_fidelity high is not one gpt-image-2 takes: it takes none, leave it out"
    assert httpx.post(**post, data={"input_fidelity": "medium"}).status_code == 422 and images_api.requests == []
    answer = httpx.post(**post, data={"model": "gpt-image-1.5", "input_fidelity": "high"})
    job = _wait(server, auth, answer.json()["id"])
    assert job["state"] == "done" and job["config"]["input_fidelity"] == "high", job
    assert [(r["endpoint"], r["input_fidelity"]) for r in images_api.requests] == [("edits", "high")]


def test_missing_job_is_404(server, auth):
    answer = httpx.get(f"{server.url}/v1/jobs/nope", headers=auth)
    assert answer.status_code == 404 and answer.json()["detail"] == "no job 'nope'"
    for method in ("GET", "DELETE"):  # an id with a line break (%0A) was echoed as two lines
        answer = httpx.request(method, f"{server.url}/v1/jobs/a%0Ab", headers=auth)
        assert answer.status_code == 404 and answer.json() == {"detail": "no job 'a\\nb'"}


def test_save_pair_writes_real_and_ai_with_a_shared_pair_id(tmp_path, photo_bytes, flat_png):
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    manifest = save_pair(str(tmp_path / "ds"), photo_bytes, [flat_png, flat_png], config, filename="my cat.jpg")
    rows = pd.read_csv(manifest, keep_default_na=False)
    assert list(rows["label"]) == ["real", "ai", "ai"] and rows["pair_id"].nunique() == 1
    assert rows.loc[0, "uri"].endswith(".jpeg") and "/real/my_cat-" in rows.loc[0, "uri"]
    assert all("/ai/dall-e-2/" in uri for uri in rows["uri"][1:])
    assert set(rows["source"]) == {"upload"} and list(rows["source_uri"]) == ["my cat.jpg", rows.loc[0, "uri"], rows.loc[0, "uri"]]
    assert save_pair(str(tmp_path / "ds"), photo_bytes, [flat_png, flat_png], config, filename="my cat.jpg") == manifest
    assert len(pd.read_csv(manifest)) == 3


def test_a_saved_uploads_name_reads_back_as_uploaded_and_its_ai_images_link_to_the_stored_file(tmp_path, photo_bytes,
                                                                                                 flat_png):
    """Relative source_uris resolve against the manifest's folder: the real row's upload name read as <ds>/my cat.jpg,
    a file that is not there. Only an ai row's source_uri (the image it was made from) is a link to resolve."""
    from fakescope.data.manifest import read_manifest, read_rows, resolve_uris

    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    manifest = save_pair(str(tmp_path / "ds"), photo_bytes, [flat_png], config, filename="my cat.jpg")
    for rows in (read_rows(manifest, split_required=False), resolve_uris(read_manifest(manifest), manifest)):
        real, ai = rows.iloc[0], rows.iloc[1]
        assert real["source_uri"] == "my cat.jpg" and ai["source_uri"] == real["uri"] and Path(real["uri"]).is_file()


def test_a_saved_pair_reads_back_with_dataset_build(tmp_path, monkeypatch, photo_bytes, flat_png):
    from fakescope.data import build_from_csv, build_from_folders, join_attributes

    monkeypatch.chdir(tmp_path)  # the app's folder field takes a relative path too
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    manifest = save_pair("data/generated", photo_bytes, [flat_png], config, filename="00042.png")
    (tmp_path / "attributes.csv").write_text("ffhq_file,gender,race\n00042.png,Woman,asian\n")
    listed = join_attributes(build_from_csv(manifest), str(tmp_path / "attributes.csv"))
    assert list(listed["label"]) == ["real", "ai"] and listed["pair_id"].nunique() == 1
    assert list(listed["generator"]) == ["", "dall-e-2"] and list(listed["gender"]) == ["Woman", "Woman"]
    folders = build_from_folders("data/generated")
    assert folders.set_index("label").loc["ai", "generator"] == "dall-e-2" and folders["pair_id"].nunique() == 1


def test_jobs_outlive_a_restart_and_unfinished_ones_fail_without_a_resend(tmp_path, images_api, photo_bytes, detector):
    import openai

    from fakescope.serve.jobs import GenerationJob, JobStore

    client = openai.OpenAI(api_key=API_KEY, base_url=images_api.base_url, max_retries=0)
    store = JobStore(tmp_path, lambda data: detector.predict(data))
    done = store.submit(photo_bytes, OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2), client, filename="cat.jpg")
    ended(done)
    store.close()
    before = done.to_dict()
    assert before["state"] == "done" and len(before["outputs"]) == 2
    pictures = [out.path.read_bytes() for out in done.outputs]
    # a job caught mid-flight by a crash: its record says running
    GenerationJob("crashed0000000000", OpenAIImagesConfig(model="dall-e-2", size="256x256"), tmp_path / "crashed0000000000", state="running").save()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "job.json").write_text("{not json")

    again = JobStore(tmp_path, lambda data: detector.predict(data))
    assert again.get(done.id).to_dict() == before
    assert [out.path.read_bytes() for out in again.get(done.id).outputs] == pictures
    crashed = again.get("crashed0000000000")
    assert crashed.state == "failed" and crashed.finished is not None
    assert crashed.error == "interrupted by a server stop before any request was sent (nothing was paid); submit the image again"
    assert JobStore(tmp_path, lambda data: None).get("crashed0000000000").state == "failed"  # the verdict was saved
    assert again.get("garbage") is None and images_api.billable == 2  # nothing was sent again
    again.close()


def test_a_job_saved_before_detections_carried_a_caveat_gets_it_from_its_verdict_and_evidence(tmp_path, images_api,
                                                                                             photo_bytes, detector):
    import json

    import openai

    from fakescope.forensics.fusion import PIXEL_ONLY
    from fakescope.serve.jobs import RECORD_NAME, JobStore, _with_caveat

    client = openai.OpenAI(api_key=API_KEY, base_url=images_api.base_url, max_retries=0)
    store = JobStore(tmp_path, lambda data: detector.predict(data))
    done = ended(store.submit(photo_bytes, OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256"), client,
                              filename="cat.jpg"))
    store.close()
    saved = json.loads((done.folder / RECORD_NAME).read_text())
    given = [out["detection"]["caveat"] for out in saved["outputs"]]
    for out in saved["outputs"]:
        del out["detection"]["caveat"]  # as an older fakescope wrote it
    (done.folder / RECORD_NAME).write_text(json.dumps(saved))
    again = JobStore(tmp_path, lambda data: detector.predict(data))
    assert [out["detection"]["caveat"] for out in again.get(done.id).to_dict()["outputs"]] == given
    again.close()
    real = {"label": "real", "evidence": [{"kind": "pixel", "score": 0.1}, {"kind": "c2pa", "score": None}]}
    backed = {"label": "real", "evidence": [{"kind": "pixel", "score": 0.1}, {"kind": "c2pa", "score": 0.05}]}
    assert [_with_caveat(d)["caveat"] for d in (real, backed, {**real, "label": "ai"})] == [PIXEL_ONLY, None, None]


def test_a_job_that_made_some_of_its_images_says_why_the_others_are_missing(tmp_path, images_api, photo_bytes, detector):
    import openai

    from fakescope.serve.jobs import JobStore

    client = openai.OpenAI(api_key=API_KEY, base_url=images_api.base_url, max_retries=0)
    images_api.faults = [500]  # the first of the two requests
    store = JobStore(tmp_path, lambda data: detector.predict(data))
    job = ended(store.submit(photo_bytes, OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2), client,
                             filename="cat.jpg"))
    store.close()
    answer = job.to_dict()
    assert answer["state"] == "done" and len(answer["outputs"]) == 1 and images_api.billable == 1
    assert answer["error"].startswith("1 of 2 images were not generated: InternalServerError")


def test_an_unwritable_jobs_folder_is_a_503_that_names_no_path(tmp_path, detector, images_api, photo_bytes, caplog):
    from fastapi.testclient import TestClient

    from fakescope.serve import ServeConfig, create_app

    (tmp_path / "a-file").write_text("")  # a jobs folder that cannot be made: a read-only home, a mistyped path
    config = ServeConfig(token=None, jobs_dir=tmp_path / "a-file" / "jobs")
    with TestClient(create_app(config, detector=detector)) as client:
        answer = client.post("/v1/generate", headers={"X-OpenAI-Key": API_KEY}, data={"model": "dall-e-2", "size": "256x256"},
                             files={"file": ("cat.jpg", photo_bytes, "image/jpeg")})  # was a text/plain 500
    assert answer.status_code == 503
    assert answer.json() == {"detail": "generation is unavailable: the server cannot write its jobs folder"}
    assert "a-file" in caplog.text and images_api.requests == []


def test_a_size_the_api_cannot_make_is_422_before_any_work(server, auth, images_api, photo_bytes):
    for size in ("big", "100000x100000"):  # dall-e-2's upload was resized to it first: 30 GB for this one
        answer = httpx.post(f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
                            files={"file": ("cat.jpg", photo_bytes, "image/jpeg")}, data={"size": size})
        assert answer.status_code == 422
        assert answer.json() == {"detail": "size: expected WIDTHxHEIGHT with sides of 1 to 4096 pixels (as 1024x1024), or auto"}
    assert images_api.requests == []


def test_a_prompt_over_the_models_limit_is_422_before_any_work(server, auth, images_api, photo_bytes):
    """A 100 KB prompt was queued and failed only at the API, after the upload."""
    answer = httpx.post(f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
                        files={"file": ("cat.jpg", photo_bytes, "image/jpeg")},
                        data={"mode": "edit", "model": "dall-e-2", "size": "256x256", "prompt": "x" * 100_000})
    assert answer.status_code == 422
    assert answer.json() == {"detail": "prompt: 100,000 characters, over dall-e-2's limit of 1,000; shorten it"}
    assert images_api.requests == []


@pytest.mark.parametrize("model", ["x/../../../escaped", "..", "a\\b", "m" * 101])
def test_a_model_name_that_cannot_name_files_is_422_before_any_request(server, auth, images_api, photo_bytes, model):
    """The model names the outputs' files (and save_pair's folder): path parts must not reach them."""
    answer = httpx.post(
        f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
        files={"file": ("cat.jpg", photo_bytes, "image/jpeg")}, data={"model": model, "size": "256x256"},
    )
    assert answer.status_code == 422, answer.json()
    assert answer.json()["detail"].startswith("model: expected a plain name") and images_api.requests == []


def test_generate_from_upload_reads_the_format_from_the_header_and_refuses_non_images_unpaid(tmp_path, images_api, flat_png, detector):
    import openai

    from fakescope.errors import ImageLoadError
    from fakescope.serve import generate_from_upload

    client = openai.OpenAI(api_key=API_KEY, base_url=images_api.base_url, max_retries=0)
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    with pytest.raises(ImageLoadError, match="^not an image: the file's signature matches no supported format"):
        generate_from_upload(b"not an image", config, tmp_path / "text", client=client, detect=detector.predict)
    assert images_api.billable == 0 and not (tmp_path / "text").exists()
    made = generate_from_upload(flat_png, config, tmp_path / "png", client=client, detect=detector.predict, filename="cat.jpg")
    assert len(made) == 1 and (tmp_path / "png" / "cat.png").read_bytes() == flat_png  # named by its bytes, not its name


def test_an_answer_lost_once_sent_is_a_reason_not_a_blank(tmp_path, images_api, photo_bytes, detector):
    """A run whose only answer broke off said `no image was generated (0 request(s) failed: )`."""
    from fakescope.errors import FakescopeError
    from fakescope.serve import generate_from_upload
    from fakescope.serve.generation import openai_client, shortfall

    images_api.faults = ["cut"]
    client = openai_client(API_KEY, max_retries=2)
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2)
    with pytest.raises(FakescopeError, match=r"^no image was generated \(1 request\(s\) failed: an answer timed out or broke "
                                             r"off once sent: it may have been billed, so it was not asked again\)$"):
        generate_from_upload(photo_bytes, replace(config, n=1), tmp_path / "a", client=client, detect=detector.predict)
    images_api.faults = ["cut"]
    made = generate_from_upload(photo_bytes, config, tmp_path / "b", client=client, detect=detector.predict)
    assert len(made) == 1 and images_api.billable == 3 and len(images_api.requests) == 3
    assert shortfall(made, config, tmp_path / "b").startswith("1 of 2 images were not generated: an answer timed out")
