"""A cap on simultaneous transfers to archive.org across the whole fleet, shared through Redis.

``DOWNLOAD_DELAY`` and ``CONCURRENT_REQUESTS_PER_DOMAIN`` hold per node; with N nodes the
archive sees N times as much. :class:`FleetTransferCap` (a downloader middleware, after
retries and redirects so that each hop, the 302 and the storage-node transfer, counts) takes
a lease from a Redis semaphore before each HTTP request and returns it with the response.
Leases expire (``RAVEL_FLEET_LEASE_TTL``, renewed with each heartbeat), so a killed node's
places come back by themselves. A lease is taken before the request waits for its slot's
delay, so the cap is conservative: never exceeded, sometimes not reached.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from time import monotonic
from typing import Self

from redis import RedisError
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.schema.places import TransferPlaces
from ravelscraper.logtags import FLEET

logger = logging.getLogger(__name__)

POLL = (0.05, 0.15)  # seconds between attempts, at random in this range
WAITING_TTL_MS = 5000  # a waiting token not polled for this long gives its turn away


class FleetTransferCap:
    """``RAVEL_FLEET_MAX_TRANSFERS`` simultaneous HTTP transfers across all nodes."""

    def __init__(self, crawler: Crawler, limit: int, lease_ttl: float, wait_timeout: float):
        self.crawler = crawler
        self.fleet = Fleet.of(crawler)
        self.limit = limit
        self.lease_ttl_ms = int(lease_ttl * 1000)
        self.wait_timeout = wait_timeout
        self.held: dict[int, tuple[str, float]] = {}  # id(request) -> (token, taken at)
        self.places: TransferPlaces | None = None  # once the fleet is connected
        self.fleet.on_heartbeat.append(self.renew)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        limit = settings.getint("RAVEL_FLEET_MAX_TRANSFERS")
        if limit <= 0:
            raise NotConfigured
        # Their lowest values are checked before the crawl (ravelscraper/checks.py).
        return cls(
            crawler,
            limit,
            lease_ttl=settings.getfloat("RAVEL_FLEET_LEASE_TTL"),
            wait_timeout=settings.getfloat("RAVEL_FLEET_WAIT_TIMEOUT"),
        )

    def transfer_places(self) -> TransferPlaces:
        if self.places is None:
            assert self.fleet.keys is not None
            self.places = TransferPlaces(self.fleet.client, self.fleet.keys)
        return self.places

    async def process_request(self, request: Request) -> None:
        if not request.url.startswith(("http://", "https://")) or not self.fleet.connected:
            return
        token = f"{self.fleet.node}:{uuid.uuid4().hex}"
        places = self.transfer_places()
        started = monotonic()
        while True:
            try:
                if places.acquire(token, self.limit, self.lease_ttl_ms, WAITING_TTL_MS):
                    break
            except RedisError as exc:  # the node's outage policy: carry on within the grace
                if self.fleet.redis_failed(exc):
                    raise IgnoreRequest(f"fleet cap: Redis failed ({type(exc).__name__})") from None
            if monotonic() - started > self.wait_timeout:
                places.stop_waiting(token)
                raise IgnoreRequest(
                    f"fleet cap: no transfer place within {self.wait_timeout:.0f} s "
                    "(RAVEL_FLEET_WAIT_TIMEOUT)"
                )
            await asyncio.sleep(random.uniform(*POLL))  # noqa: S311 - jitter, not crypto
        waited = monotonic() - started
        if waited >= 1:
            self.crawler.stats.inc_value("ravel/fleet_cap_wait_seconds", round(waited, 1))
        self.held[id(request)] = (token, monotonic())

    def process_response(self, request: Request, response: Response) -> Response:
        self.release(request)
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        self.release(request)

    def release(self, request: Request) -> None:
        held = self.held.pop(id(request), None)
        if held is None or not self.fleet.connected:
            return
        try:
            self.transfer_places().release(held[0])
        except RedisError as exc:  # the lease expires by itself
            logger.warning(f"{FLEET} could not return a fleet-cap lease: {type(exc).__name__}")

    def renew(self) -> None:
        """Extend the leases of transfers still running (called with each heartbeat)."""
        if not self.held:
            return
        # A lease older than a download may last was lost track of: let it expire.
        oldest = monotonic() - self.crawler.settings.getfloat("DOWNLOAD_TIMEOUT") - 60
        for request_id, (_, taken) in list(self.held.items()):
            if taken < oldest:
                del self.held[request_id]
        tokens = [token for token, _ in self.held.values()]
        if tokens:
            self.transfer_places().renew(self.lease_ttl_ms, tokens)
