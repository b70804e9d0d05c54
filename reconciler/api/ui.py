"""The dashboard: ``GET /`` and ``GET /ui/{file}``, plain files shipped in the package.

The files are ``reconciler/api/static/`` (HTML, CSS and ES modules: no build step, no CDN),
read once at start. Everything the page shows comes from the REST API with the user's token,
so the UI can do nothing the API would not allow that user. Every answer carries a strict
Content-Security-Policy (only this origin's scripts, styles and fetches; no inline script or
style, no framing), and the scripts put every name and description on the page as text.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from reconciler.api.problems import not_found
from reconciler.api.routes import Route

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@cache
def files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, content type) of every file of static/ (read once)."""
    out = {}
    for item in resources.files("reconciler.api").joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in TYPES:
            out[item.name] = (item.read_bytes(), TYPES[suffix])
    return out


def _answer(name: str) -> web.Response:
    found = files().get(name)
    if found is None:
        raise not_found(f"file {name!r}")
    body, content_type = found
    charset = "utf-8" if content_type.startswith("text/") else None
    return web.Response(body=body, content_type=content_type, charset=charset, headers=HEADERS)


async def index(request: web.Request) -> web.Response:
    return _answer("index.html")


async def asset(request: web.Request) -> web.Response:
    return _answer(request.match_info["file"])


ROUTES = (
    Route("GET", "/", index, "The dashboard (a web page)", response="html", public=True, errors=()),
    Route("GET", "/ui/{file}", asset, "A file of the dashboard", response="html", public=True, errors=(404,)),
)
