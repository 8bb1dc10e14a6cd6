"""The detection routes: `/healthz`, `/v1/models`, `/v1/detect`, `/v1/detect/batch` and `/v1/explain`."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from fakescope.detection import Detection
from fakescope.detector import Detector
from fakescope.io.fetch import url_name
from fakescope.io.image import decode_image
from fakescope.serve.batching import MicroBatcher
from fakescope.serve.config import ServeConfig
from fakescope.serve.gate import authorised
from fakescope.serve.limits import BodyBudget
from fakescope.serve.openapi import BINARY, PNG_HEADERS, RAW_IMAGE, SECURED, URL_BATCH, answers
from fakescope.serve.overlay import heatmap_image, heatmap_overlay, image_bytes
from fakescope.serve.request_image import (
    BATCH_FETCHES,
    batch_urls,
    check_image_422,
    fetch_image,
    one_upload,
    read_upload,
    too_large_message,
)
from fakescope.serve.schemas import BatchResults, DetectionRecord, Explanation, Health, Models

ONE_IMAGE = 'The image (multipart); or send the raw bytes, or JSON `{"url": "https://..."}`, as the body.'
URL_422 = ("no image, not a readable image, too many pixels, an invalid parameter, a JSON body that is not "
           "`{\"url\": ...}`, or a URL refused unfetched (not http(s), or a non-public address)")
URL_413 = "upload too large, or the file at the image URL over the upload limit"
URL_502 = "the image URL could not be fetched, and trying again will not help: an HTTP 4xx, a web page, no such host"
RENDER_WORKERS = 2
"""The most heatmaps `/v1/explain` renders at once: each decodes its image again and builds its overlay (about 650 MB
for a 50 Mpx image), so a few small requests of large plain images no longer take the default executor's threads
(one per core, plus 4) and their memory."""
URL_503 = ("busy: the model's queue is full or upload bodies fill the server's memory for them, or the image URL's fetch "
           "failed in a way that may pass (a timeout, a refused or dropped connection, HTTP 408, 425, 429 or 5xx); "
           "`Retry-After` says when to try again")


def add_detect_routes(app: FastAPI, config: ServeConfig) -> None:
    """Add the detection routes."""

    @app.get("/healthz", tags=["service"], summary="Liveness and load", response_model=None,
             responses=answers(Health, "the server is up", secured=False))
    def healthz(request: Request) -> dict:
        """Liveness and load: the model in use, requests queued, batching counters and, to a caller with the token, the
        request-body memory held."""
        batcher: MicroBatcher = request.app.state.batcher
        bodies: BodyBudget = request.app.state.bodies
        health = {"status": "ok", "model": request.app.state.detector.name, "queued": batcher.pending,
                  "batching": batcher.stats.to_dict()}
        if authorised(request.headers.get("authorization", ""), config.token):  # byte for byte, the size of others' uploads
            health["body_memory"] = {"held": bodies.held, "limit": bodies.limit}
        return health

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)  # uptime monitors send HEAD (was 405)

    @app.get("/v1/models", tags=["service"], summary="The model in use and those available", dependencies=SECURED,
             response_model=None, responses=answers(Models, "the loaded model, the bundled models and the architectures"))
    def models(request: Request) -> dict:
        """The model this server runs (its full config) and the bundled models and architectures."""
        from fakescope.models import bundled_models, list_models

        loaded = request.app.state.detector
        return {"loaded": {"name": loaded.name, "device": str(loaded.device), "threshold": loaded.threshold,
                           "band": list(loaded.band), "config": loaded.model.config.to_dict()},
                "bundled": bundled_models(), "architectures": list_models()}

    @app.post("/v1/detect", tags=["detect"], summary="Score one image", dependencies=SECURED, response_model=None,
              responses=answers(DetectionRecord, "the image's record", 400, 408, 413, 422, 502, 503, e413=URL_413,
                                e422=URL_422, e502=URL_502, e503=URL_503),
              openapi_extra=RAW_IMAGE)
    async def detect(
        request: Request,
        file: Annotated[UploadFile | None, File(description=ONE_IMAGE)] = None,
    ) -> dict:
        """Score one image (a `file` part, the raw bytes, or JSON `{"url": ...}`): the same JSON record as `fakescope
        detect --format jsonl`."""
        name, data = await one_upload(request, file, config)
        detection = await _score(request, name, data, heatmap=False)
        return detection.to_dict()

    # the parser refuses a part past max_files as it comes: parts under 1 MB stay in memory, so 1000 of them (its default
    # limit) were held (1 GB within the body limit) before the route could count them
    @app.post("/v1/detect/batch", tags=["detect"], summary="Score several images", dependencies=SECURED, response_model=None,
              openapi_extra=URL_BATCH, form_limits={"max_files": config.max_files, "max_fields": config.max_files},
              responses=answers(BatchResults, "one record per file or URL, in order; a bad image's record, or a URL's "
                                "that could not be fetched, or a file over the upload limit, has `error` and "
                                "`error_kind` (`transient`: a fetch that may pass, worth sending again)", 400, 408,
                                413, 422, 503, e413="a body over the batch's limit (max files x upload limit), or more "
                                                    "files or URLs than the server takes per request",
                                e422="no `files` part, a text part where a file belongs, or a JSON body that is not "
                                     "`{\"urls\": [...]}`",
                                e503="busy: the model's queue has no room for every file, or upload bodies fill the "
                                     "server's memory for them (`Retry-After` says when)"))
    async def detect_batch(
        request: Request,
        files: Annotated[list[UploadFile] | None, File(description="Several images, each as a `files` part; or JSON "
                                                                    '`{"urls": [...]}` as the body.')] = None,
    ) -> dict:
        """Score several images; a bad file (one over the upload limit too), or a URL that could not be fetched, gives a
        record with `error` and the others are still scored. Its `error_kind` is `transient` for a fetch that may pass
        (what `/v1/detect` answers 503 with `Retry-After`), else `permanent`, as `fakescope scan` marks its rows."""
        batcher: MicroBatcher = request.app.state.batcher
        if files is None:
            urls = await batch_urls(request, config)
            batcher.check_room(len(urls))  # before fetching: a full server downloads nothing
            share = asyncio.Semaphore(BATCH_FETCHES)  # 64 slow URLs held every fetch worker for minutes
            scoring = [_score_url(request, url, share) for url in urls]
        else:
            batcher.check_room(len(files))
            scoring = [_score_file(request, f.filename or f"file{i}", f) for i, f in enumerate(files)]
        return {"results": [d.to_dict() for d in await _all(scoring)]}

    heatmap = {"model": Explanation, "content": {"image/png": BINARY}, "headers": PNG_HEADERS}

    @app.post("/v1/explain", tags=["detect"], summary="Heatmap of where the model sees AI traces", dependencies=SECURED,
              openapi_extra=RAW_IMAGE, responses=answers(heatmap, "the heatmap PNG (`format=png`), or the detection "
                                                         "with it (`format=json`)", 400, 408, 413, 422, 502, 503,
                                                         e413=URL_413, e422=URL_422, e502=URL_502,
                                                         e503=URL_503))
    async def explain(
        request: Request,
        file: Annotated[UploadFile | None, File(description=ONE_IMAGE)] = None,
        format: Annotated[Literal["png", "json"], Query(description="`png`: the heatmap image; `json`: detection + base64 "
                                                        "PNG.")] = "png",
        overlay: Annotated[bool, Query(description="Colour-map the heatmap over the image instead of plain grey.")] = False,
    ) -> Response:
        """Where the model sees AI traces: per-tile P(ai) as a PNG (255 = 1.0) at the image's size."""
        name, data = await one_upload(request, file, config)
        detection = await _score(request, name, data, heatmap=True)
        renderer: ThreadPoolExecutor = request.app.state.renderer  # off the event loop, `RENDER_WORKERS` at once
        encoded = await asyncio.get_running_loop().run_in_executor(renderer, _render_heatmap, data, detection.heatmap,
                                                                   overlay)
        if format == "json":
            return JSONResponse({"detection": detection.to_dict(), "heatmap_png": base64.b64encode(encoded).decode(),
                                 "overlay": overlay})
        headers = {"X-Fakescope-Label": str(detection.verdict), "X-Fakescope-Score": f"{detection.probability:.6f}"}
        return Response(encoded, media_type="image/png",
                        headers=headers | ({"X-Fakescope-Caveat": detection.caveat} if detection.caveat else {}))


def _render_heatmap(data: bytes, heatmap: np.ndarray, overlay: bool) -> bytes:
    """The heatmap as PNG bytes at the image's size, plain grey or colour-mapped over the image.

    The image is decoded as the detector saw it (EXIF orientation applied, alpha on white, 16-bit cut to 8).
    """
    image = decode_image(data, keep_bytes=False).image
    picture = heatmap_overlay(image, heatmap) if overlay else heatmap_image(heatmap).resize(image.size)
    return image_bytes(picture)


async def _score(request: Request, name: str, data: bytes, *, heatmap: bool, strict: bool = True) -> Detection:
    """Check limits, queue the bytes for the micro-batcher and name the result after the upload.

    `strict` answers 422 for an unreadable image; otherwise the record carries the error.
    """
    try:
        check_image_422(data, request.app.state.config)
    except HTTPException as exc:
        if strict:
            raise
        return _failed(request, name, exc.detail)
    detection = await asyncio.wrap_future(request.app.state.batcher.submit(data, heatmap=heatmap, wait=False))
    if detection.error and strict:
        raise HTTPException(422, detection.error)
    return dataclasses.replace(detection, source=name)


async def _all(scoring: list) -> list[Detection]:
    """The records of a batch's `scoring`, run at once; the first to fail (a full model queue's `ServerBusy`) stops the
    others and is raised: left running, they fetched for nobody, and a fetch that ended after the answer kept its bytes
    of the body budget for good."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one) for one in scoring]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _score_file(request: Request, name: str, file: UploadFile) -> Detection:
    """A batch file's record: its image scored, or the 413 line for a file over the upload limit. The parser has
    spooled that one to disk (past 1 MB) and counted its bytes: it is never read into memory."""
    config: ServeConfig = request.app.state.config
    if file.size is not None and file.size > config.max_upload_bytes:
        return _failed(request, name, too_large_message(config))
    return await _score(request, name, await read_upload(file, config), heatmap=False, strict=False)


async def _score_url(request: Request, url: str, share: asyncio.Semaphore) -> Detection:
    """A batch URL's record: its image scored, or why it was not fetched; fetched once its batch's `share` lets it."""
    try:
        async with share:
            name, data = await fetch_image(request, url, request.app.state.config)
    except HTTPException as exc:  # a 503 (TransientFetchError) may pass
        return _failed(request, url_name(url), exc.detail, transient=exc.status_code == 503)
    return await _score(request, name, data, heatmap=False, strict=False)


def _failed(request: Request, name: str, error: str, *, transient: bool = False) -> Detection:
    detector: Detector = request.app.state.detector
    return Detection.failed(name, error, detector.name, detector.threshold, transient=transient)
