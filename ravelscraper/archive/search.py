"""Many items in one crawl: archive.org's scrape API and item-list files, read without Scrapy.

Owns the scrape URL (``/services/search/v1/scrape`` on ``RAVEL_ORIGIN``, cursor paging, the
way the official client's ``search_items`` pages), the reading of one page of its answer
(:func:`parse_page`: an error envelope or a malformed answer raises :class:`SearchFailed`,
a malformed item entry is skipped with a warning), the item fingerprint that says whether
archive.org changed an item since the last run (:func:`fingerprint`), and the reading of an
``-a items=`` file (:func:`read_item_list`). Which files of an item the crawl takes is
``ravelscraper.spiders.choice``'s; what the spider does with the items is the spider's.

The fingerprint: archive.org's scrape API cannot return ``item_last_updated``; the fields
it returns that move when an item's files do are ``oai_updatedate`` (a list of dates whose
newest equals ``item_last_updated``) and ``item_size`` (the sum of the files' sizes). The
fingerprint is both, as one opaque string; an answer without them has none (the item is
then listed, never skipped).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO
from urllib.parse import parse_qs, urlencode, urlsplit

from ravelscraper.archive.metadata import (
    BadInput,
    ItemLocation,
    check_identifier,
    http_url,
    load_json,
    parse_size,
    text,
)
from ravelscraper.archive.names import shown

SCRAPE_PATH = "/services/search/v1/scrape"
# What the spider asks for: enough to skip an unchanged item, a sub-collection, and to
# check that the answer belongs to the collection asked for (archive.org has answered
# another query's items: jjjake/internetarchive#797).
SEARCH_FIELDS = ("identifier", "mediatype", "collection", "oai_updatedate", "item_size")
MAX_LIST_LINE = 4096  # longer lines of an item list are refused (a details URL is ~100)
# Bytes read at most for one line of an item list (UTF-8: up to 4 bytes a character, a BOM,
# CRLF): a longer line is refused without being read whole.
MAX_LIST_LINE_BYTES = 4 * MAX_LIST_LINE + 8
MAX_WARNINGS = 5  # malformed entries named per page; the rest are counted
MAX_TOTAL = 10**9  # a search total above this (archive.org holds some 10**8 items) is ignored


class SearchFailed(BadInput):
    """A search page the crawl cannot go on from; the message is its one ERROR line."""


@dataclass(frozen=True)
class FoundItem:
    """One item of a search answer."""

    identifier: str
    mediatype: str = ""
    collections: tuple[str, ...] = ()
    fingerprint: str | None = None  # None: the answer lacked oai_updatedate or item_size

    @property
    def is_collection(self) -> bool:
        return self.mediatype.casefold() == "collection"


@dataclass(frozen=True)
class SearchPage:
    """One page of a scrape answer: its items, archive.org's total (None when it gives
    none: zero hits), the cursor of the next page (None on the last page), and one line
    per malformed item entry skipped."""

    items: tuple[FoundItem, ...]
    total: int | None
    cursor: str | None
    warnings: tuple[str, ...] = ()


def scrape_url(origin: str, query: str, count: int, cursor: str | None = None) -> str:
    """The URL of one search page on ``origin`` (``count`` items, after ``cursor``)."""
    parts = http_url(origin)
    params = {"q": query, "fields": ",".join(SEARCH_FIELDS), "count": str(count)}
    if cursor:
        params["cursor"] = cursor
    return f"{parts.scheme}://{parts.netloc}{SCRAPE_PATH}?{urlencode(params)}"


def collection_query(identifier: str) -> str:
    """The search of one collection's items; raises BadInput for a bad identifier."""
    return f"collection:{check_identifier(identifier)}"


# -a since=: archive.org's search syntax (Lucene) for a range open at its end is
# ``field:[low TO null]`` (archive.org's search help: "null" for a bound left out).
# ``oai_updatedate`` is the field that moves when an item's files do (see the module's
# docstring); ``updatedate`` does not follow file changes.
SINCE_FIELD = "oai_updatedate"
SINCE_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
SINCE_CLAUSE = re.compile(
    rf" AND {SINCE_FIELD}:\[(?P<date>[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}) TO null\]$"
)


def check_since(value: str) -> str:
    """``-a since=``'s date, ``YYYY-MM-DD``; raises BadInput for anything else."""
    value = value.strip()
    try:
        if not SINCE_DATE.fullmatch(value):
            raise ValueError(value)
        date.fromisoformat(value)
    except ValueError:
        raise BadInput(
            f"-a since={text(value, 40)!r} is not a date: give YYYY-MM-DD, e.g. -a since=2024-01-31"
        ) from None
    return value


def since_query(query: str, since: str) -> str:
    """``query`` narrowed to the items archive.org changed on ``since`` (YYYY-MM-DD) or later."""
    return f"({query}) AND {SINCE_FIELD}:[{check_since(since)} TO null]"


def query_since(query: str) -> str | None:
    """The date a query made by :func:`since_query` starts at, or None."""
    found = SINCE_CLAUSE.search(query)
    return found["date"] if found else None


def fingerprint(oai_updatedate: object, item_size: object) -> str | None:
    """The item's state as the search answer gives it, or None when it can't be told.

    ``oai_updatedate`` is a date or a list of dates (order and repeats don't matter);
    ``item_size`` a number of bytes. Equal answers give equal fingerprints.
    """
    dates = oai_updatedate if isinstance(oai_updatedate, list) else [oai_updatedate]
    if not dates or not all(isinstance(d, str) and d and len(d) <= 64 for d in dates):
        return None
    size = parse_size(item_size)
    if size is None:
        return None
    key = json.dumps([sorted(set(dates)), size], separators=(",", ":"))
    digest = hashlib.sha1(key.encode("utf-8", "replace"), usedforsecurity=False)
    return digest.hexdigest()[:16]


def parse_page(body: str | bytes) -> SearchPage:
    """One scrape answer; raises SearchFailed for an error envelope or a malformed answer.

    A malformed item entry (no identifier, a bad one, not an object) is skipped, with a
    line in ``warnings``; it never sinks the page.
    """
    try:
        data = load_json(body, "the search answer")
    except BadInput as exc:
        raise SearchFailed(str(exc)) from None
    if not isinstance(data, dict):
        raise SearchFailed(f"the search answer is not a JSON object but {type(data).__name__}")
    if "error" in data:
        raise SearchFailed(f"archive.org refused the search: {shown(text(data['error'], 300))}")
    entries = data.get("items")
    if not isinstance(entries, list):
        raise SearchFailed('the search answer has no "items" list')
    cursor = data.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not cursor or len(cursor) > 4096):
        raise SearchFailed(f"the search answer has a malformed cursor: {text(cursor, 80)!r}")
    total = data.get("total")
    total = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
    items: list[FoundItem] = []
    warnings: list[str] = []
    if total is not None and total > MAX_TOTAL:  # more than archive.org holds: not a count
        warnings.append(f"archive.org announced {str(total)[:40]} hits, not believable: ignored")
        total = None
    skipped = 0
    for entry in entries:
        try:
            items.append(found_item(entry))
        except BadInput as exc:
            skipped += 1
            if len(warnings) < MAX_WARNINGS:
                warnings.append(f"skipped an entry of the search answer: {exc}")
    if skipped > MAX_WARNINGS:
        warnings.append(f"skipped {skipped - MAX_WARNINGS} more malformed entries")
    return SearchPage(tuple(items), total, cursor, tuple(warnings))


def found_item(entry: object) -> FoundItem:
    """One item entry of a scrape answer; raises BadInput for one that must be skipped."""
    if not isinstance(entry, dict):
        raise BadInput(f"not an object: {text(str(entry), 80)!r}")
    identifier = entry.get("identifier")
    if not isinstance(identifier, str):
        raise BadInput(f"no identifier: {text(str(entry), 80)!r}")
    check_identifier(identifier)
    if len(identifier) > 256:
        raise BadInput(f"identifier {identifier[:80]!r}... is too long")
    collection = entry.get("collection")
    collections = collection if isinstance(collection, list) else [collection]
    mediatype = entry.get("mediatype")
    return FoundItem(
        identifier=identifier,
        mediatype=text(mediatype[0] if isinstance(mediatype, list) and mediatype else mediatype),
        collections=tuple(text(c) for c in collections if isinstance(c, str)),
        fingerprint=fingerprint(entry.get("oai_updatedate"), entry.get("item_size")),
    )


def page_cursor(url: str) -> str | None:
    """The cursor a scrape URL asks for (None for the first page)."""
    values = parse_qs(urlsplit(url).query).get("cursor")
    return values[-1] if values else None


def cursor_identifier(cursor: str) -> str | None:
    """The last identifier of the page a cursor follows (archive.org's cursors are base64
    of ``[{"identifier": ...}]``), or None when it is not shaped so."""
    try:
        keys = json.loads(base64.b64decode(cursor, validate=True))
        last = keys[-1]["identifier"] if isinstance(keys, list) and keys else None
    except (ValueError, binascii.Error, TypeError, KeyError, IndexError, RecursionError):
        return None
    return last if isinstance(last, str) else None


# --- item lists (-a items=<path>) ---------------------------------------------------------


def list_lines(stream: BinaryIO, source: str) -> Iterator[bytes]:
    """The lines of an item list, each read with a bound (``MAX_LIST_LINE_BYTES``): a longer
    one raises BadInput naming ``source`` and its number before more of it is read."""
    for number in itertools.count(1):
        line = stream.readline(MAX_LIST_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LIST_LINE_BYTES:
            raise BadInput(
                f"{source}, line {number}: a line longer than {MAX_LIST_LINE} characters"
            )
        yield line


def read_item_list(
    lines: Iterable[str | bytes], origin: str, source: str
) -> Iterator[ItemLocation]:
    """The items of an item list: one identifier (looked up on ``origin``) or details URL
    per line (UTF-8, a BOM and CRLF tolerated); blank lines and ``#`` comments skipped;
    each item once.

    Raises BadInput naming ``source`` and the line number at the first bad line. What it
    keeps to list each item once is 16 bytes an item (a digest), not the items.
    """
    seen: set[bytes] = set()
    for number, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"{source}, line {number}: not UTF-8 text") from None
        line = raw.strip().lstrip("\ufeff").strip() if number == 1 else raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > MAX_LIST_LINE:
            raise BadInput(f"{source}, line {number}: a line of {len(line)} characters")
        try:
            if "/" in line:
                item = ItemLocation.from_details_url(line)
            else:
                item = ItemLocation.on(origin, line)
        except BadInput as exc:
            raise BadInput(
                f"{source}, line {number}: {exc} (give an identifier or a details page URL)"
            ) from None
        key = hashlib.blake2b(
            f"{item.origin}\n{item.identifier}".encode(errors="surrogatepass"), digest_size=16
        )
        if key.digest() not in seen:
            seen.add(key.digest())
            yield item
