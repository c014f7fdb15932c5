"""The fleet-wide transfer cap's semaphore (``RAVEL_FLEET_MAX_TRANSFERS``):
:class:`TransferPlaces`, for ``ravelscraper.distributed.fleetcap``."""

from __future__ import annotations

from typing import Any

from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.lua import NOW_MS, Scripts

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


class TransferPlaces:
    """The fleet-wide transfer cap: a semaphore of expiring places, served in ticket order."""

    def __init__(self, client: Any, keys: JobKeys) -> None:
        self.client = client
        self.keys = keys
        self.scripts = Scripts(client, {"acquire": ACQUIRE, "renew": RENEW})

    def acquire(self, token: str, limit: int, ttl_ms: int, waiting_ttl_ms: int) -> bool:
        """Take a place for ``token`` if one is free and its turn has come; else it waits
        in line (until it stops asking for ``waiting_ttl_ms``)."""
        k = self.keys
        return bool(
            self.scripts(
                "acquire",
                [k.fleetcap, k.fleetcap_queue, k.fleetcap_waiting, k.fleetcap_seq],
                [token, limit, ttl_ms, waiting_ttl_ms],
            )
        )

    def renew(self, ttl_ms: int, tokens: list[str]) -> int:
        """Extend the places held by ``tokens`` (those that still hold one)."""
        return int(self.scripts("renew", [self.keys.fleetcap], [ttl_ms, *tokens]))

    def release(self, token: str) -> None:
        self.client.zrem(self.keys.fleetcap, token)

    def stop_waiting(self, token: str) -> None:
        self.client.zrem(self.keys.fleetcap_queue, token)
