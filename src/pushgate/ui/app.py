"""The dashboard's application, mounted at ``/ui`` by ``api/gateway.py``, and the API docs
pages (``/docs``, ``/redoc``) served with the vendored assets.

A sub-application so that its session middleware runs on ``/ui`` requests only: nothing here
touches the push path. To add a page: write its handler in a module of ``ui/`` (see
``ui/pages.py``: ``page(request)`` gives the gateway and the signed-in viewer, or a redirect
to the sign-in form; ``render`` a template extending ``base.html``; check ``form_ok`` first in
every POST), add its ``Route`` to ``ROUTES`` there and its entry to ``NAV``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from pushgate.api.state import Gateway
from pushgate.ui import campaign_pages, ops_pages, pages
from pushgate.ui.session import ui_sessions

HERE = Path(__file__).parent
STATIC = "/ui/static"
VENDOR = f"{STATIC}/vendor"
# Two weeks, then sign in again.
SESSION_SECONDS = 14 * 24 * 3600


def create_ui(gateway: Gateway) -> Starlette:
    ui = Starlette(routes=[*pages.ROUTES, *campaign_pages.ROUTES, *ops_pages.ROUTES,
                           Mount("/static", StaticFiles(directory=HERE / "static"),
                                 name="static")],
                   middleware=[Middleware(ui_sessions, settings=gateway.settings,
                                          session_cookie="pushgate_ui", path="/ui",
                                          max_age=SESSION_SECONDS, same_site="strict",
                                          https_only=False)])
    ui.state.gateway = gateway
    return ui


def mount_ui(app: FastAPI, gateway: Gateway) -> None:
    """The dashboard at ``/ui/``, ``/`` sending there, and the docs pages on local assets."""
    app.mount("/ui", create_ui(gateway))

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
            # No badge asking the public validator about this document.
            swagger_ui_parameters={"validatorUrl": None})

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json",
                              title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{VENDOR}/redoc/redoc.standalone.js",
                              redoc_favicon_url=f"{VENDOR}/swagger-ui/favicon-32x32.png",
                              with_google_fonts=False)

    app.add_route("/", root, include_in_schema=False)
    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/docs/oauth2-redirect", oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
