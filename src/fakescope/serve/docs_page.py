"""The interactive API page (`/docs`, Swagger UI) served from the `swagger-ui-bundle` package, so it works offline."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS, ASSETS, OAUTH2_REDIRECT = "/docs", "/docs/assets", "/docs/oauth2-redirect"


def add_docs_page(app: FastAPI) -> None:
    """Serve `/docs` with Swagger UI's files from `/docs/assets` (that folder only) instead of a CDN."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs_assets")

    @app.get(DOCS, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=OAUTH2_REDIRECT,
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
