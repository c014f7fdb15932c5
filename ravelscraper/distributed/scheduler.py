"""scrapy-redis's scheduler and dupefilter, made safe for a fleet on Scrapy 2.19.

Differences from ``scrapy_redis.scheduler.Scheduler`` (each one a bug or a warning there):

* entries are leased from a :class:`ReliableQueue` and acknowledged only when the request
  and all it produced are done, so a node killed mid-download loses nothing;
* "seen" and "queued" happen in one Lua script; closing never flushes the shared keys
  (``SCHEDULER_PERSIST = False`` and ``SCHEDULER_FLUSH_ON_START`` are refused with a warning);
* entries are JSON, checked before use (:mod:`ravelscraper.distributed.serializer`);
* a node holds at most ``RAVEL_NODE_MAX_LEASES`` entries, so work spreads across nodes;
* no blocking pop, no ping in ``from_crawler``: an unusable Redis is one ERROR line and a
  close with reason ``redis_unavailable``; stats and logging without deprecated calls.
"""

from __future__ import annotations

import logging
from typing import Any, Self

from redis import RedisError
from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.utils.defer import deferred_from_coro
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler

from ravelscraper.distributed import serializer
from ravelscraper.distributed.connection import FleetUnavailable
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.queue import ReliableQueue
from ravelscraper.distributed.serializer import AllowedOrigins, BadEntry, decode

logger = logging.getLogger(__name__)

MAX_REJECTED_PER_CALL = 20  # bad entries skipped in one next_request() call


class RavelDupeFilter(RFPDupeFilter):
    """Fingerprints for the queue's atomic push; never cleared by a closing node."""

    def __init__(self, server: Any = None, key: str = "", debug: bool = False) -> None:
        super().__init__(server, key, debug)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(debug=crawler.settings.getbool("DUPEFILTER_DEBUG"))

    def request_seen(self, request: Request) -> bool:
        raise NotImplementedError("RavelScheduler checks fingerprints inside its queue's push")

    def close(self, reason: str = "") -> None:
        """Nothing: the fingerprints belong to the whole fleet."""

    def log(self, request: Request, spider: Spider) -> None:
        if self.debug or self.logdupes:
            logger.info(
                f"[fleet] already queued or done by the fleet in this run: {request.url[:200]}"
                + ("" if self.debug else " (further duplicates not shown)")
            )
            self.logdupes = self.debug


def in_progress(engine: Any) -> set[Request]:
    """Requests the engine is still working on: downloading, in callbacks or in pipelines.

    A request leaves this set only after its callback's output was handled: child requests
    queued, items through the pipelines (the file stored). Scrapy has no public signal for
    that moment; the engine's slot is where it tracks it.
    """
    slot = getattr(engine, "_slot", None)
    return getattr(slot, "inprogress", set()) if slot is not None else set()


class RavelScheduler(Scheduler):
    """``SCHEDULER`` for a fleet (installed by the add-on when ``REDIS_URL`` is set)."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        super().__init__(
            server=None,
            persist=True,
            flush_on_start=False,
            queue_key="%(spider)s:requests",
            queue_cls=f"{ReliableQueue.__module__}.{ReliableQueue.__qualname__}",
            dupefilter=RavelDupeFilter.from_crawler(crawler),
            serializer=serializer,
        )
        self.crawler = crawler
        self.stats = crawler.stats
        self.fleet = Fleet.of(crawler)
        self.leases: dict[str, Request] = {}
        self.unsent: list[Request] = []  # requests to queue once Redis answers again
        self.origins = AllowedOrigins([])
        self.failed = False
        if not settings.getbool("SCHEDULER_PERSIST", True) or settings.getbool(
            "SCHEDULER_FLUSH_ON_START"
        ):
            logger.warning(
                "[fleet] SCHEDULER_PERSIST=False / SCHEDULER_FLUSH_ON_START ignored: the queue is "
                "shared by the fleet; reset a job with `python -m ravelscraper.distributed reset`"
            )

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        raise TypeError("RavelScheduler needs a crawler: use from_crawler()")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def open(self, spider: Spider) -> None:
        self.spider = spider
        try:
            self.queue = self.fleet.open(spider, self.serializer)
        except FleetUnavailable as exc:
            # Raising here would skip opening the pipelines (and fail their closing): the
            # extension's spider_opened raises CloseSpider("redis_unavailable") instead.
            self.fleet.error = f"[fleet] {exc}"
            logger.error(self.fleet.error)
            self.stats.set_value("ravel/error", self.fleet.error)
            self.failed = True
            return
        self.server = self.fleet.client
        keys = self.fleet.keys
        assert keys is not None
        self.df.server, self.df.key = self.server, keys.dupefilter
        self.origins = AllowedOrigins.for_spider(spider)
        state = self.queue.snapshot()
        logger.info(
            f"[fleet] node {self.fleet.node} joined {self.fleet.where}, keys {keys.prefix}:*"
            f" ({state['queued']} entries queued, {state['inflight']} being worked on, "
            f"{state['live_nodes']} live nodes)"
        )

    def close(self, reason: str) -> None:
        if not self.fleet.connected or self.failed:
            return
        try:
            self.acknowledge_finished()
            handed_back = self.queue.nack(list(self.leases))
            if handed_back:
                logger.info(f"[fleet] handed {handed_back} unfinished entries back to the queue")
            self.leases.clear()
            self.queue.leave()
        except RedisError as exc:
            logger.warning(
                f"[fleet] could not sign off from Redis ({type(exc).__name__}); "
                "other nodes will take this node's entries after RAVEL_NODE_TTL"
            )

    def enqueue_request(self, request: Request) -> bool:
        if self.failed:
            return False
        fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
        try:
            pushed = self.queue.push(request, fingerprint)
        except (BadEntry, TypeError, ValueError) as exc:
            logger.error(f"[fleet] cannot queue {request.url[:200]}: {exc}")
            return False
        except RedisError as exc:
            if self.fleet.trouble(exc):
                self.redis_failed(exc)
                return False
            # Kept here, and the entry that produced it stays leased, until Redis is back.
            self.unsent.append(request)
            return True
        if not pushed:
            self.df.log(request, self.spider)
            return False
        self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def next_request(self) -> Request | None:
        try:
            self.push_unsent()
            self.acknowledge_finished()
            self.fleet.recovered()
            for _ in range(MAX_REJECTED_PER_CALL):
                if self.failed or len(self.leases) >= self.fleet.settings.max_leases:
                    return None
                popped = self.queue.pop()
                if popped is None:
                    return None
                entry_id, payload = popped
                try:
                    request = decode(payload, self.spider, self.origins)
                except BadEntry as exc:
                    self.reject(entry_id, str(exc))
                    continue
                self.leases[entry_id] = request
                self.stats.inc_value("scheduler/dequeued/redis")
                return request
        except RedisError as exc:
            if self.fleet.trouble(exc):
                self.redis_failed(exc)
        return None

    def has_pending_requests(self) -> bool:
        if self.failed:
            return False
        try:
            return bool(self.unsent) or len(self.queue) > 0
        except RedisError as exc:
            if self.fleet.trouble(exc):
                self.redis_failed(exc)
            return False

    def push_unsent(self) -> None:
        """Queue the requests kept while Redis was away (raises RedisError if it still is)."""
        while self.unsent:
            request = self.unsent[0]
            fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
            self.queue.push(request, fingerprint)
            self.unsent.pop(0)

    def acknowledge_finished(self) -> None:
        """Acknowledge the leased entries whose processing is over.

        Not while requests they produced wait in ``unsent``; an entry whose ack fails (Redis
        away) stays leased, to be acknowledged on a later call.
        """
        if not self.leases or self.unsent:
            return
        active = in_progress(self.crawler.engine)
        for entry_id, request in list(self.leases.items()):
            if request in active:
                continue
            acked = self.queue.ack(entry_id)
            del self.leases[entry_id]
            if not acked:
                logger.warning(
                    f"[fleet] lease of {request.url[:100]} was lost (this node missed "
                    "heartbeats for RAVEL_NODE_TTL); another node may process it again"
                )

    def reject(self, entry_id: str, reason: str) -> None:
        logger.error(f"[fleet] rejected queue entry {entry_id}: {reason}")
        self.stats.inc_value("ravel/entries_rejected")
        self.queue.reject(entry_id, reason)

    def redis_failed(self, exc: Exception) -> None:
        """Redis failed for longer than RAVEL_REDIS_GRACE: stop; leases go to others later."""
        if self.failed:
            return
        self.failed = True
        message = (
            f"[fleet] lost Redis at {self.fleet.where} for {self.fleet.settings.redis_grace:.0f} s "
            f"({type(exc).__name__}); stopping"
        )
        logger.error(message)
        self.stats.set_value("ravel/error", message)
        deferred_from_coro(self.crawler.engine.close_spider_async(reason="redis_unavailable"))
