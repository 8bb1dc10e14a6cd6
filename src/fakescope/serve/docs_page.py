"""The interactive API page (`/docs`, Swagger UI) served from the `swagger-ui-bundle` package, so it works offline."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

DOCS, ASSETS, OAUTH2_REDIRECT = "/docs", "/docs/assets", "/docs/oauth2-redirect"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
"""The bundle's files `/docs` loads, the only ones served: its stock `index.html` fetched the petstore spec from the
internet, and a name never becomes a path unless it is one of these."""
PAGE_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff"}
"""On the pages and their files: no other site may frame the page (its calls pass the origin check as the server's
own) and no file is read as another type than it is sent as."""


def add_docs_page(app: FastAPI) -> None:
    """Serve `/docs` with Swagger UI's `ASSET_FILES` from `/docs/assets` instead of a CDN."""

    @app.get(DOCS, include_in_schema=False)
    def docs() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=OAUTH2_REDIRECT,
                                   swagger_js_url=f"{ASSETS}/{ASSET_FILES[0]}", swagger_css_url=f"{ASSETS}/{ASSET_FILES[1]}",
                                   swagger_favicon_url=f"{ASSETS}/{ASSET_FILES[2]}")
        page.headers.update(PAGE_HEADERS)
        return page

    @app.get(f"{ASSETS}/{{name}}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSET_FILES:
            raise HTTPException(404, "Not Found")
        return FileResponse(Path(swagger_ui_path) / name, headers={**PAGE_HEADERS, "Cache-Control": "public, max-age=86400"})

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        page = get_swagger_ui_oauth2_redirect_html()
        page.headers.update(PAGE_HEADERS)
        return page
