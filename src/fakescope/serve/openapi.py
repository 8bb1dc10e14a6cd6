"""The OpenAPI spec's shared parts: the bearer scheme, upload bodies, answer entries and the 422 clean-up."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer

from fakescope.serve.origins import SAFE_METHODS
from fakescope.serve.schemas import Error, ImageURL, ImageURLs

BINARY = {"schema": {"type": "string", "format": "binary"}}
_URL_BODY = {"schema": ImageURL.model_json_schema(), "example": {"url": "https://example.com/photo.jpg"}}
RAW_IMAGE = {"requestBody": {"content": {"image/*": BINARY, "application/octet-stream": BINARY,  # as generated clients send bytes
                                         "application/json": _URL_BODY}}}
URL_BATCH = {"requestBody": {"content": {"application/json": {
    "schema": ImageURLs.model_json_schema(),
    "example": {"urls": ["https://example.com/a.jpg", "https://example.com/b.png"]}}}}}
PNG_HEADERS = {"X-Fakescope-Label": {"description": "ai, real or uncertain", "schema": {"type": "string"}},
               "X-Fakescope-Score": {"description": "calibrated P(ai)", "schema": {"type": "string"}},
               "X-Fakescope-Caveat": {"description": "the detection's caveat, only when set", "schema": {"type": "string"}}}
_bearer = HTTPBearer(auto_error=False, description="Set FAKESCOPE_API_TOKEN on the server to require it.")
SECURED = [Depends(_bearer)]  # declares the scheme in the OpenAPI spec; `Gate` checks the token


CONNECTION_CAP = ("busy: more connections and requests at once than the server's --max-connections (`Retry-After` says "
                  "when to try again)")
"""The 503 any route answers over the cap (`serve.connections`)."""
HOST_REFUSED = "host not allowed: on loopback, a `Host` that is not a loopback name or an `--allowed-host`"
CROSS_ORIGIN = "; or cross-origin: a page of another origin than the server's own or a `--cors-origin`"


def spec_builder(app: FastAPI):
    """`app.openapi` without FastAPI's own 422 entry, shaped as a list of errors: every route that can answer 422
    lists it (as `Error`), and a route that cannot (any job id is a valid string) is left without it. Every route
    lists the 403s `Gate` answers before routing (`serve.origins`), worded for its method."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = build()
            for method, operation in ((m, op) for ops in spec["paths"].values() for m, op in ops.items()):
                responses = operation["responses"]
                if "HTTPValidationError" in str(responses.get("422")):
                    del responses["422"]
                refused = HOST_REFUSED + ("" if method.upper() in SAFE_METHODS else CROSS_ORIGIN)
                responses["403"] = {"description": refused, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}}
                operation["responses"] = dict(sorted(responses.items()))
            for name in ("HTTPValidationError", "ValidationError"):
                spec["components"]["schemas"].pop(name, None)
        return app.openapi_schema

    return openapi


def answers(ok: type | dict, says: str, *codes: int, status: int = 200, secured: bool = True, **notes: str) -> dict:
    """OpenAPI entries for a route's answers: `ok` (a model or an entry) meaning `says`, then every error it can give.

    401 (when `secured`), 500 and the connection cap's 503 (`CONNECTION_CAP`, any route's, with `Retry-After`) are
    always listed; `notes` (`e422="..."`) word a code for this route (a 503 in `codes`: the cap's is added to it).
    """
    meaning = {400: "a malformed multipart body, or a body the client stopped sending",
               401: "missing or wrong bearer token", 404: "unknown job or output",
               408: "the request body stalled, or came slower than its pace (an upload: its size within the server's "
                    "--max-body-seconds)",
               409: "a cancelled job still finishing the requests it had sent", 413: "upload too large",
               422: "no image, not a readable image, too many pixels, or an invalid parameter",
               500: "an unexpected failure (the server's log has the details)",
               502: "the image URL could not be fetched: an HTTP error, a web page, too slow, or unreachable",
               503: "busy: the model's queue is full (`Retry-After` says when to try again)"}
    answers: dict = {status: {**(ok if isinstance(ok, dict) else {"model": ok}), "description": says}}
    for code in sorted({*codes, 500, 503, *([401] if secured else [])}):
        answers[code] = {"model": Error, "description": notes.get(f"e{code}", meaning[code])}
    if 401 in answers:
        answers[401]["headers"] = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
    busy = answers[503]
    busy["description"] = f"{busy['description']}; or {CONNECTION_CAP}" if 503 in codes else CONNECTION_CAP
    busy["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return answers
