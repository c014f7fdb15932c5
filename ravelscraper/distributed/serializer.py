"""Queue entries as plain JSON, checked field by field: never pickle, never ``load_object``.

Whoever can write to the fleet's Redis must not be able to run code on the nodes, nor make
them fetch arbitrary URLs. So an entry is decoded by :func:`loads` (structure, types, sizes)
and turned into a request by :func:`to_request` (callbacks from a fixed list, URLs only on
the origins this crawl allows). Anything else raises :class:`BadEntry` with a one-line reason.

The module has ``dumps``/``loads``, so it is also a valid ``SCHEDULER_SERIALIZER``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scrapy import Request, Spider

from ravelscraper.archive.metadata import BadInput, ItemLocation, check_identifier
from ravelscraper.archive.search import SCRAPE_PATH
from ravelscraper.distributed.origins import AllowedOrigins

VERSION = 1
MAX_ENTRY_BYTES = 2 * 1024 * 1024
FIELDS = {"v", "url", "method", "callback", "errback", "headers", "body", "meta", "cb_kwargs"}
FIELDS |= {"priority", "dont_filter"}
FILE_ENTRY_CALLBACK = "parse_file_entry"
SEARCH_CALLBACK = "parse_search_page"
# Listing entries: back-pressure (RAVEL_FLEET_MAX_PENDING) holds them back while too many files
# are pending. Every other entry (a file, an item's details page or its fallback) is always
# taken, so an item whose listing is under way finishes.
HELD_CALLBACKS = frozenset({SEARCH_CALLBACK, "parse_metadata"})
MAX_QUERY = 4096  # bytes of an archive.org query in a search page's cb_kwargs
FINGERPRINT = re.compile(r"[0-9a-f]{0,16}")  # ravelscraper.archive.search.fingerprint's, or ""
# callback -> (errback, cb_kwargs it must have, cb_kwargs it may have); each cb_kwarg's kind:
# "location" an ItemLocation, "query" a search, "collection" an identifier or "",
# "fingerprint" what the search said of an item (<= 16 hex digits) or "".
LOCATION = {"item": "location"}
FOUND = {"fingerprint": "fingerprint"}
CALLBACKS: dict[str, tuple[str | None, dict[str, str], dict[str, str]]] = {
    "parse_details": ("details_failed", LOCATION, {}),
    "parse_metadata": ("metadata_failed", LOCATION, FOUND),
    "parse_page_links": ("page_links_failed", LOCATION, FOUND),
    SEARCH_CALLBACK: ("search_page_failed", {"query": "query", "collection": "collection"}, {}),
    FILE_ENTRY_CALLBACK: (None, {}, {}),
}
META_INT = {"depth", "retry_times", "redirect_times", "redirect_ttl"}
META_LIST = {"redirect_urls", "redirect_reasons"}
HEADERS = {"accept", "accept-language", "accept-encoding", "user-agent", "referer"}


class BadEntry(ValueError):
    """A queue entry refused; the message says why, in one line."""


def dumps(obj: dict[str, Any]) -> bytes:
    """``Request.to_dict()`` output as compact JSON; local-only meta and headers are left out."""
    if obj.get("_class"):
        raise BadEntry(f"request class {obj['_class']} cannot be queued")
    meta = {k: v for k, v in (obj.get("meta") or {}).items() if k in META_INT | META_LIST}
    headers = {
        _text(name): [_text(v) for v in values]
        for name, values in (obj.get("headers") or {}).items()
        if _text(name).lower() in HEADERS
    }
    entry = {
        "v": VERSION,
        "url": obj["url"],
        "method": obj["method"],
        "callback": obj["callback"],
        "errback": obj["errback"],
        "headers": headers,
        "body": base64.b64encode(obj.get("body") or b"").decode(),
        "meta": meta,
        "cb_kwargs": {k: _plain(v) for k, v in (obj.get("cb_kwargs") or {}).items()},
        "priority": obj["priority"],
        "dont_filter": obj["dont_filter"],
    }
    return json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()


def loads(raw: bytes | str) -> dict[str, Any]:
    """Parse and check an entry's structure; raises BadEntry, and nothing else."""
    try:
        return _loads(raw)
    except BadEntry:
        raise
    except Exception as exc:  # e.g. RecursionError: one line, never a crash
        raise BadEntry(f"unreadable entry ({type(exc).__name__})") from None


def _loads(raw: bytes | str) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = raw.encode(errors="surrogatepass")
    if not isinstance(raw, bytes):
        raise BadEntry("not a JSON entry")
    if len(raw) > MAX_ENTRY_BYTES:
        raise BadEntry(f"entry of {len(raw)} bytes is larger than {MAX_ENTRY_BYTES}")
    if raw[:1] == b"\x80":
        raise BadEntry("pickled data (not JSON): refused, never unpickled")
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadEntry("not a JSON entry") from None
    if not isinstance(entry, dict) or entry.get("v") != VERSION:
        raise BadEntry('not a ravel queue entry (no "v": 1)')
    extra = set(entry) - FIELDS
    if extra:
        raise BadEntry(f"unexpected fields {sorted(extra)[:10]!r}"[:300])
    missing = FIELDS - set(entry)
    if missing:
        raise BadEntry(f"missing fields {sorted(missing)}")
    callback = entry["callback"]
    if not isinstance(callback, str) or callback not in CALLBACKS:
        raise BadEntry(f"callback {str(callback)[:100]!r} is not allowed")
    errback, required, optional = CALLBACKS[callback]
    if entry["errback"] != errback:
        raise BadEntry(f"errback {str(entry['errback'])[:100]!r} is not allowed with {callback}")
    if entry["method"] != "GET" or entry["body"] != "":
        raise BadEntry("only GET requests without a body are allowed")
    if not isinstance(entry["url"], str) or len(entry["url"]) > 64 * 1024:
        raise BadEntry("bad url")
    if not _is_int(entry["priority"]) or abs(entry["priority"]) > 10_000:
        raise BadEntry("bad priority")
    if not isinstance(entry["dont_filter"], bool):
        raise BadEntry("bad dont_filter")
    entry["headers"] = _check_headers(entry["headers"])
    entry["meta"] = _check_meta(entry["meta"])
    entry["cb_kwargs"] = _check_cb_kwargs(entry["cb_kwargs"], required, optional)
    return entry


def to_request(entry: dict[str, Any], spider: Spider, origins: AllowedOrigins) -> Request:
    """A plain :class:`Request` for a checked entry; raises BadEntry for a URL not allowed."""
    url, callback = entry["url"], entry["callback"]
    if callback == FILE_ENTRY_CALLBACK:
        raise BadEntry("a file entry is a list of files ([2, ...]), not a request")
    if url not in origins:
        raise BadEntry(f"host of {url[:200]!r} is not allowed (allowed: {origins.describe()})")
    cb_kwargs = dict(entry["cb_kwargs"])
    if callback == SEARCH_CALLBACK:
        _check_search_url(url, cb_kwargs["query"], cb_kwargs["collection"], entry["meta"])
    if "item" in cb_kwargs:
        location = cb_kwargs["item"]
        if location.origin not in origins:
            raise BadEntry(f"item origin {location.origin!r} is not allowed")
        expected = location.metadata_url if callback == "parse_metadata" else location.details_url
        hops = entry["meta"].get("redirect_urls") or []
        # A redirected page: it started at its item's URL, and every hop is on an origin.
        first = hops[0] if hops else url
        if first != expected:
            raise BadEntry(f"url {str(first)[:200]!r} does not match its item ({expected})")
        for hop in hops:
            if not isinstance(hop, str) or hop not in origins:
                raise BadEntry(f"redirect via {str(hop)[:200]!r} is not allowed")
    meta = dict(entry["meta"])
    errback = entry["errback"]
    return Request(
        url,
        callback=getattr(spider, callback),
        errback=getattr(spider, errback) if errback else None,
        headers=entry["headers"],
        meta=meta,
        cb_kwargs=cb_kwargs,
        priority=entry["priority"],
        dont_filter=entry["dont_filter"],
    )


def decode(raw: bytes | None, spider: Spider, origins: AllowedOrigins) -> Request:
    """The request of a queue entry; raises BadEntry (one line), and nothing else."""
    if raw is None:
        raise BadEntry("no payload for this id")
    if raw[:1] in (b"[", "["):
        return file_entry_request(raw, spider, origins)
    entry = loads(raw)
    try:
        return to_request(entry, spider, origins)
    except BadEntry:
        raise
    except Exception as exc:  # a checked entry Scrapy still refuses
        raise BadEntry(f"not a valid request ({type(exc).__name__})") from None


def file_entry_request(raw: bytes | str, spider: Spider, origins: AllowedOrigins) -> Request:
    """The request of a file entry (:class:`~.entries.Chunk`): its shape checked here, each
    file judged when the spider reads it (``entries.file_entry_items``)."""
    from ravelscraper.distributed.entries import BadRecord, entry_request, parse_chunk

    if len(raw) > MAX_ENTRY_BYTES:
        raise BadEntry(f"entry of {len(raw)} bytes is larger than {MAX_ENTRY_BYTES}")
    try:
        chunk = parse_chunk(json.loads(raw))
    except BadRecord as exc:
        raise BadEntry(f"bad file entry: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadEntry("not a JSON entry") from None
    if chunk.origin not in origins:
        allowed = origins.describe()
        raise BadEntry(f"host of {chunk.origin[:200]!r} is not allowed (allowed: {allowed})")
    return entry_request(chunk, spider)  # type: ignore[arg-type]


# --- helpers ------------------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    if isinstance(value, ItemLocation):
        return {"origin": value.origin, "identifier": value.identifier}
    return value


def _check_headers(headers: Any) -> dict[str, list[str]]:
    if not isinstance(headers, dict) or len(headers) > len(HEADERS):
        raise BadEntry("bad headers")
    for name, values in headers.items():
        if not isinstance(name, str) or name.lower() not in HEADERS:
            raise BadEntry(f"header {str(name)[:100]!r} is not allowed")
        if not isinstance(values, list) or not all(
            isinstance(v, str) and len(v) < 4096 and "\n" not in v and "\r" not in v for v in values
        ):
            raise BadEntry(f"bad value for header {name!r}")
    return headers


def _check_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise BadEntry("bad meta")
    for key, value in meta.items():
        if key in META_INT:
            ok = _is_int(value) and 0 <= value <= 1000
        elif key in META_LIST:
            ok = (
                isinstance(value, list)
                and len(value) <= 100
                and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value)
            )
        else:
            raise BadEntry(f"meta key {str(key)[:100]!r} is not allowed")
        if not ok:
            raise BadEntry(f"bad value for meta key {key!r}")
    return meta


def _check_search_url(url: str, query: str, collection: str, meta: dict[str, Any]) -> None:
    """A search page's URL is a scrape URL of exactly its query, never redirected (the
    spider pages a collection by cursor; a redirect could lead to another query's items)."""
    if meta.get("redirect_urls"):
        raise BadEntry("a search page entry cannot be a redirect")
    parts = urlsplit(url)
    if parts.path != SCRAPE_PATH or parts.fragment:
        raise BadEntry(f"a search page must be {SCRAPE_PATH}?..., not {url[:200]!r}")
    try:
        params = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise BadEntry(f"unreadable search page query {parts.query[:200]!r}") from None
    if params.get("q") != [query]:
        raise BadEntry(f"search page url {url[:200]!r} does not ask for its query")
    if collection and query != f"collection:{collection}":
        raise BadEntry(f"query {query[:200]!r} is not the search of collection {collection!r}")


def _check_cb_kwargs(
    cb_kwargs: Any, required: dict[str, str], optional: dict[str, str]
) -> dict[str, Any]:
    if (
        not isinstance(cb_kwargs, dict)
        or not set(required) <= set(cb_kwargs)
        or not set(cb_kwargs) <= set(required) | set(optional)
    ):
        names = sorted(required) + [f"optionally {name}" for name in sorted(optional)]
        raise BadEntry(f"cb_kwargs must be exactly {names}")
    checked: dict[str, Any] = {}
    spec = required | optional
    for name, value in cb_kwargs.items():
        kind = spec[name]
        if kind == "location":
            if not isinstance(value, dict) or set(value) != {"origin", "identifier"}:
                raise BadEntry(f"bad {name!r} in cb_kwargs")
            try:
                checked[name] = ItemLocation.on(str(value["origin"]), str(value["identifier"]))
            except BadInput as exc:
                raise BadEntry(f"bad {name!r} in cb_kwargs: {exc}") from None
            if checked[name].origin != value["origin"]:
                raise BadEntry(f"bad origin {str(value['origin'])[:200]!r} in cb_kwargs")
        elif kind == "query":
            if (
                not isinstance(value, str)
                or not value.strip()
                or len(value.encode(errors="surrogatepass")) > MAX_QUERY
                or not value.isprintable()
            ):
                raise BadEntry(f"bad {name!r} in cb_kwargs (a query of at most {MAX_QUERY} bytes)")
            checked[name] = value
        elif kind == "collection":
            if not isinstance(value, str):
                raise BadEntry(f"bad {name!r} in cb_kwargs")
            if value:
                try:
                    check_identifier(value)
                except BadInput as exc:
                    raise BadEntry(f"bad {name!r} in cb_kwargs: {str(exc)[:200]}") from None
            checked[name] = value
        elif kind == "fingerprint":
            if not isinstance(value, str) or not FINGERPRINT.fullmatch(value):
                raise BadEntry(f"bad {name!r} in cb_kwargs (at most 16 hex digits, or empty)")
            checked[name] = value
        else:  # pragma: no cover - a kind above is missing
            raise BadEntry(f"cb_kwargs {name!r} has no check")
    return checked
