"""The REST API (`fakescope serve`): FastAPI over one `Detector` shared through a micro-batcher.

Endpoints: `POST /v1/detect`, `POST /v1/detect/batch`, `POST /v1/explain`, `POST /v1/generate`,
`GET /v1/jobs/{id}`, `DELETE /v1/jobs/{id}`, `GET /v1/jobs/{id}/outputs/{n}`, `GET /v1/models`,
`GET /healthz`; the OpenAPI page is `/docs`. Every `/v1/*` call needs `Authorization: Bearer <token>`
when a token is configured. Answers: 413 for an upload over the size limit, 422 for a file that is
not a readable image or has too many pixels, 401 for a missing or wrong token, 503 with
`Retry-After` when the model's queue or the generation jobs are full (or the server is stopping), upload bodies or URL
fetches fill `max_body_memory_mb`, or an image URL's fetch may pass on a retry (502 when it will not), 403 for
`/v1/generate` and `/v1/jobs/*` when generation is off (`ServeConfig.generation`), and 403 for a non-loopback `Host` on
loopback or a POST or DELETE from another origin's page (`serve.origins`). CORS is off unless origins are configured.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware

from fakescope.detector import Detector
from fakescope.serve.batching import MicroBatcher, ServerBusy
from fakescope.serve.config import ServeConfig
from fakescope.serve.detect_routes import RENDER_WORKERS, add_detect_routes
from fakescope.serve.docs_page import add_docs_page
from fakescope.serve.gate import Gate, generates
from fakescope.serve.generation_routes import add_generation_routes
from fakescope.serve.headers import AnswerHeaders
from fakescope.serve.jobs import JobStore
from fakescope.serve.limits import MULTIPART_MAX_FILES, BodyBudget
from fakescope.serve.openapi import PNG_HEADERS, spec_builder
from fakescope.serve.request_image import ONE_FILE, SEND_FILE, URLFetcher

log = logging.getLogger(__name__)
CORS_METHODS = ["GET", "POST", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "X-OpenAI-Key"]
TOO_MANY_PARTS = f"more than {MULTIPART_MAX_FILES:,} file parts"


class _CORS(CORSMiddleware):
    """Starlette's CORS, but a refused preflight answers `{"detail": ...}` like every other error, not plain text."""

    def preflight_response(self, request_headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        refused = answer.body.decode().removeprefix("Disallowed CORS ")  # origin, method, headers: those refused
        headers = {k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")}
        return JSONResponse({"detail": f"CORS preflight refused: {refused} not allowed (origins: fakescope serve "
                                       f"--cors-origin; methods: {', '.join(CORS_METHODS)}; headers: "
                                       f"{', '.join(CORS_HEADERS)})"}, 400, headers)


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
        app.state.fetcher = URLFetcher()
        app.state.renderer = ThreadPoolExecutor(RENDER_WORKERS, thread_name_prefix="fakescope-render")
        try:
            yield
        finally:
            app.state.renderer.shutdown(wait=False, cancel_futures=True)
            app.state.fetcher.close()
            app.state.abandoned = app.state.jobs.close(config.shutdown_grace_s)  # jobs still running: `connections.run`
            app.state.batcher.close()

    app = FastAPI(
        title="fakescope",
        summary="Tell whether an image was made by a generative model, and show why.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # `add_docs_page` serves it offline
        redoc_url=None,  # it loaded ReDoc from a CDN (blank offline): `/docs` is the interactive page
        generate_unique_id_function=lambda route: route.name,  # operationIds as generated clients name methods: detect_batch
    )
    app.state.config = config
    app.state.bodies = BodyBudget(config.max_body_memory_bytes)  # `Gate` takes and gives back uploads' bytes
    # Starlette answers an Exception handler's 500 from outside every middleware (no CORS headers): caught in here instead
    app.add_middleware(ExceptionMiddleware, handlers={Exception: _internal_error})
    app.add_middleware(Gate, config=config)
    if config.cors_origins:  # outermost: preflights carry no token, and error answers need the CORS headers too
        app.add_middleware(_CORS, allow_origins=list(config.cors_origins), allow_methods=CORS_METHODS,
                           allow_headers=CORS_HEADERS, expose_headers=[*PNG_HEADERS, "Retry-After"], max_age=600)
    app.add_middleware(AnswerHeaders)  # outermost: every answer, the refusals of `Gate` and of CORS preflights too
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(ServerBusy)(_busy)
    add_docs_page(app)
    add_detect_routes(app, config)
    add_generation_routes(app, config)
    if not config.generation:  # neither served nor in the spec; `Gate` answers 403 with the reason
        app.router.routes = [route for route in app.router.routes if not generates(getattr(route, "path", ""))]
    app.openapi = spec_builder(app)
    return app


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Parameter errors as one line, like every other error (`{"detail": "format: Input should be ..."}`)."""
    problems = dict.fromkeys(map(_problem, exc.errors()))  # one line per field, not per part of a list
    return JSONResponse({"detail": "; ".join(problems)}, 422)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """FastAPI's answer; but the multipart parser's 'Too many files' (refused as the part comes) is the 413 every batch
    over a limit gets past `max_files`, and on a one-image route the 422 of several `file` parts (it said a batch's
    limit there, where the parser stopped at its own 1,000)."""
    if exc.status_code == 400 and str(exc.detail).startswith("Too many files."):
        limit = request.app.state.config.max_files
        exc = (HTTPException(413, f"too many files: more than {limit} (the limit is {limit} per request)")
               if request.url.path.endswith("/batch") else HTTPException(422, f"{TOO_MANY_PARTS}: {ONE_FILE}"))
    return await http_exception_handler(request, exc)


async def _busy(request: Request, exc: ServerBusy) -> JSONResponse:
    """A full queue: 503 with `Retry-After`, so clients back off instead of piling on."""
    return JSONResponse({"detail": str(exc)}, 503, {"Retry-After": str(exc.retry_after)})


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """An unexpected failure answers JSON like every other error; its traceback goes to the server's log only."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error (the server's log has the details)"}, 500)


def _problem(error: dict) -> str:
    """One validation error as `field: what is wrong`; a missing file part, or a text part where a file belongs, says
    how to send one."""
    if "Expected UploadFile" in error["msg"]:  # curl -F file=photo.jpg (no @) sends the name, not the file
        field = error["loc"][1]
        return f"{field}: a text field, not a file (send the file itself, e.g. curl -F {field}=@photo.jpg)"
    if error["type"] == "missing" and error["loc"][1:] == ("file",):  # /v1/generate: no part, or one misnamed
        return f"file: Field required ({SEND_FILE})"
    return f"{'.'.join(map(str, error['loc'][1:])) or error['loc'][0]}: {error['msg']}"
