"""The fake archive.org's collections and its scrape API (``/services/search/v1/scrape``).

Shaped like the real one (see /work/wt/brief/issue10-research.md §1): ``q``, ``fields``
(comma-separated), ``count`` (100 to 10000, else an error envelope), ``cursor``,
``total_only``; ``sorts`` and ``scope`` are accepted and ignored (items always come in
ascending identifier order). The answer is ``{"items": [...], "count": n, "total": T,
"cursor": "..."}``, without ``cursor`` on the last page, with ``previous`` when a cursor was
given, and ``total: null`` for zero hits. Errors are ``{"error": "..."}`` with HTTP 200. The
cursor is base64 of ``[{"identifier": "<last identifier of the page>"}]``: stateless, it
can be sent again.

Queries: terms ``field:value``, ``field:"quoted value"`` or ``field:[low TO high]`` joined by
``AND``; the first terms may be grouped in parentheses, ``(a AND b) AND c``. ``identifier``,
``collection`` and ``mediatype`` match exactly (``collection`` any of the item's); any other
field (``creator``, ``title``...) matches when the value is contained, case-insensitively, in
one of the item's values. A range (archive.org's search help: inclusive ``[]``, ``null`` or
``*`` for an open bound) matches when one of the item's values, a search field such as
``oai_updatedate`` or a metadata field, is within it; dates compare as ISO strings, so
``[2022-05-01 TO null]`` takes ``2022-05-01T10:00:00Z``. Anything else (``OR``, ``NOT``, other
parentheses, a bare word) answers ``{"error": "cannot parse query ..."}``.

Knobs (``server.py``'s config):

- ``collections``: ``{"<name>": {"items": N, "files": 3, "size": 1024, "revision": 0,
  "change_every": 0, "members": [...]}}``. ``items`` makes ``<name>-00001`` ... lazily
  (nothing is built until asked for: 10,000 items cost no memory up front), each with
  ``files`` mp3s of ``size`` bytes; ``members`` puts identifiers of the catalogue in the
  collection (for the search only: their /metadata is unchanged). Raising ``items`` adds
  items. ``change_every: K`` with ``revision: R`` rewrites the first file of every K-th item
  (K=100: 1 %): new bytes, md5, sha1, mtime, hence a new ``item_last_updated`` and
  ``oai_updatedate``.
- ``revisions``: ``{"<generated identifier>": R}``, the same for one item.
- ``scrape``: the scrape API misbehaving, as archive.org has: ``{"loop_at": "<id>",
  "loop_to": "<id>"}`` answers the cursor of ``loop_to`` where a page's cursor would follow
  ``loop_at`` (the cursor loops back: pages FIRST->X, X->Y, Y->X); ``"omit": ["collection",
  ...]`` leaves those fields out of every hit; ``"total": N`` announces N hits whatever
  the count.

Search fields: ``identifier``, ``mediatype``, ``collection`` (list), ``title``, ``creator``,
``oai_updatedate`` (a sorted list of ISO dates whose newest is the item's
``item_last_updated``), ``item_size`` (as /metadata says it).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .catalog import Item, synthetic_item

MIN_COUNT, MAX_COUNT, DEFAULT_COUNT = 100, 10_000, 5000
WIDTH = 5  # gen-00001: identifiers sort as their numbers do (up to 99,999 items)
GENERATED = re.compile(r"(?P<name>.+)-(?P<number>[0-9]{5,})")
TERM = re.compile(r'\s*(?P<field>[a-z_]+):(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"()]+))\s*')
RANGE = re.compile(r"\s*(?P<field>[a-z_]+):\[(?P<low>[^\s\[\]]+) TO (?P<high>[^\s\[\]]+)\]\s*")
GROUP = re.compile(r"\s*\((?P<inner>[^()]*)\)(?P<rest>\s+AND\s+.*)?", re.DOTALL)
OPEN_BOUNDS = frozenset({"null", "*"})
EXACT_FIELDS = frozenset({"identifier", "collection", "mediatype"})
DAY = 86400


class QueryError(ValueError):
    """A query or parameter the fake does not take: answered as an error envelope."""


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    items: int = 0
    files: int = 3
    size: int = 1024
    revision: int = 0
    change_every: int = 0
    members: tuple[str, ...] = ()

    @classmethod
    def parse(cls, name: str, raw: Mapping[str, Any]) -> CollectionSpec:
        unknown = set(raw) - {"items", "files", "size", "revision", "change_every", "members"}
        if unknown:
            raise ValueError(f"collection {name!r}: unknown keys {sorted(unknown)}")
        spec = cls(
            name,
            int(raw.get("items", 0)),
            int(raw.get("files", 3)),
            int(raw.get("size", 1024)),
            int(raw.get("revision", 0)),
            int(raw.get("change_every", 0)),
            tuple(str(m) for m in raw.get("members") or ()),
        )
        if not 0 <= spec.items < 10**WIDTH or spec.files < 1 or spec.size < 1:
            raise ValueError(f"collection {name!r}: items 0..99999, files and size >= 1")
        return spec

    def identifier(self, number: int) -> str:
        return f"{self.name}-{number:0{WIDTH}d}"

    def identifiers(self) -> Iterator[str]:
        return (self.identifier(n) for n in range(1, self.items + 1))

    def revision_of(self, number: int) -> int:
        every = self.change_every
        return self.revision if every > 0 and number % every == 0 else 0


@lru_cache(maxsize=4096)
def generated_item(spec: CollectionSpec, number: int, revision: int) -> Item:
    """Item ``number`` of a generated collection, its first file at ``revision``."""
    identifier = spec.identifier(number)
    item = synthetic_item(identifier, spec.files, spec.size)
    base = 1650000000 + number
    files = []
    for entry in item.files:
        entry = replace(entry, mtime=base if entry.is_audio else base + 1)
        if revision and entry.name.startswith("track") and not files:
            entry = replace(entry, revision=revision, mtime=base + revision * DAY)
        files.append(entry)
    metadata = {**item.metadata, "collection": [spec.name], "publicdate": iso(base)}
    return replace(item, files=tuple(files), metadata=metadata, created=base)


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ScrapeQuirks:
    """The knob ``scrape``: how the scrape API misbehaves (nothing by default)."""

    loop_at: str = ""
    loop_to: str = ""
    omit: frozenset[str] = frozenset()
    total: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ScrapeQuirks:
        unknown = set(raw) - {"loop_at", "loop_to", "omit", "total"}
        if unknown:
            raise ValueError(f"scrape: unknown keys {sorted(unknown)}")
        total = raw.get("total")
        return cls(
            str(raw.get("loop_at") or ""),
            str(raw.get("loop_to") or ""),
            frozenset(str(f) for f in raw.get("omit") or ()),
            None if total is None else int(total),
        )


class Catalog:
    """The fixed catalogue plus the generated collections: ``get`` builds on demand."""

    def __init__(self, items: Mapping[str, Item], config: Mapping[str, Any]) -> None:
        self.items = dict(items)
        raw = config.get("collections") or {}
        self.collections = {name: CollectionSpec.parse(name, spec) for name, spec in raw.items()}
        self.revisions = {str(k): int(v) for k, v in (config.get("revisions") or {}).items()}
        self.quirks = ScrapeQuirks.parse(config.get("scrape") or {})
        self.members: dict[str, set[str]] = {}  # identifier -> the knob's collections
        for spec in self.collections.values():
            for member in spec.members:
                self.members.setdefault(member, set()).add(spec.name)

    def get(self, identifier: str) -> Item | None:
        item = self.items.get(identifier)
        if item is not None:
            return item
        found = GENERATED.fullmatch(identifier)
        spec = self.collections.get(found["name"]) if found else None
        if spec is None or found is None or len(found["number"]) != WIDTH:
            return None
        number = int(found["number"])
        if not 1 <= number <= spec.items:
            return None
        revision = self.revisions.get(identifier, spec.revision_of(number))
        return generated_item(spec, number, revision)

    def __contains__(self, identifier: str) -> bool:
        return self.get(identifier) is not None

    # --- search ---------------------------------------------------------------------------

    def collections_of(self, item: Item) -> list[str]:
        value = item.metadata.get("collection") or []
        own = [value] if isinstance(value, str) else [str(v) for v in value]
        return own + sorted(self.members.get(item.identifier, set()) - set(own))

    def candidates(self, terms: list[tuple[str, str]]) -> Iterator[str]:
        """Identifiers that may match, in ascending order, without building items."""
        for field, value in terms:
            if field == "identifier":
                return iter([value])
            if field == "collection" and value in self.collections:
                spec = self.collections[value]
                static = sorted(m for m in spec.members if m in self.items)
                return heapq.merge(static, spec.identifiers())
        generated = [spec.identifiers() for spec in self.collections.values()]
        return heapq.merge(sorted(self.items), *generated)

    def matches(self, item: Item, terms: list[tuple[str, str]]) -> bool:
        return all(self.term_matches(item, field, value) for field, value in terms)

    def term_matches(self, item: Item, field: str, value: str) -> bool:
        if value.startswith("[") and value.endswith("]"):  # a range, from parse_query
            low, high = value[1:-1].split(" TO ")
            found = self.search_fields(item).get(field, item.metadata.get(field))
            values = found if isinstance(found, list) else [] if found is None else [found]
            return any(in_range(str(v), low, high) for v in values)
        if field == "identifier":
            return item.identifier == value
        if field == "collection":
            return value in self.collections_of(item)
        raw = item.metadata.get(field)
        values = raw if isinstance(raw, list) else [] if raw is None else [raw]
        if field in EXACT_FIELDS:
            return value in [str(v) for v in values]
        return any(value.casefold() in str(v).casefold() for v in values)

    def search_fields(self, item: Item) -> dict[str, Any]:
        dates = {iso(min(f.mtime for f in item.files)), iso(item.last_updated)}
        doc: dict[str, Any] = {
            "identifier": item.identifier,
            "mediatype": item.metadata.get("mediatype", ""),
            "collection": self.collections_of(item),
            "title": item.metadata.get("title", ""),
            "creator": item.metadata.get("creator", ""),
            "oai_updatedate": sorted(dates),
            "item_size": item.item_size,
        }
        return {k: v for k, v in doc.items() if v not in ("", [])}


def in_range(value: str, low: str, high: str) -> bool:
    """Whether ``value`` is within the inclusive range (a date: its first characters)."""
    above = low in OPEN_BOUNDS or value >= low
    below = high in OPEN_BOUNDS or value[: len(high)] <= high
    return above and below


def parse_query(query: str) -> list[tuple[str, str]]:
    """``field:value AND field:"value"`` as (field, value) pairs, a range as (field,
    ``"[low TO high]"``); raises QueryError."""
    terms: list[tuple[str, str]] = []
    text = query.strip()
    grouped = GROUP.fullmatch(text)
    if grouped:  # (a AND b) AND c: the same terms
        text = grouped["inner"].strip() + (grouped["rest"] or "")
    parts = re.split(r"\s+AND\s+", text) if text else []
    for part in parts:
        ranged = RANGE.fullmatch(part)
        if ranged:
            terms.append((ranged["field"], f"[{ranged['low']} TO {ranged['high']}]"))
            continue
        found = TERM.fullmatch(part)
        if not found:
            raise QueryError(f"cannot parse query {query[:200]!r}")
        value = found["quoted"] if found["quoted"] is not None else found["bare"]
        terms.append((found["field"], value))
    if not terms:
        raise QueryError("no query: give q")
    return terms


def encode_cursor(identifier: str) -> str:
    return base64.b64encode(json.dumps([{"identifier": identifier}]).encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        keys = json.loads(base64.b64decode(cursor, validate=True))
        last = keys[0]["identifier"]
    except (ValueError, binascii.Error, TypeError, KeyError, IndexError):
        raise QueryError("invalid cursor") from None
    if not isinstance(last, str):
        raise QueryError("invalid cursor")
    return last


def scrape(catalog: Catalog, params: Mapping[str, list[str]]) -> dict[str, Any]:
    """The answer to one scrape request (an error envelope for a bad one)."""
    try:
        return _scrape(catalog, params)
    except QueryError as exc:
        return {"error": str(exc)}


def _scrape(catalog: Catalog, params: Mapping[str, list[str]]) -> dict[str, Any]:
    def one(name: str, default: str = "") -> str:
        values = params.get(name) or [default]
        return values[-1]

    raw_count = one("count", str(DEFAULT_COUNT))
    if not raw_count.isdigit() or not MIN_COUNT <= int(raw_count) <= MAX_COUNT:
        raise QueryError(f"count must be between {MIN_COUNT} and {MAX_COUNT}")
    count = int(raw_count)
    terms = parse_query(one("q"))
    fields = [f for f in one("fields", "identifier").split(",") if f]
    cursor = one("cursor")
    after = decode_cursor(cursor) if cursor else None
    # A knob collection alone: every candidate matches, so only the page's items are built.
    pinned = len(terms) == 1 and terms[0][0] == "collection" and terms[0][1] in catalog.collections
    total = 0
    page: list[dict[str, Any]] = []
    more = False
    for identifier in catalog.candidates(terms):
        on_page = (after is None or identifier > after) and len(page) < count
        if pinned and identifier not in catalog.items:  # generated: in range, matching
            item = catalog.get(identifier) if on_page else None
        else:
            item = catalog.get(identifier)
            if item is None or not catalog.matches(item, terms):
                continue
        total += 1
        if after is not None and identifier <= after:
            continue
        if len(page) < count:
            assert item is not None
            doc = catalog.search_fields(item)
            wanted = set(fields) - catalog.quirks.omit
            page.append({k: v for k, v in doc.items() if k == "identifier" or k in wanted})
        else:
            more = True
    if one("total_only") == "true":
        return {"items": [], "count": 0, "total": total}
    quirks = catalog.quirks
    total = quirks.total if quirks.total is not None else total
    answer: dict[str, Any] = {"items": page, "count": len(page), "total": total or None}
    if more:
        last = page[-1]["identifier"]
        answer["cursor"] = encode_cursor(quirks.loop_to if last == quirks.loop_at else last)
    if cursor:
        answer["previous"] = cursor
    return answer
