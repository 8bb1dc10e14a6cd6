"""The REST API (`fakescope serve`): FastAPI over one `Detector` shared through a micro-batcher.

Endpoints: `POST /v1/detect`, `POST /v1/detect/batch`, `POST /v1/explain`, `POST /v1/generate`,
`GET /v1/jobs/{id}`, `DELETE /v1/jobs/{id}`, `GET /v1/jobs/{id}/outputs/{n}`, `GET /v1/models`,
`GET /healthz`; the OpenAPI page is `/docs`. Every `/v1/*` call needs `Authorization: Bearer <token>`
when a token is configured. Answers: 413 for an upload over the size limit, 422 for a file that is
not a readable image or has too many pixels, 401 for a missing or wrong token, 503 with
`Retry-After` when the model's queue or the generation jobs are full, 403 for `/v1/generate` and `/v1/jobs/*` when
generation is off (`ServeConfig.generation`), and 403 for a non-loopback `Host` on loopback or a POST or DELETE
from another origin's page (`serve.origins`). CORS is off unless origins are configured.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import logging
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect

from fakescope.detection import Detection
from fakescope.detector import Detector
from fakescope.errors import ConfigError, ImageLoadError, StorageError
from fakescope.generate import OpenAIImagesConfig
from fakescope.generate.openai_images import MAX_SIZE_SIDE
from fakescope.generate.openai_models import DEFAULT_MODEL, check_served
from fakescope.io.image import decode_image, sniff_format
from fakescope.serve.batching import MicroBatcher, ServerBusy
from fakescope.serve.config import GENERATION_OFF, ServeConfig
from fakescope.serve.generation import openai_client
from fakescope.serve.jobs import JobBusy, JobStore
from fakescope.serve.limits import check_image
from fakescope.serve.origins import host_refusal, origin_refusal
from fakescope.serve.overlay import heatmap_image, heatmap_overlay, png_bytes
from fakescope.serve.schemas import BatchResults, DetectionRecord, Error, Explanation, Health, Job, Models

MULTIPART_OVERHEAD = 64 * 1024
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
NO_IMAGE = "no image: send multipart field 'file' or the raw image bytes as the body"
NO_KEY = "no OpenAI API key: send one in the X-OpenAI-Key header, or set OPENAI_API_KEY for the server"
BINARY = {"schema": {"type": "string", "format": "binary"}}
RAW_IMAGE = {"requestBody": {"content": {"image/*": BINARY}}}
log = logging.getLogger(__name__)
PNG_HEADERS = {"X-Fakescope-Label": {"description": "ai, real or uncertain", "schema": {"type": "string"}},
               "X-Fakescope-Score": {"description": "calibrated P(ai)", "schema": {"type": "string"}}}
_bearer = HTTPBearer(auto_error=False, description="Set FAKESCOPE_API_TOKEN on the server to require it.")


def create_app(config: ServeConfig | None = None, *, detector: Detector | None = None) -> FastAPI:
    """Build the FastAPI app; the detector is loaded at startup unless one is given.

    Example:
        >>> import uvicorn
        >>> uvicorn.run(create_app(ServeConfig(max_batch=16)), host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = detector or config.load_detector()
        app.state.detector = loaded
        app.state.batcher = MicroBatcher(loaded, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                         max_queue=config.max_queue).start()
        app.state.jobs = JobStore(config.jobs_dir, lambda data: app.state.batcher.submit(data).result(),
                                  max_jobs=config.max_jobs)
        try:
            yield
        finally:
            app.state.jobs.close()
            app.state.batcher.close()

    app = FastAPI(
        title="fakescope",
        summary="Tell whether an image was made by a generative model, and show why.",
        version="1",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operationIds as generated clients name methods: detect_batch
    )
    app.state.config = config
    # Starlette answers an Exception handler's 500 from outside every middleware (no CORS headers): caught in here instead
    app.add_middleware(ExceptionMiddleware, handlers={Exception: _internal_error})
    app.add_middleware(_Gate, config=config)
    if config.cors_origins:  # outermost: preflights carry no token, and error answers need the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-OpenAI-Key"],
                           expose_headers=[*PNG_HEADERS, "Retry-After"], max_age=600)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(ServerBusy)(_busy)
    _add_routes(app, config)
    if not config.generation:  # neither served nor in the spec; `_Gate` answers 403 with the reason
        app.router.routes = [route for route in app.router.routes if not _generates(getattr(route, "path", ""))]
    app.openapi = _spec_builder(app)
    return app


def _spec_builder(app: FastAPI):
    """`app.openapi` without FastAPI's own 422 entry, shaped as a list of errors: every route that can answer 422
    lists it (as `Error`), and a route that cannot (any job id is a valid string) is left without it."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = build()
            for operation in (op for ops in spec["paths"].values() for op in ops.values()):
                if "HTTPValidationError" in str(operation["responses"].get("422")):
                    del operation["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                spec["components"]["schemas"].pop(name, None)
        return app.openapi_schema

    return openapi


class _Gate:
    """ASGI middleware: refuse a request before its body is read, not after.

    FastAPI parses a multipart form (spooling its files to disk) before dependencies run, so everything is
    checked here: 403 for a non-loopback `Host` on loopback or a POST or DELETE from another origin's page
    (`serve.origins`), 401 for a `/v1/*` call without the token. A body over the request's limit answers 413,
    from `Content-Length` before reading or on the chunk of a chunked body that passes it; a body that sends
    nothing for `body_timeout_s` answers 408.
    """

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        refusal = (host_refusal(headers, scope.get("server"), self.config.allowed_hosts)
                   or origin_refusal(scope["method"], headers, self.config.cors_origins))
        if refusal:
            return await JSONResponse({"detail": refusal}, 403)(scope, receive, send)
        if scope["path"].startswith("/v1/") and not _authorised(headers.get("authorization", ""), self.config.token):
            answer = JSONResponse({"detail": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": "Bearer"})
            return await answer(scope, receive, send)
        if not self.config.generation and _generates(scope["path"]):
            return await JSONResponse({"detail": GENERATION_OFF}, 403)(scope, receive, send)
        files = self.config.max_files if scope["path"].endswith("/batch") else 1
        limit = files * self.config.max_upload_bytes + MULTIPART_OVERHEAD
        too_large = _too_large_message(self.config, files)
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
        read, ended = 0, False

        async def counted_receive():
            nonlocal read, ended
            if ended:  # the body is in: later messages (a disconnect) may wait as long as they like
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.config.body_timeout_s)
            except TimeoutError:
                raise HTTPException(408, f"request body timed out: no bytes for {self.config.body_timeout_s:g} s") from None
            read += len(message.get("body", b""))
            ended = not message.get("more_body", False)
            if read > limit:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted_receive, send)


def _generates(path: str) -> bool:
    """Whether `path` is a generation route's (`/v1/generate`, `/v1/jobs/...`), as the router matches it."""
    return path == "/v1/generate" or path.startswith("/v1/jobs/")


def _authorised(header: str, token: str | None) -> bool:
    """Whether an `Authorization` header carries the bearer token (compared in constant time); any does without one."""
    if token is None:
        return True
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _answers(ok: type | dict, says: str, *codes: int, status: int = 200, secured: bool = True, **notes: str) -> dict:
    """OpenAPI entries for a route's answers: `ok` (a model or an entry) meaning `says`, then every error it can give.

    401 (when `secured`) and 500 are always listed; `notes` (`e422="..."`) word a code for this route.
    """
    meaning = {400: "a malformed multipart body, or a body the client stopped sending",
               401: "missing or wrong bearer token", 404: "unknown job or output",
               408: "the request body stalled (no bytes for the server's body timeout)",
               409: "a cancelled job still finishing the requests it had sent", 413: "upload too large",
               422: "no image, not a readable image, too many pixels, or an invalid parameter",
               500: "an unexpected failure (the server's log has the details)",
               503: "busy: the model's queue is full (`Retry-After` says when to try again)"}
    answers: dict = {status: {**(ok if isinstance(ok, dict) else {"model": ok}), "description": says}}
    for code in sorted({*codes, 500, *([401] if secured else [])}):
        answers[code] = {"model": Error, "description": notes.get(f"e{code}", meaning[code])}
    if 401 in answers:
        answers[401]["headers"] = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
    if 503 in answers:
        answers[503]["headers"] = {"Retry-After": {"description": "seconds to wait (when busy)", "schema": {"type": "integer"}}}
    return answers


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Parameter errors as one line, like every other error (`{"detail": "format: Input should be ..."}`)."""
    problems = dict.fromkeys(map(_problem, exc.errors()))  # one line per field, not per part of a list
    return JSONResponse({"detail": "; ".join(problems)}, 422)


async def _busy(request: Request, exc: ServerBusy) -> JSONResponse:
    """A full queue: 503 with `Retry-After`, so clients back off instead of piling on."""
    return JSONResponse({"detail": str(exc)}, 503, {"Retry-After": str(exc.retry_after)})


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """An unexpected failure answers JSON like every other error; its traceback goes to the server's log only."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error (the server's log has the details)"}, 500)


def _problem(error: dict) -> str:
    """One validation error as `field: what is wrong`; a text part where a file belongs says how to send one."""
    if "Expected UploadFile" in error["msg"]:  # curl -F file=photo.jpg (no @) sends the name, not the file
        field = error["loc"][1]
        return f"{field}: a text field, not a file (send the file itself, e.g. curl -F {field}=@photo.jpg)"
    return f"{'.'.join(map(str, error['loc'][1:])) or error['loc'][0]}: {error['msg']}"


def _add_routes(app: FastAPI, config: ServeConfig) -> None:
    secured = [Depends(_bearer)]  # declares the scheme in the OpenAPI spec; `_Gate` checks the token

    @app.get("/healthz", tags=["service"], summary="Liveness and load", response_model=None,
             responses=_answers(Health, "the server is up", secured=False))
    def healthz(request: Request) -> dict:
        """Liveness and load: the model in use, requests queued and batching counters."""
        batcher: MicroBatcher = request.app.state.batcher
        return {"status": "ok", "model": request.app.state.detector.name, "queued": batcher.pending,
                "batching": batcher.stats.to_dict()}

    @app.get("/v1/models", tags=["service"], summary="The model in use and those available", dependencies=secured,
             response_model=None, responses=_answers(Models, "the loaded model, the bundled models and the architectures"))
    def models(request: Request) -> dict:
        """The model this server runs (its full config) and the bundled models and architectures."""
        from fakescope.models import bundled_models, list_models

        loaded = request.app.state.detector
        return {"loaded": {"name": loaded.name, "device": str(loaded.device), "threshold": loaded.threshold,
                           "band": list(loaded.band), "config": loaded.model.config.to_dict()},
                "bundled": bundled_models(), "architectures": list_models()}

    @app.post("/v1/detect", tags=["detect"], summary="Score one image", dependencies=secured, response_model=None,
              responses=_answers(DetectionRecord, "the image's record", 400, 408, 413, 422, 503), openapi_extra=RAW_IMAGE)
    async def detect(
        request: Request,
        file: Annotated[UploadFile | None, File(description="The image (multipart); or send the raw bytes as the body.")] = None,
    ) -> dict:
        """Score one image: the same JSON record as `fakescope detect --format jsonl`."""
        name, data = await _one_upload(request, file, config)
        detection = await _score(request, name, data, heatmap=False)
        return detection.to_dict()

    @app.post("/v1/detect/batch", tags=["detect"], summary="Score several images", dependencies=secured, response_model=None,
              responses=_answers(BatchResults, "one record per file, in order; a bad image's record has `error`",
                                 400, 408, 413, 422, 503,
                                 e413="upload too large, or more files than the server takes per request",
                                 e422="no `files` part, or a text part where a file belongs",
                                 e503="busy: the model's queue has no room for every file (`Retry-After` says when)"))
    async def detect_batch(
        request: Request,
        files: Annotated[list[UploadFile], File(description="Several images, each as a `files` part.")],
    ) -> dict:
        """Score several images; a bad file gives a record with `error` and the others are still scored."""
        if len(files) > config.max_files:
            raise HTTPException(413, f"too many files: {len(files)} (the limit is {config.max_files} per request)")
        uploads = [(f.filename or f"file{i}", await _read_upload(f, config)) for i, f in enumerate(files)]
        batcher: MicroBatcher = request.app.state.batcher
        if batcher.room() < len(uploads):  # all or none: a half-scored batch helps nobody
            raise ServerBusy(f"the server is busy: {batcher.pending} images are waiting for the model "
                             f"(the limit is {config.max_queue}); try again shortly", batcher.retry_after())
        detections = await asyncio.gather(*(_score(request, n, d, heatmap=False, strict=False) for n, d in uploads))
        return {"results": [d.to_dict() for d in detections]}

    heatmap = {"model": Explanation, "content": {"image/png": BINARY}, "headers": PNG_HEADERS}

    @app.post("/v1/explain", tags=["detect"], summary="Heatmap of where the model sees AI traces", dependencies=secured,
              openapi_extra=RAW_IMAGE, responses=_answers(heatmap, "the heatmap PNG (`format=png`), or the detection "
                                                          "with it (`format=json`)", 400, 408, 413, 422, 503))
    async def explain(
        request: Request,
        file: Annotated[UploadFile | None, File(description="The image (multipart); or send the raw bytes as the body.")] = None,
        format: Annotated[Literal["png", "json"], Query(description="`png`: the heatmap image; `json`: detection + base64 PNG.")] = "png",
        overlay: Annotated[bool, Query(description="Colour-map the heatmap over the image instead of plain grey.")] = False,
    ) -> Response:
        """Where the model sees AI traces: per-tile P(ai) as a PNG (255 = 1.0) at the image's size."""
        name, data = await _one_upload(request, file, config)
        detection = await _score(request, name, data, heatmap=True)
        encoded = await asyncio.to_thread(_render_heatmap, data, detection.heatmap, overlay)  # keeps the event loop free
        if format == "json":
            return JSONResponse({"detection": detection.to_dict(), "heatmap_png": base64.b64encode(encoded).decode(),
                                 "overlay": overlay})
        return Response(encoded, media_type="image/png",
                        headers={"X-Fakescope-Label": str(detection.verdict), "X-Fakescope-Score": f"{detection.probability:.6f}"})

    @app.post("/v1/generate", tags=["generate"], summary="Start a generation job", dependencies=secured, status_code=202,
              response_model=None,
              responses=_answers(Job, "the job, queued or already running", 400, 408, 413, 422, 503, status=202,
                                 e422="no image, not a readable image, too many pixels, no OpenAI key, or a mode, model, "
                                      "size, prompt, n or input_fidelity the model does not take",
                                 e503="busy: the generation jobs are full (`Retry-After` says when to try again), or the "
                                      "server cannot write its jobs folder"))
    async def generate(
        request: Request,
        file: Annotated[UploadFile, File(description="The real image to start from.")],
        mode: Annotated[Literal["variation", "edit"], Form()] = "variation",
        model: Annotated[str, Form(description="A GPT image model (variation: an edit of the whole image by a fixed "
                                               "prompt); dall-e-2 only where OPENAI_BASE_URL serves it.")] = DEFAULT_MODEL,
        size: Annotated[str, Form(description=f"A size the model makes (GPT image models: 1024x1024, 1536x1024, "
                                              f"1024x1536, auto); WIDTHxHEIGHT, sides up to {MAX_SIZE_SIDE}.")] = "1024x1024",
        prompt: Annotated[str | None, Form(description="Required for edit; for variation it replaces the built-in prompt.")] = None,
        n: Annotated[int, Form(ge=1, le=4)] = 1,
        input_fidelity: Annotated[Literal["high", "low"] | None, Form(description=(
            "high or low: how closely an edit (a GPT image model's variation included) keeps the photo's style and "
            "features, faces above all; default: the model's (low). gpt-image-1.5 takes both, gpt-image-1-mini low, gpt-image-2 and dall-e-2 neither."))] = None,
        openai_key: Annotated[str | None, Header(alias="X-OpenAI-Key", description="Default: the server's OPENAI_API_KEY.")] = None,
    ) -> dict:
        """Start a job that makes ai images from the upload with the OpenAI Images API, then scores them."""
        await _only_file(request)
        try:  # before the upload is read: a size the API cannot make is refused without work
            job_config = OpenAIImagesConfig(mode=mode, model=model, size=size, prompt=prompt, n=n,
                                             input_fidelity=input_fidelity)
            client = openai_client(openai_key, missing=NO_KEY)
            check_served(job_config.model, client.base_url)  # a retired model on api.openai.com
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        data = await _read_upload(file, config)
        _check_image(data, config)
        try:
            job = request.app.state.jobs.submit(data, job_config, client, filename=file.filename or "upload")
        except StorageError as exc:  # the folder is the operator's to fix; its path stays out of the answer
            log.warning("generation refused: %s", exc)
            raise HTTPException(503, "generation is unavailable: the server cannot write its jobs folder") from None
        return job.to_dict()

    @app.get("/v1/jobs/{job_id}", tags=["generate"], summary="A generation job's state and outputs", dependencies=secured,
             response_model=None, responses=_answers(Job, "the job", 404, e404="unknown job"))
    def job_state(request: Request, job_id: str) -> dict:
        """A generation job's state (`queued`, `running`, `done`, `failed`) and, when done, its outputs."""
        return _job(request, job_id).to_dict()

    @app.delete("/v1/jobs/{job_id}", tags=["generate"], summary="Cancel or delete a generation job", dependencies=secured,
                response_model=None,
                responses=_answers(Job, "the cancelled job, or the last record of the deleted one", 404, 409, 503,
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
            raise HTTPException(404, f"no job {job_id}")
        return job.to_dict()

    @app.get("/v1/jobs/{job_id}/outputs/{index}", tags=["generate"], summary="One generated image", dependencies=secured,
             response_class=Response,
             responses=_answers({"content": {"image/*": BINARY}}, "the image, as the Images API made it", 404, 422,
                                e404="unknown job, no such output, or its file is gone", e422="index: not a whole number"))
    def job_output(request: Request, job_id: str, index: int) -> Response:
        """One generated image, as the API returned it."""
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
        raise HTTPException(404, f"no job {job_id}")
    return job


async def _one_upload(request: Request, file: UploadFile | None, config: ServeConfig) -> tuple[str, bytes]:
    """The multipart `file` part, or else the raw request body."""
    if file is not None:
        await _only_file(request)
        return file.filename or "upload", await _read_upload(file, config)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in FORM_TYPES:  # FastAPI has read the body as a form, and it has no `file` part
        raise HTTPException(422, f"{NO_IMAGE} ({media} needs a 'file' part; raw bytes need an image Content-Type)")
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > config.max_upload_bytes:
                raise HTTPException(413, _too_large_message(config))
    except ClientDisconnect:  # as FastAPI answers for a form: no traceback in the log for a client that left
        raise HTTPException(400, "the client closed the connection before the body ended") from None
    if not data:
        raise HTTPException(422, NO_IMAGE)
    return "upload", bytes(data)


async def _only_file(request: Request) -> None:
    """Refuse a form with several `file` parts: FastAPI would hand over the last one alone."""
    count = len((await request.form()).getlist("file"))  # the form FastAPI parsed, not read again
    if count > 1:
        raise HTTPException(422, f"{count} 'file' parts: send one image (/v1/detect/batch takes several, as 'files' parts)")


async def _read_upload(file: UploadFile, config: ServeConfig) -> bytes:
    data = await file.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise HTTPException(413, _too_large_message(config))
    return data


def _too_large_message(config: ServeConfig, files: int = 1) -> str:
    """The 413 line; a batch's says both limits, as its body may pass their product with images under the first."""
    batch = f", {files} images per request" if files > 1 else ""
    return f"upload too large: the limit is {config.max_upload_mb:g} MB per image{batch}"


def _check_image(data: bytes, config: ServeConfig) -> None:
    """`limits.check_image` as a 422."""
    try:
        check_image(data, config.max_pixels)
    except ImageLoadError as exc:
        raise HTTPException(422, str(exc)) from None


def _render_heatmap(data: bytes, heatmap: np.ndarray, overlay: bool) -> bytes:
    """The heatmap as PNG bytes at the image's size, plain grey or colour-mapped over the image.

    The image is decoded as the detector saw it (EXIF orientation applied, alpha on white, 16-bit scaled).
    """
    image = decode_image(data, keep_bytes=False).image
    picture = heatmap_overlay(image, heatmap) if overlay else heatmap_image(heatmap).resize(image.size)
    return png_bytes(picture)


async def _score(request: Request, name: str, data: bytes, *, heatmap: bool, strict: bool = True) -> Detection:
    """Check limits, queue the bytes for the micro-batcher and name the result after the upload.

    `strict` answers 422 for an unreadable image; otherwise the record carries the error.
    """
    detector: Detector = request.app.state.detector
    try:
        _check_image(data, request.app.state.config)
    except HTTPException as exc:
        if strict:
            raise
        return Detection.failed(name, exc.detail, detector.name, detector.threshold)
    detection = await asyncio.wrap_future(request.app.state.batcher.submit(data, heatmap=heatmap, wait=False))
    if detection.error and strict:
        raise HTTPException(422, detection.error)
    return dataclasses.replace(detection, source=name)

