"""The node's part in the fleet: heartbeats, reclaiming dead nodes' entries, start URLs from
Redis, and stopping only when the whole fleet has no work left.

Scrapy closes an idle spider; in a fleet a node is idle whenever the shared queue is empty
for a moment, even though other nodes are still listing or downloading. So on ``spider_idle``
this extension raises ``DontCloseSpider`` until, in one atomic snapshot, nothing is queued,
nothing is leased by any node, no start URL waits, and the fleet has been quiet for
``RAVEL_IDLE_QUIET`` seconds. The engine checks idleness only every 5 s; a 1 s tick wakes it,
so nodes join, and stop, promptly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from time import monotonic
from typing import Any, Self

from redis import RedisError
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, DontCloseSpider
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.defer import deferred_from_coro

from ravelscraper.archive import BadInput, ItemLocation
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.serializer import AllowedOrigins

logger = logging.getLogger(__name__)

TICK = 1.0  # seconds
MAX_START_URLS_PER_TICK = 20


class BadStartUrl(ValueError):
    pass


def start_requests(raw: bytes, spider: Spider, origins: AllowedOrigins) -> list[Request]:
    """The requests listing the item of a start URL, ``{"url": ...}`` or ``{"item": ...}``.

    Built by the spider itself (``RavelSpider.item_requests``).
    """
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise BadStartUrl(
            'not JSON; push {"url": "https://archive.org/details/<identifier>"}'
        ) from None
    if not isinstance(entry, dict) or len(entry) != 1 or not ({"url", "item"} & set(entry)):
        raise BadStartUrl('expected {"url": "<details page>"} or {"item": "<identifier>"}')
    try:
        if "url" in entry:
            location = ItemLocation.from_details_url(str(entry["url"]))
        else:
            location = ItemLocation.on(spider.settings["RAVEL_ORIGIN"], str(entry["item"]))
    except BadInput as exc:
        raise BadStartUrl(str(exc)) from None
    if location.origin not in origins:
        raise BadStartUrl(
            f"origin {location.origin} is not allowed (allowed: {origins.describe()}; "
            "add it to RAVEL_ALLOWED_ORIGINS)"
        )
    return spider.item_requests(location)  # type: ignore[attr-defined]


class FleetCoordinator:
    """Extension installed by the add-on when ``REDIS_URL`` is set."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.fleet = Fleet.of(crawler)
        self.loop: Any = None
        self.last_heartbeat = 0.0
        self.closed = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        extension = cls(crawler)
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self, spider: Spider) -> None:
        if self.fleet.error:
            raise CloseSpider("redis_unavailable")  # the scheduler logged why, in one line
        if not self.fleet.connected:
            return
        self.last_heartbeat = monotonic()
        self.loop = create_looping_call(self.tick)
        self.loop.start(TICK, now=False)

    def spider_closed(self, spider: Spider, reason: str) -> None:
        self.closed = True
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    def tick(self) -> None:
        """Heartbeat and reclaim every ``RAVEL_HEARTBEAT`` s; start URLs; wake the engine."""
        engine_slot = getattr(self.crawler.engine, "_slot", None)
        if self.closed or engine_slot is None or engine_slot.closing is not None:
            return
        try:
            if monotonic() - self.last_heartbeat >= self.fleet.settings.heartbeat:
                self.heartbeat()
            self.take_start_urls()
            self.fleet.recovered()
        except RedisError as exc:
            if self.redis_trouble(exc):
                deferred_from_coro(
                    self.crawler.engine.close_spider_async(reason="redis_unavailable")
                )
                return
        engine_slot.nextcall.schedule()

    def heartbeat(self) -> None:
        queue, settings = self.fleet.queue, self.fleet.settings
        assert queue is not None
        self.last_heartbeat = monotonic()
        if queue.heartbeat(int(settings.node_ttl * 1000)):
            logger.warning(
                "[fleet] this node had been presumed dead (no heartbeat for RAVEL_NODE_TTL); "
                "its entries went to other nodes"
            )
        for renew in self.fleet.on_heartbeat:
            renew()
        moved, dead = queue.reclaim(settings.max_attempts)
        if moved:
            logger.warning(f"[fleet] requeued {moved} entries of nodes that stopped heart-beating")
        if dead:
            logger.error(
                f"[fleet] gave up {dead} entries after {settings.max_attempts} nodes died "
                "holding them; see `python -m ravelscraper.distributed status`"
            )

    def take_start_urls(self) -> int:
        """Queue the details pages pushed onto ``<prefix>:start_urls`` (removed once queued)."""
        client, keys, spider = self.fleet.client, self.fleet.keys, self.crawler.spider
        assert keys is not None and spider is not None
        taken = 0
        origins = AllowedOrigins.for_spider(spider)
        for _ in range(MAX_START_URLS_PER_TICK):
            raw = client.lindex(keys.start_urls, 0)
            if raw is None:
                break
            try:
                requests = start_requests(raw, spider, origins)
            except BadStartUrl as exc:
                # Several nodes may read the same entry: the one that removes it reports it.
                if client.lrem(keys.start_urls, 1, raw):
                    ident = "start_url:" + hashlib.sha1(raw).hexdigest()[:12]  # noqa: S324
                    logger.error(f"[fleet] rejected {keys.start_urls} entry {raw[:100]!r}: {exc}")
                    self.crawler.stats.inc_value("ravel/entries_rejected")
                    client.hset(keys.rejected, ident, str(exc)[:500])
                continue
            logger.info(f"[fleet] start URL from {keys.start_urls}: {requests[0].url}")
            # Queued in Redis before it is removed; a second node queuing it too is
            # stopped by the shared dupefilter.
            for request in requests:
                self.crawler.engine.crawl(request)
            taken += 1
            client.lrem(keys.start_urls, 1, raw)
        return taken

    def spider_idle(self, spider: Spider) -> None:
        """Keep the node open while the fleet has work; let it close once it has none."""
        queue = self.fleet.queue
        if queue is None or self.closed:
            return
        try:
            if self.take_start_urls():
                raise DontCloseSpider
            state = queue.snapshot()
        except RedisError as exc:
            if self.redis_trouble(exc):
                raise CloseSpider("redis_unavailable") from None
            raise DontCloseSpider from None
        if not self.fleet_done(state):
            raise DontCloseSpider
        finished_now = queue.finish_run()
        if state["dead"]:
            self.crawler.stats.set_value("ravel/entries_dead", state["dead"])
            logger.error(
                f"[fleet] {state['dead']} entries were given up; "
                "see `python -m ravelscraper.distributed status`"
            )
        logger.info(
            f"[fleet] no work left in the fleet ({state['acked']} entries done in this job"
            + (", run closed: a re-run lists its items again" if finished_now else "")
            + "); this node stops"
        )

    def fleet_done(self, state: dict[str, int]) -> bool:
        if state["queued"] or state["inflight"] or state["start_urls"]:
            return False
        wait = self.fleet.settings.wait_for_work
        if wait < 0:
            return False
        quiet = state["quiet_ms"] / 1000
        return quiet >= (wait if wait > 0 else self.fleet.settings.idle_quiet)

    def redis_trouble(self, exc: Exception) -> bool:
        """A failed Redis call; True once the node should give up (after the grace period)."""
        if not self.fleet.trouble(exc):
            return False
        message = f"[fleet] Redis at {self.fleet.where} unavailable for too long; stopping"
        logger.error(message)
        self.crawler.stats.set_value("ravel/error", message)
        return True
