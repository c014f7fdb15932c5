"""What the fleet's components of one crawl share: settings, this node's id, the Redis client,
the job's data, and the node's one policy when Redis fails.

The scheduler, the coordinator (extension) and the fleet cap all report a failed Redis call
to :meth:`Fleet.redis_failed`: within ``RAVEL_REDIS_GRACE`` the node carries on (a restart
of Redis, with persistence, is ridden out); past it, or at once for a key of the wrong type,
the crawl stops with one ERROR line and reason ``redis_unavailable`` (exit 1). Redis refusing
commands (out of memory under ``maxmemory``, an ACL) is failing until a write works again:
reads that work meanwhile don't end it.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from time import monotonic
from typing import Any
from weakref import WeakKeyDictionary

from scrapy import Spider
from scrapy.crawler import Crawler

from ravelscraper.distributed.connection import FleetUnavailable, connect, scrub
from ravelscraper.distributed.fleetspider import FleetSpider, as_fleet_spider
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.queue import ReliableQueue
from ravelscraper.distributed.schema.keys import BadPrefix, JobKeys, job_prefix
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.logtags import FLEET
from ravelscraper.stop import report_fatal, stop_crawl

logger = logging.getLogger(__name__)

REDIS_UNAVAILABLE = "redis_unavailable"  # the close reason when the node gives up on Redis


@dataclass(frozen=True)
class FleetSettings:
    prefix: str  # RAVEL_REDIS_PREFIX, "%(spider)s" -> "ravel"
    heartbeat: float  # seconds between heartbeats (and reclaim passes)
    node_ttl: float  # a node silent this long is dead: its leases are requeued
    idle_quiet: float  # the fleet must have been idle this long before a node exits
    tick: float  # seconds between the coordinator's ticks (start URLs, idleness, totals)
    wait_for_work: float  # 0: crawl own item; > 0: wait this long for work; < 0: forever
    max_attempts: int  # an entry held by this many dead nodes is given up
    max_leases: int  # a node takes entries while it holds fewer files (a page counts as one)
    redis_grace: float  # seconds of failing Redis calls a node rides out before it stops
    max_pending: int = 0  # RAVEL_FLEET_MAX_PENDING: listing waits while more files are pending

    @classmethod
    def from_settings(cls, settings: Any) -> FleetSettings:
        # Defaults live in ravelscraper/settings.py only; their ranges in ravelscraper/checks.py,
        # checked before the crawl starts.
        per_node = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
        return cls(
            prefix=str(settings.get("RAVEL_REDIS_PREFIX")),
            heartbeat=settings.getfloat("RAVEL_HEARTBEAT"),
            node_ttl=settings.getfloat("RAVEL_NODE_TTL"),
            idle_quiet=settings.getfloat("RAVEL_IDLE_QUIET"),
            tick=settings.getfloat("RAVEL_FLEET_TICK"),
            wait_for_work=settings.getfloat("RAVEL_WAIT_FOR_WORK"),
            max_attempts=settings.getint("RAVEL_MAX_ATTEMPTS"),
            max_leases=settings.getint("RAVEL_NODE_MAX_LEASES") or per_node,
            redis_grace=settings.getfloat("RAVEL_REDIS_GRACE"),
            max_pending=settings.getint("RAVEL_FLEET_MAX_PENDING"),
        )


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Fleet:
    """One per crawler (:meth:`of`): :meth:`open` connects (the scheduler calls it first)."""

    by_crawler: WeakKeyDictionary[Crawler, Fleet] = WeakKeyDictionary()

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.settings = FleetSettings.from_settings(crawler.settings)
        self.node = new_node_id()
        self.client: Any = None
        self.where = ""
        self.keys: JobKeys | None = None
        self.data: JobData | None = None
        self.queue: ReliableQueue | None = None
        self.error: str | None = None  # why Redis cannot be used, once open() failed
        self.down_since: float | None = None  # first failed call of the current outage
        # Redis answered but refused a command (out of memory, no permission...): reads that
        # work don't end that outage, only a write does (see recovered)
        self.writes_refused = False
        self.stopped = False  # the node gave up on Redis: the crawl is closing
        self.on_heartbeat: list[Callable[[], None]] = []  # e.g. renewing fleet-cap leases
        self.scheduler: Any = None  # the RavelScheduler: it holds this node's leases
        self.run_seen = 0  # the highest run id this node saw (for the messages)
        self.ledger_seen = ""  # the ledger token of the runs this node saw (RunLedger.token)
        self.joined = monotonic()

    @classmethod
    def of(cls, crawler: Crawler) -> Fleet:
        fleet = cls.by_crawler.get(crawler)
        if fleet is None:
            fleet = cls.by_crawler[crawler] = cls(crawler)
        return fleet

    @cached_property
    def spider(self) -> FleetSpider:
        """The crawl's spider, checked once to be what the fleet needs."""
        return as_fleet_spider(self.crawler.spider)

    # --- the outage policy -----------------------------------------------------------------

    def redis_failed(self, exc: Exception) -> bool:
        """A Redis call failed. False while the node carries on (within ``RAVEL_REDIS_GRACE``);
        True once it gives up: the crawl is then stopping, with one ERROR line.

        A restart of Redis (with persistence, as the README advises) is ridden out: the node
        keeps its leases and transfers, and carries on when Redis answers again.
        """
        from redis import ResponseError

        if self.stopped:
            return True
        if isinstance(exc, ResponseError):
            self.writes_refused = True
        if is_wrong_type(exc):  # no waiting cures a key of the wrong type
            prefix = self.keys.prefix if self.keys else "?"
            self.give_up(
                f"{FLEET} a key under {prefix}:* has the wrong Redis type (WRONGTYPE): another "
                "program uses this prefix or it was written by hand; `scrapy fleet reset` "
                "clears it; stopping"
            )
            return True
        now = monotonic()
        if self.down_since is None:
            self.down_since = now
            logger.warning(
                f"{FLEET} Redis at {self.where} failed ({type(exc).__name__}); "
                f"retrying for up to {self.settings.redis_grace:.0f} s"
            )
        if now - self.down_since < self.settings.redis_grace:
            return False
        # Redis answered with an error (OOM under maxmemory, say): it was not lost.
        how = "Redis refused our commands at" if isinstance(exc, ResponseError) else "lost Redis at"
        self.give_up(
            f"{FLEET} {how} {self.where} for {self.settings.redis_grace:.0f} s "
            f"({type(exc).__name__}); stopping"
        )
        return True

    def give_up(self, message: str) -> None:
        """Stop using Redis for good: always one ERROR line and ``ravel/error``."""
        self.stopped = True
        if self.crawler.engine is not None and self.crawler.engine.running:
            stop_crawl(self.crawler, REDIS_UNAVAILABLE, message)
        else:  # not started, or already closing: there is no crawl left to stop
            report_fatal(self.crawler, message)

    def recovered(self, wrote: bool = False) -> None:
        """A Redis call succeeded (``wrote``: one that writes): the outage, if any, is over.
        Not when Redis refused commands (out of memory...) and this one only read: reads
        work then, and must not reset the grace period while every write fails."""
        if self.down_since is None or self.stopped or (self.writes_refused and not wrote):
            return
        logger.info(
            f"{FLEET} Redis at {self.where} answers again after "
            f"{monotonic() - self.down_since:.1f} s"
        )
        self.down_since = None
        self.writes_refused = False

    # --- joining ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.queue is not None

    def joined_run(self, run: int, ledger: str) -> None:
        """This node saw run ``run`` of ledger ``ledger``. The first ledger seen is kept: a
        later run of another ledger (the data was lost, then a run opened again) is reported
        by the coordinator (``FleetCoordinator.data_lost``)."""
        if not ledger:
            return
        if not self.ledger_seen:
            self.ledger_seen = ledger
        if ledger == self.ledger_seen:
            self.run_seen = max(self.run_seen, run)

    def open(self, spider: Spider, serializer: Any) -> ReliableQueue:
        """Connect and build the queue; raises FleetUnavailable (one line, no password)."""
        from redis import RedisError

        try:
            keys = JobKeys.for_prefix(job_prefix(self.settings.prefix, spider.name))
        except BadPrefix as exc:
            raise FleetUnavailable(str(exc)) from None
        self.client, self.where = connect(self.crawler.settings)
        self.keys = keys
        check_key_types(self.client, keys)
        self.data = JobData(self.client, keys, self.node)
        self.queue = ReliableQueue(
            spider,
            serializer,
            data=self.data,
            origins=AllowedOrigins.for_spider(spider),
            max_pending=self.settings.max_pending,
        )
        try:
            self.data.heartbeat(int(self.settings.node_ttl * 1000))
        except RedisError as exc:  # e.g. an ACL without EVALSHA, or Redis out of memory
            raise FleetUnavailable(refused(self.where, exc, self.crawler.settings)) from None
        return self.queue


def refused(where: str, exc: Exception, settings: Any) -> str:
    """One line for a command Redis refused (NOPERM, OOM...): its own words, no password."""
    said = scrub(str(exc), str(settings.get("REDIS_URL") or ""))[:300]
    hint = ""
    if said.startswith("command not allowed when used memory"):
        hint = "; Redis is out of memory (maxmemory): free some or raise it"
    elif "no permissions" in said:
        hint = "; the Redis user needs EVAL, EVALSHA and the commands on the job's keys"
    return f"Redis at {where} refused this node's commands ({type(exc).__name__}: {said}){hint}"


def check_key_types(client: Any, keys: JobKeys) -> None:
    """Each of the job's keys is missing or of its type; FleetUnavailable (one line) if not."""
    from redis import RedisError

    expected = keys.types()
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in expected:
                pipe.type(key)
            found = pipe.execute()
    except RedisError as exc:
        raise FleetUnavailable(f"cannot read the job's keys ({type(exc).__name__})") from None
    for (key, kind), actual in zip(expected.items(), found, strict=True):
        actual = actual.decode() if isinstance(actual, bytes) else str(actual)
        if actual not in ("none", kind):
            raise FleetUnavailable(
                f"Redis key {key!r} holds a {actual}, not a {kind}: another program uses this "
                "prefix (set RAVEL_REDIS_PREFIX) or it was written by hand (`scrapy fleet reset`)"
            )


def is_wrong_type(exc: Exception) -> bool:
    return str(exc).startswith("WRONGTYPE")
