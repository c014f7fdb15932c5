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
from typing import Any, Self

from redis import RedisError
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.queue import NOW_MS

logger = logging.getLogger(__name__)

# KEYS cap queue waiting seq / ARGV token limit ttl_ms wait_ttl_ms -> 1 if the token got a place.
# Waiting tokens are served in ticket order, whichever node they come from.
ACQUIRE = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, lapsed in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[2], lapsed)
  redis.call('ZREM', KEYS[3], lapsed)
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 and redis.call('ZRANK', KEYS[2], ARGV[1]) < free then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
return 0
"""
)
# KEYS cap / ARGV ttl_ms token...
RENEW = (
    NOW_MS
    + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
return #ARGV - 1
"""
)
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
        self.acquire_script: Any = None
        self.renew_script: Any = None
        self.fleet.on_heartbeat.append(self.renew)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        limit = settings.getint("RAVEL_FLEET_MAX_TRANSFERS")
        if limit <= 0:
            raise NotConfigured
        return cls(
            crawler,
            limit,
            lease_ttl=max(5.0, settings.getfloat("RAVEL_FLEET_LEASE_TTL")),
            wait_timeout=max(1.0, settings.getfloat("RAVEL_FLEET_WAIT_TIMEOUT")),
        )

    def scripts(self) -> tuple[Any, Any]:
        if self.acquire_script is None:
            client = self.fleet.client
            self.acquire_script = client.register_script(ACQUIRE)
            self.renew_script = client.register_script(RENEW)
        return self.acquire_script, self.renew_script

    async def process_request(self, request: Request) -> None:
        if not request.url.startswith(("http://", "https://")) or not self.fleet.connected:
            return
        assert self.fleet.keys is not None
        token = f"{self.fleet.node}:{uuid.uuid4().hex}"
        keys = self.fleet.keys
        acquire, _ = self.scripts()
        started = monotonic()
        while True:
            try:
                acquired = acquire(
                    keys=[
                        keys.fleetcap,
                        keys.fleetcap_queue,
                        keys.fleetcap_waiting,
                        keys.fleetcap_seq,
                    ],
                    args=[token, self.limit, self.lease_ttl_ms, WAITING_TTL_MS],
                )
            except RedisError as exc:  # wait for Redis, within the fleet's grace period
                if self.fleet.trouble(exc):
                    raise IgnoreRequest(f"fleet cap: Redis failed ({type(exc).__name__})") from None
                acquired = False
            if acquired:
                break
            if monotonic() - started > self.wait_timeout:
                self.fleet.client.zrem(keys.fleetcap_queue, token)
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
        assert self.fleet.keys is not None
        try:
            self.fleet.client.zrem(self.fleet.keys.fleetcap, held[0])
        except RedisError as exc:  # the lease expires by itself
            logger.warning(f"[fleet] could not return a fleet-cap lease: {type(exc).__name__}")

    def renew(self) -> None:
        """Extend the leases of transfers still running (called with each heartbeat)."""
        if not self.held:
            return
        # A lease older than a download may last was lost track of: let it expire.
        oldest = monotonic() - self.crawler.settings.getfloat("DOWNLOAD_TIMEOUT", 180) - 60
        for request_id, (_, taken) in list(self.held.items()):
            if taken < oldest:
                del self.held[request_id]
        tokens = [token for token, _ in self.held.values()]
        if tokens:
            assert self.fleet.keys is not None
            _, renew = self.scripts()
            renew(keys=[self.fleet.keys.fleetcap], args=[self.lease_ttl_ms, *tokens])
