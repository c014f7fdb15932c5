"""Start URLs from Redis: users push ``{"url": "<details page>"}`` or ``{"item": "<identifier>"}``
onto ``<prefix>:start_urls`` (scrapy-redis's JSON start URLs, plus ``item``), a plain details
page URL or identifier (scrapy-redis's own plain-string convention, ``redis-cli lpush``), or a
whole collection or search, ``{"collection": "<identifier>"}`` or ``{"search": "<query>"}``; a node
checks each one and queues the spider's own requests for it (an item's listing requests, or
a search's first page). An entry is removed only once its
requests are queued, so a node that dies meanwhile loses nothing; a refused one is removed
and recorded in ``<prefix>:rejected`` by whichever node removes it first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from scrapy import Request, Spider
from scrapy.crawler import Crawler

from ravelscraper.archive.metadata import BadInput, ItemLocation, check_identifier
from ravelscraper.archive.search import collection_query
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.fleetspider import FleetSpider
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.serializer import MAX_QUERY
from ravelscraper.logtags import FLEET

logger = logging.getLogger(__name__)

MAX_START_URLS_PER_TICK = 20


class BadStartUrl(ValueError):
    """A start URL refused; the message says why, in one line."""


@dataclass(frozen=True)
class SearchJob:
    """A collection (``collection`` its identifier) or a search (``collection`` "")."""

    query: str
    collection: str = ""


START_KEYS = {"url", "item", "collection", "search"}
EXPECTED = (
    "expected a details page URL or an identifier (plain text, scrapy-redis's way), "
    '{"url": "<details page>"}, {"item": "<identifier>"}, '
    '{"collection": "<identifier>"} or {"search": "<query>"}'
)


def check_query(query: str) -> str:
    """An archive.org query as a fleet job takes it; raises BadInput."""
    query = query.strip()
    if not query:
        raise BadInput("an empty search")
    if len(query.encode(errors="surrogatepass")) > MAX_QUERY or not query.isprintable():
        raise BadInput(f"a search must be one line of at most {MAX_QUERY} bytes")
    return query


def search_entry_job(entry: dict[str, str]) -> SearchJob:
    """The job of a ``collection`` or ``search`` entry; raises BadInput."""
    if "collection" in entry:
        identifier = check_identifier(entry["collection"])
        return SearchJob(collection_query(identifier), identifier)
    return SearchJob(check_query(entry["search"]))


def start_requests(raw: bytes, spider: FleetSpider, origins: AllowedOrigins) -> list[Request]:
    """The requests of a start URL: an item's listing requests or a search's first page.
    Raises BadStartUrl, and nothing else."""
    try:
        job = start_job(raw, spider, origins)
        if isinstance(job, ItemLocation):
            return spider.item_requests(job)
        return [spider.many.search_request(job.query, None, job.collection)]
    except BadStartUrl:
        raise
    except Exception as exc:
        raise BadStartUrl(f"unusable entry ({type(exc).__name__})") from None


def start_location(raw: bytes, spider: Spider, origins: AllowedOrigins) -> ItemLocation:
    """The item a start URL names, ``{"url": "<details page>"}`` or ``{"item": "<identifier>"}``
    (scrapy-redis's JSON start URLs, ``url`` key, plus ``item``); the spider's own
    ``item_requests`` lists it. Raises BadStartUrl, and nothing else, whatever ``raw`` holds.
    """
    job = start_job(raw, spider, origins)
    if not isinstance(job, ItemLocation):
        raise BadStartUrl("a collection or a search, not an item")
    return job


def start_job(raw: bytes, spider: Spider, origins: AllowedOrigins) -> ItemLocation | SearchJob:
    """The item, or the collection or search, a start URL names; raises BadStartUrl, and
    nothing else, whatever ``raw`` holds."""
    try:
        return read_start_url(raw, spider, origins)
    except BadStartUrl:
        raise
    except Exception as exc:  # e.g. RecursionError: one line, never a crash
        raise BadStartUrl(f"unreadable entry ({type(exc).__name__})") from None


def plain_start_url(raw: bytes) -> str | None:
    """The text of a plain start URL, scrapy-redis's own convention (``redis-cli lpush
    ravel:start_urls https://archive.org/details/<id>``, or a bare identifier): one printable
    line that is not a JSON object. None for anything else (read as JSON)."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not text or text.startswith("{") or not text.isprintable():
        return None
    return text


def read_start_url(raw: bytes, spider: Spider, origins: AllowedOrigins) -> ItemLocation | SearchJob:
    plain = plain_start_url(raw)
    if plain is not None:
        try:
            if "/" in plain:
                location = ItemLocation.from_details_url(plain)
            else:
                location = ItemLocation.on(spider.settings["RAVEL_ORIGIN"], plain)
        except BadInput as exc:
            raise BadStartUrl(f"{str(exc)[:300]}; {EXPECTED}") from None
        return allowed(location, origins)
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadStartUrl(
            "not JSON; push https://archive.org/details/<identifier> or "
            '{"url": "https://archive.org/details/<identifier>"}'
        ) from None
    if (
        not isinstance(entry, dict)
        or len(entry) != 1
        or not set(entry) <= START_KEYS
        or not all(isinstance(v, str) for v in entry.values())
    ):
        raise BadStartUrl(EXPECTED)
    try:
        if {"collection", "search"} & set(entry):
            return search_entry_job(entry)
        if "url" in entry:
            location = ItemLocation.from_details_url(entry["url"])
        else:
            location = ItemLocation.on(spider.settings["RAVEL_ORIGIN"], entry["item"])
    except BadInput as exc:
        raise BadStartUrl(str(exc)[:300]) from None
    return allowed(location, origins)


def allowed(location: ItemLocation, origins: AllowedOrigins) -> ItemLocation:
    """``location``, if its origin is one this crawl may fetch; raises BadStartUrl."""
    if location.origin not in origins:
        raise BadStartUrl(
            f"origin {location.origin[:200]!r} is not allowed (allowed: {origins.describe()}; "
            "add it to RAVEL_ALLOWED_ORIGINS)"
        )
    return location


class StartUrlFeed:
    """Queues the requests of the start URLs waiting in Redis (the coordinator calls it)."""

    def __init__(self, crawler: Crawler, fleet: Fleet) -> None:
        self.crawler = crawler
        self.fleet = fleet
        self.max_start_url_bytes = crawler.settings.getint("RAVEL_MAX_START_URL_BYTES")
        # Start URLs whose requests Redis refused to queue (they wait in the scheduler's
        # ``unsent``): they stay in the list until those are queued.
        self.queued_later: list[bytes] = []

    def take(self) -> int:
        """Queue the details pages pushed onto ``<prefix>:start_urls`` (removed once queued)."""
        assert self.fleet.data is not None  # connected: the coordinator ticks
        data, spider = self.fleet.data, self.crawler.spider
        keys = data.keys
        assert spider is not None
        taken = 0
        unsent: list = getattr(self.fleet.scheduler, "unsent", [])
        while self.queued_later:
            if unsent:
                return 0  # not queued yet: take nothing more meanwhile
            data.start_urls.drop(self.queued_later[0])
            self.queued_later.pop(0)
        origins = AllowedOrigins.for_spider(spider)
        for _ in range(MAX_START_URLS_PER_TICK):
            head = data.start_urls.take(self.max_start_url_bytes)
            if head is None:
                break
            kind, raw = head
            if kind != "ok":
                self.crawler.stats.inc_value("ravel/entries_rejected")
                logger.error(
                    f"{FLEET} rejected a {keys.start_urls} entry of {raw} bytes: larger than "
                    f"RAVEL_MAX_START_URL_BYTES ({self.max_start_url_bytes})"
                )
                continue
            assert isinstance(raw, bytes)
            try:
                requests = start_requests(raw, self.fleet.spider, origins)
            except BadStartUrl as exc:
                # Several nodes may read the same entry: the one that removes it reports it.
                if data.start_urls.reject(raw, str(exc)):
                    logger.error(f"{FLEET} rejected {keys.start_urls} entry {raw[:100]!r}: {exc}")
                    self.crawler.stats.inc_value("ravel/entries_rejected")
                continue
            logger.info(f"{FLEET} start URL from {keys.start_urls}: {requests[0].url[:300]!r}")
            # Queued in Redis before it is removed; a second node queuing it too is
            # stopped by the shared dupefilter.
            waiting = len(unsent)
            for request in requests:
                self.crawler.engine.crawl(request)
            taken += 1
            if self.fleet.stopped:  # the node gave up on Redis: the start URL stays
                break
            if len(unsent) > waiting:  # Redis refused them: kept until it queues them
                self.queued_later.append(raw)
                break
            data.start_urls.drop(raw)
        return taken
