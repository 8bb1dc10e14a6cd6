"""The REST API's JSON answers as Pydantic models, for the OpenAPI spec (the routes answer plain dicts), and its JSON
request body (`ImageURL`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Answer):
    """`/v1/detect` and `/v1/explain` with `Content-Type: application/json`: the image at a URL, fetched by the server."""

    url: str = Field(description="An http(s) image URL at a public address (or an origin in FAKESCOPE_TRUSTED_ORIGINS).")


class ImageURLs(_Answer):
    """`/v1/detect/batch` with `Content-Type: application/json`: several image URLs, each fetched as `ImageURL`'s."""

    urls: list[str] = Field(description="http(s) image URLs; one that cannot be fetched gets a record with `error`.")


class Error(_Answer):
    """Every error answer."""

    detail: str


class EvidenceRecord(_Answer):
    """One piece of evidence; `decisive`, `data` and `error` appear only when set."""

    kind: str
    score: float | None = Field(description="How strongly it says ai (P(ai), 6 decimals), or null when it says nothing.")
    detail: str
    decisive: bool = Field(False, description="Provenance strong enough to decide the verdict on its own.")
    data: dict[str, Any] | None = None
    error: str | None = Field(None, description="Why this check failed (the image is still scored).")


class DetectionRecord(_Answer):
    """The `fakescope detect --format jsonl` record for one image."""

    path: str = Field(description="The uploaded file name (`upload` for a raw body), or the image URL without its user "
                                  "info and query.")
    score: float | None = Field(description="Calibrated P(ai), 6 decimals; null when the image could not be scored.")
    label: Literal["ai", "real", "uncertain"] | None
    threshold: float
    model: str
    evidence: list[EvidenceRecord]
    decided_by: str | None = Field(description="The evidence kind that set the verdict (`pixel`, `c2pa`, `watermark` or "
                                              "`metadata`), `conflict` where a watermark contradicts a trusted camera "
                                              "manifest (`uncertain`), `none` with neither a pixel score nor evidence; "
                                              "null when the image could not be scored.")
    reason: str | None
    caveat: str | None = Field(description="Set when a real or uncertain verdict rests on the pixel model "
                                                 "(no signed provenance backs it): it is not proof.")
    width: int | None
    height: int | None
    format: str | None
    error: str | None = Field(None, description="Present only when the image could not be scored.")
    error_kind: Literal["transient", "permanent"] | None = Field(
        None, description="Present only with `error`, as in `fakescope scan`'s rows: `transient` when the image URL's fetch "
                          "failed in a way that may pass (a timeout, a refused or dropped connection, HTTP 408, 425, 429 "
                          "or 5xx: send it again later), else `permanent` (a bad file, a 404: sending it again will not help).")


class BatchResults(_Answer):
    results: list[DetectionRecord] = Field(description="One record per `files` part or URL, in order.")


class Explanation(_Answer):
    """`/v1/explain?format=json`."""

    detection: DetectionRecord
    heatmap_png: str = Field(description="The heatmap (or overlay) PNG, base64.")
    overlay: bool


class JobOutputRecord(_Answer):
    index: int
    image: str = Field(description="Path of `GET /v1/jobs/{id}/outputs/{index}`.")
    detection: DetectionRecord


class Job(_Answer):
    """A generation job."""

    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    created: float = Field(description="Unix time.")
    finished: float | None = Field(description="Unix time it ended, or was cancelled.")
    error: str | None = Field(description="Why it failed or was cancelled, or for a done job why some of its n images "
                                          "are missing; it names no server path.")
    config: dict[str, Any]
    outputs: list[JobOutputRecord]


class BatchingStats(_Answer):
    items: int
    calls: int
    largest_batch: int
    busy_s: float


class BodyMemory(_Answer):
    held: int = Field(description="Bytes of request bodies, fetched image URLs and queued jobs' uploads held now.")
    limit: int = Field(description="The most held at once (`--max-body-memory-mb`, in bytes).")


class Health(_Answer):
    status: Literal["ok"]
    model: str
    queued: int
    batching: BatchingStats
    body_memory: BodyMemory | None = Field(None, description="Only to a caller with the token (`Authorization: Bearer`), or on a "
                                           "server without one.")


class LoadedModel(_Answer):
    name: str
    device: str
    threshold: float
    band: list[float]
    config: dict[str, Any]


class Models(_Answer):
    loaded: LoadedModel
    bundled: list[str]
    architectures: list[str]
