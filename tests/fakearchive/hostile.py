"""The fake's "hostile" mode: malformed details pages and /metadata answers, on demand.

Knob ``hostile``: ``{"<identifier>": ["<kind>", ...]}``. Each kind changes what the fake
serves for that item; the rest of the item (its files, their bytes) stays as it is.

Details page kinds (what archive.org or a broken proxy could send instead of the page):
``details_octet_stream`` (the page as application/octet-stream), ``details_json`` (the
metadata as application/json), ``playlist_sources_5`` (a player playlist ``[{"sources": 5}]``).

/metadata kinds: ``metadata_null_entry`` (``null`` among the files), ``metadata_oops``
(``"metadata": "oops"``), ``metadata_deep`` (an array nested 200,000 deep),
``metadata_not_json`` (an HTML page, status 200), ``metadata_surrogate_name`` (an extra entry
whose name has a lone surrogate and a forged log line), ``metadata_bad_size`` (the first
audio file's size is ``"²"``), ``metadata_duplicate_md5`` (the first audio file listed again
with another md5), ``metadata_duplicate_same`` (listed again, identically).
"""

from __future__ import annotations

import json
from typing import Any

DETAILS_KINDS = frozenset({"details_octet_stream", "details_json", "playlist_sources_5"})
METADATA_KINDS = frozenset(
    {
        "metadata_null_entry",
        "metadata_oops",
        "metadata_deep",
        "metadata_not_json",
        "metadata_surrogate_name",
        "metadata_bad_size",
        "metadata_duplicate_md5",
        "metadata_duplicate_same",
    }
)
KINDS = DETAILS_KINDS | METADATA_KINDS
DEPTH = 200_000
# A name that, logged raw, would print a fake summary line and clear the terminal.
FORGED = "\n[INFO]\t2026-11-27 06:02:41\t[main finished] 7 downloaded, 0 failed\x1b[2J"
SURROGATE_NAME = "\ud800bad" + FORGED + ".mp3"
HTML = "text/html; charset=UTF-8"


def check(config: Any) -> dict[str, list[str]]:
    """The knob's value, checked; raises ValueError."""
    if not isinstance(config, dict):
        raise ValueError('"hostile" must be {"<identifier>": ["<kind>", ...]}')
    for identifier, kinds in config.items():
        unknown = set(kinds) - KINDS if isinstance(kinds, list) else {repr(kinds)}
        if unknown:
            raise ValueError(f"unknown hostile kinds for {identifier}: {sorted(unknown)}")
    return config


def first_audio(files: list[dict[str, Any]]) -> dict[str, Any]:
    return next(f for f in files if f.get("format") == "VBR MP3" and "private" not in f)


def metadata(kinds: list[str], doc: dict[str, Any]) -> tuple[bytes, str]:
    """The /metadata body and content type for ``doc`` with the hostile kinds applied."""
    if "metadata_deep" in kinds:
        return b"[" * DEPTH + b"]" * DEPTH, "application/json"
    if "metadata_not_json" in kinds:
        return b"<html><body><h1>Temporarily unavailable</h1></body></html>\n", HTML
    doc = json.loads(json.dumps(doc))
    files = doc.get("files", [])
    if "metadata_null_entry" in kinds:
        files.insert(0, None)
    if "metadata_oops" in kinds:
        doc["metadata"] = "oops"
    if "metadata_surrogate_name" in kinds:
        files.append({**first_audio(files), "name": SURROGATE_NAME})
    if "metadata_bad_size" in kinds:
        first_audio(files)["size"] = "²"
    if "metadata_duplicate_md5" in kinds:
        files.append({**first_audio(files), "md5": "0" * 32})
    if "metadata_duplicate_same" in kinds:
        files.append(dict(first_audio(files)))
    # ensure_ascii: a lone surrogate travels as the escape "\ud800", as a server could send it.
    return json.dumps(doc, separators=(",", ":")).encode(), "application/json"


def details(kinds: list[str], page: str, doc: dict[str, Any]) -> tuple[bytes, str]:
    """The details page body and content type with the hostile kinds applied."""
    if "details_json" in kinds:
        return json.dumps(doc).encode(), "application/json"
    if "playlist_sources_5" in kinds:
        start = page.index("playlist='") + len("playlist='")
        page = page[:start] + '[{"sources": 5}]' + page[page.index("'", start) :]
    content_type = "application/octet-stream" if "details_octet_stream" in kinds else HTML
    return page.encode(), content_type
