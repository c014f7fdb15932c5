"""What the fleet's components of one crawl share: settings, this node's id, the Redis client."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any
from weakref import WeakKeyDictionary

from scrapy import Spider
from scrapy.crawler import Crawler

from ravelscraper.distributed.connection import connect
from ravelscraper.distributed.keys import JobKeys, job_prefix
from ravelscraper.distributed.queue import ReliableQueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetSettings:
    prefix: str  # RAVEL_REDIS_PREFIX, "%(spider)s" -> "ravel"
    heartbeat: float  # seconds between heartbeats (and reclaim passes)
    node_ttl: float  # a node silent this long is dead: its leases are requeued
    idle_quiet: float  # the fleet must have been idle this long before a node exits
    wait_for_work: float  # 0: crawl own item; > 0: wait this long for work; < 0: forever
    max_attempts: int  # an entry held by this many dead nodes is given up
    max_leases: int  # entries one node holds at once
    redis_grace: float  # seconds of failing Redis calls a node rides out before it stops

    @classmethod
    def from_settings(cls, settings: Any) -> FleetSettings:
        per_node = settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN", 2)
        return cls(
            prefix=settings.get("RAVEL_REDIS_PREFIX") or "%(spider)s",
            heartbeat=max(0.2, settings.getfloat("RAVEL_HEARTBEAT", 2.0)),
            node_ttl=max(1.0, settings.getfloat("RAVEL_NODE_TTL", 20.0)),
            idle_quiet=max(0.0, settings.getfloat("RAVEL_IDLE_QUIET", 3.0)),
            wait_for_work=settings.getfloat("RAVEL_WAIT_FOR_WORK", 0.0),
            max_attempts=max(1, settings.getint("RAVEL_MAX_ATTEMPTS", 5)),
            max_leases=max(1, settings.getint("RAVEL_NODE_MAX_LEASES", 0) or per_node),
            redis_grace=max(0.0, settings.getfloat("RAVEL_REDIS_GRACE", 30.0)),
        )


def new_node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Fleet:
    """One per crawler: :meth:`open` connects (the scheduler calls it first)."""

    _instances: WeakKeyDictionary[Crawler, Fleet] = WeakKeyDictionary()

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.settings = FleetSettings.from_settings(crawler.settings)
        self.node = new_node_id()
        self.client: Any = None
        self.where = ""
        self.keys: JobKeys | None = None
        self.queue: ReliableQueue | None = None
        self.error: str | None = None  # why Redis cannot be used, once open() failed
        self.down_since: float | None = None  # first failed call of the current outage
        self.on_heartbeat: list[Callable[[], None]] = []  # e.g. renewing fleet-cap leases

    @classmethod
    def of(cls, crawler: Crawler) -> Fleet:
        fleet = cls._instances.get(crawler)
        if fleet is None:
            fleet = cls._instances[crawler] = cls(crawler)
        return fleet

    def trouble(self, exc: Exception) -> bool:
        """Count a failed Redis call; True once Redis has failed for ``RAVEL_REDIS_GRACE`` s.

        A restart of Redis (with persistence, as the README advises) is ridden out: the node
        keeps its leases and transfers, and carries on when Redis answers again.
        """
        now = monotonic()
        if self.down_since is None:
            self.down_since = now
            logger.warning(
                f"[fleet] Redis at {self.where} failed ({type(exc).__name__}); "
                f"retrying for up to {self.settings.redis_grace:.0f} s"
            )
        return now - self.down_since >= self.settings.redis_grace

    def recovered(self) -> None:
        """A Redis call succeeded: the outage, if any, is over."""
        if self.down_since is not None:
            logger.info(
                f"[fleet] Redis at {self.where} answers again after "
                f"{monotonic() - self.down_since:.1f} s"
            )
            self.down_since = None

    @property
    def connected(self) -> bool:
        return self.queue is not None

    def open(self, spider: Spider, serializer: Any) -> ReliableQueue:
        """Connect and build the queue; raises FleetUnavailable (one line, no password)."""
        self.client, self.where = connect(self.crawler.settings)
        self.keys = JobKeys.for_prefix(job_prefix(self.settings.prefix, spider.name))
        self.queue = ReliableQueue(
            self.client,
            spider,
            self.keys.requests,
            serializer,
            keys=self.keys,
            node=self.node,
        )
        self.queue.heartbeat(int(self.settings.node_ttl * 1000))
        return self.queue
