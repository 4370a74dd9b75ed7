"""The web playground: `GET /` and its static assets under `GET /playground/<name>`.

The page, its script and the CodeMirror 6 bundle (`static/editor.js`, built from npm packages
by `build.mjs` and committed) ship inside the package: the service serves them itself, with no
CDN, so the playground works offline. Programs run in `runner.html`, a sandboxed frame, or
on the server ("Run on server": `POST /run`, same origin, so the CSP below allows it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Final

import attrs
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound

# The page may talk only to this service; CodeMirror sets styles from script, hence
# 'unsafe-inline' for styles (never for scripts).
PAGE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The runner evaluates a compiled program: sandboxed even when opened directly (an opaque
# origin), scripts only from here plus the program itself, no network, no framing elsewhere.
# `connect-src data:` lets a -sSINGLE_FILE build fetch the wasm embedded in its own app.js
# (a data: URL carries its bytes: nothing leaves the page).
RUNNER_CSP: Final = (
    "sandbox allow-scripts; default-src 'none'; connect-src data:; "
    "script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval'; style-src 'self'; "
    "frame-ancestors 'self'"
)

ASSET_TYPES: Final[Mapping[str, str]] = {
    "editor.js": "text/javascript",
    "playground.js": "text/javascript",
    "playground.css": "text/css",
    "runner.html": "text/html",
    "runner.css": "text/css",
    "runner.js": "text/javascript",
}
ASSET_CSP: Final[Mapping[str, str]] = {"runner.html": RUNNER_CSP}


@attrs.frozen
class Asset:
    body: bytes
    mimetype: str
    etag: str

    @classmethod
    def load(cls, name: str, mimetype: str) -> Asset:
        body = resources.files(__name__).joinpath("static", name).read_bytes()
        return cls(body, mimetype, hashlib.sha256(body).hexdigest()[:32])


def load_assets() -> dict[str, Asset]:
    return {name: Asset.load(name, mimetype) for name, mimetype in ASSET_TYPES.items()}


def _serve(asset: Asset, csp: str | None) -> Response:
    if request.if_none_match.contains(asset.etag):
        response = Response(b"", status=304)
    else:
        response = Response(asset.body, content_type=asset.mimetype + "; charset=utf-8")
    response.set_etag(asset.etag)
    # Revalidate every time: a new release must not be mixed with a cached old script.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if csp:
        response.headers["Content-Security-Policy"] = csp
    return response


def register(app: QuartTrio) -> None:
    """Add `GET /` (the page) and `GET /playground/<name>` (its assets) to `app`."""
    assets = load_assets()
    page = Asset.load("index.html", "text/html")

    @app.get("/")
    async def playground_page() -> Response:
        response = _serve(page, PAGE_CSP)
        response.headers["X-Frame-Options"] = "DENY"
        return response

    @app.get("/playground/<name>")
    async def playground_asset(name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound  # the app's JSON 404
        return _serve(asset, ASSET_CSP.get(name))
