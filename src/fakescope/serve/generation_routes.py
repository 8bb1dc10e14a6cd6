"""The generation routes: `POST /v1/generate` and `/v1/jobs/{id}` (state, cancel or delete, outputs)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, Response, UploadFile

from fakescope.errors import ConfigError, StorageError
from fakescope.generate import OpenAIImagesConfig
from fakescope.generate.openai_images import MAX_SIZE_SIDE
from fakescope.generate.openai_models import DEFAULT_MODEL, check_served
from fakescope.io.image import sniff_format
from fakescope.serve.config import ServeConfig
from fakescope.serve.generation import openai_client
from fakescope.serve.jobs import JobBusy, JobStore
from fakescope.serve.limits import HELD
from fakescope.serve.openapi import BINARY, SECURED, answers
from fakescope.serve.request_image import check_image_422, only_file, read_upload
from fakescope.serve.schemas import Job

NO_KEY = "no OpenAI API key: send one in the X-OpenAI-Key header, or set OPENAI_API_KEY for the server"
log = logging.getLogger(__name__)


def add_generation_routes(app: FastAPI, config: ServeConfig) -> None:
    """Add the generation routes."""

    @app.post("/v1/generate", tags=["generate"], summary="Start a generation job", dependencies=SECURED, status_code=202,
              response_model=None,
              responses=answers(Job, "the job, queued or already running", 400, 408, 413, 422, 503, status=202,
                                e422="no image, not a readable image, too many pixels, no OpenAI key, or a mode, model, "
                                     "size, prompt, n or input_fidelity the model does not take",
                                e503="busy: the generation jobs are full, upload bodies fill the server's memory for them or "
                                     "the server is stopping (`Retry-After` says when to try again), or the "
                                     "server cannot write its jobs folder"))
    async def generate(
        request: Request,
        file: Annotated[UploadFile, File(description="The real image to start from.")],
        mode: Annotated[Literal["variation", "edit"], Form()] = "variation",
        model: Annotated[str, Form(description="A GPT image model (variation: an edit of the whole image by a fixed "
                                               "prompt); dall-e-2 only where OPENAI_BASE_URL serves it.")] = DEFAULT_MODEL,
        size: Annotated[str, Form(description=f"A size the model makes (GPT image models: 1024x1024, 1536x1024, "
                                              f"1024x1536, auto); WIDTHxHEIGHT, sides up to {MAX_SIZE_SIDE}.")] = "1024x1024",
        prompt: Annotated[str | None, Form(description="Required for edit; for variation it replaces the built-in "
                                           "prompt.")] = None,
        n: Annotated[int, Form(ge=1, le=4)] = 1,
        input_fidelity: Annotated[Literal["high", "low"] | None, Form(description=(
            "high or low: how closely an edit (a GPT image model's variation included) keeps the photo's style and "
            "features, faces above all; default: the model's (low). gpt-image-1.5 takes both, gpt-image-1-mini low, gpt-image-2 "
            "and dall-e-2 neither."))] = None,
        openai_key: Annotated[str | None, Header(alias="X-OpenAI-Key",
                                                 description="Default: the server's OPENAI_API_KEY.")] = None,
    ) -> dict:
        """Start a job that makes ai images from the upload with the OpenAI Images API, then scores them."""
        await only_file(request)
        try:  # before the upload is read: a size the API cannot make is refused without work
            job_config = OpenAIImagesConfig(mode=mode, model=model, size=size, prompt=prompt, n=n,
                                             input_fidelity=input_fidelity)
            client = openai_client(openai_key, missing=NO_KEY)
            check_served(job_config.model, client.base_url)  # a retired model on api.openai.com
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        data = await read_upload(file, config)
        check_image_422(data, config)
        try:
            job = request.app.state.jobs.submit(data, job_config, client, filename=file.filename or "upload",
                                                release=request.scope[HELD].pass_on(len(data)))  # held till it runs
        except StorageError as exc:  # the folder is the operator's to fix; its path stays out of the answer
            log.warning("generation refused: %s", exc)
            raise HTTPException(503, "generation is unavailable: the server cannot write its jobs folder") from None
        return job.to_dict()

    @app.get("/v1/jobs/{job_id}", tags=["generate"], summary="A generation job's state and outputs", dependencies=SECURED,
             response_model=None, responses=answers(Job, "the job", 404, e404="unknown job"))
    def job_state(request: Request, job_id: str) -> dict:
        """A generation job's state (`queued`, `running`, `done`, `failed`) and, when done, its outputs."""
        return _job(request, job_id).to_dict()

    @app.delete("/v1/jobs/{job_id}", tags=["generate"], summary="Cancel or delete a generation job", dependencies=SECURED,
                response_model=None,
                responses=answers(Job, "the cancelled job, or the last record of the deleted one", 404, 409, 503,
                                  e404="unknown job", e503="the server cannot remove the finished job's record (it is kept)"))
    def delete_job(request: Request, job_id: str) -> dict:
        """Cancel a queued or running job (it stays readable, as `cancelled`); delete a finished one and its images.

        Answers the cancelled job, or the last record of the deleted one.
        """
        jobs: JobStore = request.app.state.jobs
        try:
            job = jobs.delete(job_id)
        except JobBusy as exc:
            raise HTTPException(409, str(exc)) from None
        except StorageError as exc:  # path-free; the log has the reason
            raise HTTPException(503, str(exc)) from None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job.to_dict()

    @app.get("/v1/jobs/{job_id}/outputs/{index}", tags=["generate"], summary="One generated image", dependencies=SECURED,
             response_class=Response,
             responses=answers({"content": {"image/*": BINARY}}, "the image, saved like the upload", 404, 422,
                               e404="unknown job, no such output, or its file is gone", e422="index: not a whole number"))
    def job_output(request: Request, job_id: str, index: int) -> Response:
        """One generated image, saved like the upload (JPEG for a JPEG upload, ...)."""
        outputs = _job(request, job_id).outputs
        if not 0 <= index < len(outputs):
            raise HTTPException(404, f"job {job_id} has no output {index}")
        try:
            data = outputs[index].path.read_bytes()
        except OSError:
            raise HTTPException(404, f"job {job_id}'s output {index} is no longer on disk") from None
        return Response(data, media_type=f"image/{(sniff_format(data) or 'png').lower()}")


def _job(request: Request, job_id: str):
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return job
