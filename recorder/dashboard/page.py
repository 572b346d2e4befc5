"""The recordings page as HTML: a pure function of the entries, every value escaped.

No script runs on the page (the server's Content-Security-Policy forbids any): the list is
plain HTML, the player is the browser's own `<video>`/`<audio>` element, and the thumbnail is
both an image in the card and the video's poster. Values from manifests are untrusted (names
come from the room) and go through `html.escape` or, in URLs, `urllib.parse.quote`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from html import escape
from urllib.parse import quote

from recorder.dashboard.entries import RecordingEntry

FILES_ROUTE = "/files/"
THUMBNAILS_ROUTE = "/thumbnails/"
STYLESHEET_ROUTE = "/dashboard.css"
FAVICON_ROUTE = "/favicon.svg"  # also answers the browser's own /favicon.ico request
UNKNOWN = "–"

STYLESHEET = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d1f23; }
header { padding: 16px 24px; background: #1d1f23; color: #fff; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #b8bcc4; }
main { padding: 16px 24px; display: grid; gap: 16px; }
.recording { background: #fff; border-radius: 8px; padding: 16px; display: grid;
  grid-template-columns: 320px 1fr; gap: 16px; box-shadow: 0 1px 2px rgba(0,0,0,.1); }
.recording h2 { margin: 0 0 8px; font-size: 16px; word-break: break-all; }
.thumbnail { width: 320px; border-radius: 4px; background: #000; }
.audio-only { width: 320px; height: 180px; border-radius: 4px; background: #2b2f36; color: #fff;
  display: flex; align-items: center; justify-content: center; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
dt { color: #62666e; }
dd { margin: 0; }
.participants { margin: 0; padding: 0; list-style: none; }
.participants li { display: inline-block; margin: 0 6px 4px 0; padding: 1px 8px;
  background: #eef0f3; border-radius: 10px; }
.player { grid-column: 1 / -1; width: 100%; max-height: 480px; background: #000; }
.badge { margin-left: 8px; padding: 1px 6px; border-radius: 4px; background: #f6d365;
  font-size: 12px; }
.empty { color: #62666e; }
"""

FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<circle cx="8" cy="8" r="6" fill="#d93025"/></svg>'
)


def render_index(entries: Sequence[RecordingEntry], *, where: str) -> str:
    """The whole page: a card per recording, newest first (the order given)."""
    count = len(entries)
    cards = "\n".join(_card(entry) for entry in entries) or (
        '<p class="empty">No recordings yet.</p>'
    )
    noun = "recording" if count == 1 else "recordings"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Recordings</title>
<link rel="stylesheet" href="{STYLESHEET_ROUTE}">
<link rel="icon" href="{FAVICON_ROUTE}" type="image/svg+xml">
</head>
<body>
<header><h1>Recordings</h1><p id="summary">{count} {noun} in {escape(where)}</p></header>
<main>
{cards}
</main>
</body>
</html>
"""


def file_url(key: str) -> str:
    """The dashboard's URL of a listed recording's file (media or manifest)."""
    return FILES_ROUTE + quote(key, safe="/")


def thumbnail_url(entry: RecordingEntry) -> str:
    return THUMBNAILS_ROUTE + quote(entry.media_key, safe="/")


def _card(entry: RecordingEntry) -> str:
    media = escape(file_url(entry.media_key))
    content_type = escape(entry.content_type)
    if entry.has_video:
        thumbnail = escape(thumbnail_url(entry))
        preview = f'<img class="thumbnail" src="{thumbnail}" alt="" loading="lazy">'
        player = (
            f'<video class="player" controls preload="none" poster="{thumbnail}">'
            f'<source src="{media}" type="{content_type}"></video>'
        )
    else:
        preview = '<div class="audio-only">audio only</div>'
        player = (
            f'<audio class="player" controls preload="none">'
            f'<source src="{media}" type="{content_type}"></audio>'
        )
    badge = '<span class="badge">recovered</span>' if entry.recovered else ""
    participants = "".join(
        f'<li title="present {escape(format_duration(p.present_s))}">{escape(p.name)}</li>'
        for p in entry.participants
    )
    rows = [
        ("Date", "date", format_date(entry)),
        ("Duration", "duration", format_duration(entry.duration_s)),
        ("Size", "size", format_size(entry.size_bytes)),
        ("Layout", "layout", format_layout(entry)),
        ("Stopped by", "stop-reason", entry.stop_reason or UNKNOWN),
    ]
    details = "".join(
        f'<dt>{label}</dt><dd class="{css}">{escape(value)}</dd>' for label, css, value in rows
    )
    manifest = escape(file_url(entry.manifest_key))
    return f"""<article class="recording" data-key="{escape(entry.media_key)}">
{preview}
<div>
<h2 class="recording-id">{escape(entry.recording_id)}{badge}</h2>
<dl>{details}<dt>Participants</dt><dd><ul class="participants">{participants}</ul></dd></dl>
<p><a href="{media}" download>download</a> · <a href="{manifest}">manifest</a></p>
</div>
{player}
</article>"""


def format_date(entry: RecordingEntry) -> str:
    """`2026-11-24 14:00:05 UTC`."""
    if entry.started_at is None:
        return UNKNOWN
    return entry.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float | None) -> str:
    """`0:03`, `12:34`, `1:02:03` (rounded to the second)."""
    if seconds is None:
        return UNKNOWN
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_size(size_bytes: int | None) -> str:
    """Decimal units, as browsers and S3 consoles show them: `180.7 kB`, `2.5 MB`."""
    if size_bytes is None:
        return UNKNOWN
    value = float(size_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size_bytes} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return UNKNOWN  # not reached: GB ends the loop


def format_layout(entry: RecordingEntry) -> str:
    """`GRID · DEFAULT theme · med 1280×720` (what the manifest says of it)."""
    parts = [entry.layout or UNKNOWN]
    if entry.theme:
        parts.append(f"{entry.theme} theme")
    output = entry.quality or ""
    if entry.width and entry.height:
        output = f"{output} {entry.width}×{entry.height}".strip()
    elif entry.mode == "audio":
        output = f"{output} audio only".strip()
    if output:
        parts.append(output)
    return " · ".join(parts)
