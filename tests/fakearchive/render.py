"""What the fake serves for an item: /metadata JSON, the details page, the download listing.

Renderers take the origin (``http://127.0.0.1:PORT`` or ``https://archive.org``) and the
storage host (``127.0.0.2:PORT`` or ``ia800300.us.archive.org``) as parameters, so the saved
fixtures and the live server share one code path.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import time
import zlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .catalog import MP3_FORMATS, FileEntry, Item, checksums_of

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def url_name(name: str) -> str:
    """A file name as it appears in URLs: ``quote(name)``, ``/`` kept for sub-folders.

    A name with an empty, ``.`` or ``..`` segment (``../../escape.mp3``, ``/etc/evil.mp3``,
    ``sub/../../up.mp3``) cannot travel as a path: clients remove dot segments and a leading
    ``/`` makes a relative link absolute. Those are encoded with ``quote(name, safe="")``
    (``..%2F..%2Fescape.mp3``); the server decodes either form.
    """
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        return quote(name, safe="")
    return quote(name)


def download_path(item: Item, name: str) -> str:
    return f"/download/{item.identifier}/{url_name(name)}"


def storage_path(item: Item, name: str) -> str:
    return f"{item.dir}/{url_name(name)}"


def dumps(value: Any) -> bytes:
    """JSON as archive.org sends it: compact, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


# --- /metadata ---------------------------------------------------------------------------


def file_record(item: Item, entry: FileEntry) -> dict[str, str]:
    """One entry of ``files``: every value a string."""
    record = {"name": entry.name, "source": entry.source, "format": entry.format}
    if entry.original:
        record["original"] = entry.original
    if entry.bare:
        record["md5"] = stale_md5(item, entry)
    else:
        sums = checksums_of(item.identifier, entry.content_key, entry.size)
        record.update(mtime=str(entry.mtime), size=str(entry.size))
        if entry.stale_md5:  # rewritten after listing: every checksum is the earlier version's
            earlier = f"earlier {item.identifier}/{entry.name}".encode()
            record.update(md5=stale_md5(item, entry), crc32=f"{zlib.crc32(earlier):08x}")
            record["sha1"] = hashlib.sha1(earlier).hexdigest()
        else:
            record.update(md5=sums.md5, crc32=sums.crc32, sha1=sums.sha1)
    record.update(entry.tags)
    if entry.private:
        record["private"] = "true"
    return record


def stale_md5(item: Item, entry: FileEntry) -> str:
    """The md5 of an earlier version of a file: never the md5 of the bytes served."""
    return hashlib.md5(f"earlier {item.identifier}/{entry.name}".encode()).hexdigest()


def metadata(item: Item, storage_host: str) -> dict[str, Any]:
    """The /metadata/<identifier> document."""
    doc: dict[str, Any] = {
        "created": item.created,
        "d1": storage_host,
        "d2": storage_host,
        "dir": item.dir,
        "files": [file_record(item, f) for f in sorted(item.files, key=lambda f: f.name)],
        "files_count": len(item.files),
        "item_last_updated": item.last_updated,
        "item_size": item.item_size,
        "metadata": dict(item.metadata),
        "server": storage_host,
        "uniq": item.uniq,
        "workable_servers": [storage_host],
    }
    if item.reviews:
        doc["reviews"] = [dict(r) for r in item.reviews]
    if item.metadata.get("mediatype") == "collection":
        doc["is_collection"] = True
    return dict(sorted(doc.items()))


# --- details page ------------------------------------------------------------------------


def _text(value: str) -> str:
    """HTML-escaped text; control characters (invalid in HTML) shown as U+FFFD."""
    return html.escape(_CONTROL.sub("\ufffd", value))


def _first(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")


def _tracks(item: Item) -> list[tuple[FileEntry, list[FileEntry]]]:
    """Each audio original with its playable public files (mp3 first, then ogg)."""
    tracks = []
    originals = [f for f in item.files if f.is_audio and f.source == "original"]
    for original in sorted(originals, key=lambda f: f.name):
        family = [original] + [f for f in item.files if f.original == original.name]
        public = [f for f in family if not f.private]
        mp3s = sorted(
            (f for f in public if f.format in MP3_FORMATS),
            key=lambda f: MP3_FORMATS.index(f.format),
        )
        oggs = [f for f in public if f.format == "Ogg Vorbis"]
        sources = mp3s[:1] + oggs[:1]
        if sources:
            tracks.append((original, sources))
    return tracks


def _duration(original: FileEntry, sources: list[FileEntry]) -> float:
    for entry in (original, *sources):
        seconds = entry.length_seconds()
        if seconds is not None:
            return seconds
    return 0.0


def _playlist(item: Item, tracks: list[tuple[FileEntry, list[FileEntry]]]) -> str:
    artist = _first(item.metadata.get("creator"))
    entries = []
    for original, sources in tracks:
        entries.append(
            {
                "title": original.tags.get("title") or original.name,
                "orig": original.name,
                "artist": original.tags.get("creator") or artist,
                "duration": round(_duration(original, sources), 2),
                "image": f"/download/{item.identifier}/__ia_thumb.jpg",
                "sources": [
                    {
                        "file": download_path(item, f.name),
                        "type": "ogg" if f.format == "Ogg Vorbis" else "mp3",
                        "height": "0",
                        "width": "0",
                        "label": f.format,
                    }
                    for f in sources
                ],
            }
        )
    return json.dumps(entries, ensure_ascii=False)


def _microdata(item: Item, origin: str, tracks: list[tuple[FileEntry, list[FileEntry]]]) -> str:
    blocks = []
    for original, sources in tracks:
        title = original.tags.get("title") or original.name
        seconds = round(_duration(original, sources))
        href = origin + download_path(item, sources[0].name)
        blocks.append(
            '<div itemprop="hasPart" itemscope itemtype="http://schema.org/AudioObject">\n'
            f'  <meta itemprop="name" content="{_text(title)}">\n'
            f'  <meta itemprop="duration" content="PT0M{seconds}S">\n'
            f'  <link itemprop="associatedMedia" href="{html.escape(href)}">\n'
            "</div>"
        )
    return "\n".join(blocks)


def _download_options(item: Item) -> str:
    groups: dict[str, list[FileEntry]] = {}
    for entry in item.files:
        if not entry.private:
            groups.setdefault(entry.format, []).append(entry)
    pills = []
    for fmt in sorted(groups, key=str.lower):
        files = groups[fmt]
        if len(files) == 1:
            href = download_path(item, files[0].name)
            label = "1 file"
        else:
            href = f"/compress/{item.identifier}/formats={fmt}&file=/{item.identifier}.zip"
            label = f"{len(files)} files"
        pills.append(
            '<div class="format-group">\n'
            f'  <a class="format-summary download-pill" href="{html.escape(href)}" '
            f'title="download {label}" data-toggle="tooltip" data-placement="auto left" '
            'data-container="body" target="_blank">\n'
            f'    {_text(fmt)}<span class="hover-badge-stay"><span class="iconochive-download" '
            f'aria-hidden="true"></span><span class="icon-label">{label}</span></span>\n'
            "  </a>\n"
            "</div>"
        )
    originals = sum(1 for f in item.files if f.source == "original")
    return (
        '<section class="boxy item-download-options">\n'
        '<div class="download-button" role="heading" aria-level="5">DOWNLOAD OPTIONS</div>\n'
        + "\n".join(pills)
        + f'\n<a class="show-all" href="/download/{item.identifier}" target="_blank">'
        '<span class="hover-badge-stay"><span class="iconochive-folder" aria-hidden="true"></span>'
        "</span>SHOW ALL</a>\n"
        f'<div class="show-all-count">{len(item.files)} Files</div>\n'
        f'<div class="show-all-count">{originals} Original</div>\n'
        "</section>"
    )


def details_html(item: Item, origin: str) -> str:
    """The server-rendered /details/<identifier> page (microdata, player, download box)."""
    meta = item.metadata
    title = _text(_first(meta.get("title")) or item.identifier)
    creator = _text(_first(meta.get("creator")))
    ident = item.identifier
    tracks = _tracks(item)
    description = _first(meta.get("description"))
    published = _text(_first(meta.get("publicdate")))
    creator_query = quote(_first(meta.get("creator")))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title} : {creator} : Free Download, Borrow, and Streaming : Internet Archive</title>
<meta property="og:title" content="{title}">
<meta property="og:type" content="website">
<meta property="og:url" content="{origin}/details/{ident}">
<meta property="og:image" content="{origin}/services/img/{ident}">
<link rel="canonical" href="{origin}/details/{ident}">
<link rel="stylesheet" href="{origin}/offshoot_assets/index.css">
<script src="{origin}/offshoot_assets/index.js" type="module"></script>
</head>
<body class="navia ia-module tiles responsive-nav">
<a href="#maincontent" class="hidden-for-screen-readers">Skip to main content</a>
<ia-topnav locale="en" wayback-url="web.archive.org" base-host="{origin}"></ia-topnav>
<main id="maincontent">
<div class="container container-ia width-max" itemscope itemtype="http://schema.org/MusicAlbum">
<div id="theatre-ia-wrap" class="container container-ia width-max">
<meta itemprop="url" content="{origin}/details/{ident}">
<meta itemprop="image" content="{origin}/services/img/{ident}">
<div id="theatre-ia" class="container">
<div class="row"><div class="xs-col-12">
<div id="theatre-controls"><a href="#" id="gofullscreen">\
<span class="iconochive-fullscreen"></span></a></div>
<play-av class="js-play-av" identifier="{ident}" item-type="audio" \
playlist='{html.escape(_playlist(item, tracks))}'></play-av>
{_microdata(item, origin, tracks)}
</div></div>
</div>
</div>
<div class="container container-ia item-details-about">
<div class="row">
<div class="thats-left item-details-metadata">
<h1 class="item-title" itemprop="name">{title}</h1>
<dl class="metadata-definition"><dt>by</dt>
<dd class=""><span class="item-creator" itemprop="byArtist">\
<a href="/search?query=creator%3A%22{creator_query}%22" rel="nofollow">{creator}</a>\
</span></dd></dl>
<dl class="metadata-definition"><dt>Publication date</dt>\
<dd><span itemprop="datePublished">{published}</span></dd></dl>
<div id="descript" itemprop="description">{description}</div>
</div>
<div class="thats-right item-details-archive-info">
{_download_options(item)}
</div>
</div>
</div>
</div>
</main>
<app-footer></app-footer>
</body>
</html>
"""


def not_found_html(what: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<title>Internet Archive: Error</title></head>\n<body><main id="maincontent">'
        f'<div class="container container-ia"><h1>Item cannot be found.</h1><p>{_text(what)}</p>'
        "</div></main></body></html>\n"
    )


# --- /download/<identifier>/ listing -----------------------------------------------------


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit else str(size)
        value /= 1024
    return str(size)


def listing_html(item: Item, trailing_slash: bool = True) -> str:
    """The download directory listing; hrefs are relative to the request path."""
    prefix = "" if trailing_slash else f"{item.identifier}/"
    rows = ['<tr><td><a href="../">Go to parent directory</a></td><td></td><td></td></tr>']
    for entry in _listed(item.files):
        stamp = time.strftime("%d-%b-%Y %H:%M", time.gmtime(entry.mtime))
        href = html.escape(prefix + url_name(entry.name))
        rows.append(
            f'<tr><td><a href="{href}">{_text(entry.name)}</a></td>'
            f"<td>{stamp}</td><td>{_human_size(entry.size)}</td></tr>"
        )
    body = "\n".join(rows)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{item.identifier} directory listing</title></head>
<body>
<div class="container container-ia">
<h1>Files for {item.identifier}</h1>
<div class="download-directory-listing">
<table class="directory-listing-table">
<thead><tr><th><a href="?sort=name">Name</a></th><th><a href="?sort=date">Last modified</a></th>\
<th><a href="?sort=size">Size</a></th></tr></thead>
<tbody>
{body}
</tbody>
</table>
</div>
</div>
</body>
</html>
"""


def _listed(files: Iterable[FileEntry]) -> list[FileEntry]:
    return sorted((f for f in files if not f.private), key=lambda f: f.name)
