"""The dashboard's aiohttp application: the page, the files of listed recordings, thumbnails.

| route | what |
| --- | --- |
| `GET /` | the recordings page (`recorder.dashboard.page`) |
| `GET /files/<key>` | a listed recording's media or manifest: the local file (with HTTP Range |
|  | support, so browsers can seek), or a redirect to a presigned S3 URL |
| `GET /thumbnails/<media key>` | a JPEG of one frame (`recorder.dashboard.thumbnails`) |
| `GET /dashboard.css`, `/favicon.svg` | the page's style sheet and icon |

Every response forbids scripts, frames and any source but the dashboard itself and the store's
presigned URLs (Content-Security-Policy), and sends `nosniff` and `no-referrer` (a presigned URL
is a credential for an hour: it should not leak through a Referer header).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from recorder.dashboard.page import (
    FAVICON_ROUTE,
    FAVICON_SVG,
    FILES_ROUTE,
    STYLESHEET,
    STYLESHEET_ROUTE,
    THUMBNAILS_ROUTE,
    render_index,
)
from recorder.dashboard.stores import RecordingStore
from recorder.dashboard.thumbnails import JPEG_CONTENT_TYPE, ThumbnailCache, ThumbnailError
from recorder.storage.keys import UnsafeKeyError, content_type_for

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("store", RecordingStore)
THUMBNAILS_KEY = web.AppKey("thumbnails", ThumbnailCache)
CSP_KEY = web.AppKey("csp", str)
THUMBNAIL_MAX_AGE_S = 24 * 3600  # a thumbnail URL's content changes only with its recording

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def content_security_policy(media_origins: tuple[str, ...]) -> str:
    media = " ".join(("'self'", *media_origins))
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"media-src {media}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


async def dashboard_app(store: RecordingStore, thumbnails: ThumbnailCache) -> web.Application:
    """The application over `store`, with thumbnails cached in `thumbnails`."""
    app = web.Application(middlewares=[_security_headers])
    app[STORE_KEY] = store
    app[THUMBNAILS_KEY] = thumbnails
    app[CSP_KEY] = content_security_policy(await store.media_origins())
    app.router.add_get("/", _index)
    app.router.add_get(STYLESHEET_ROUTE, _stylesheet)
    app.router.add_get(FAVICON_ROUTE, _favicon)
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_get(FILES_ROUTE + "{key:.+}", _file)
    app.router.add_get(THUMBNAILS_ROUTE + "{key:.+}", _thumbnail)
    return app


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error
    response.headers["Content-Security-Policy"] = request.app[CSP_KEY]
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def _index(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    entries = await store.entries()
    html = render_index(entries, where=store.description)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _stylesheet(_request: web.Request) -> web.Response:
    return web.Response(text=STYLESHEET, content_type="text/css")


async def _favicon(_request: web.Request) -> web.Response:
    return web.Response(text=FAVICON_SVG, content_type="image/svg+xml")


async def _file(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    try:
        source = await request.app[STORE_KEY].source(key)
    except UnsafeKeyError:
        raise web.HTTPNotFound(text="no such recording") from None
    if isinstance(source, Path):
        # aiohttp answers Range requests (206 with Content-Range) and conditional ones itself.
        return web.FileResponse(source, headers={"Content-Type": content_type_for(key)})
    raise web.HTTPFound(source)


async def _thumbnail(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    store = request.app[STORE_KEY]
    entry = await store.find(key)
    if entry is None or entry.media_key != key or not entry.has_video:
        raise web.HTTPNotFound(text="no thumbnail")
    try:
        jpeg = await request.app[THUMBNAILS_KEY].get(entry, lambda: store.source(key))
    except ThumbnailError as error:
        log.warning("no thumbnail for %s: %s", key, error)
        raise web.HTTPNotFound(text="no thumbnail") from None
    return web.Response(
        body=jpeg,
        content_type=JPEG_CONTENT_TYPE,
        headers={"Cache-Control": f"private, max-age={THUMBNAIL_MAX_AGE_S}"},
    )
