"""A reliable scrapy-redis queue: entries are leased, not popped, until the node acknowledges them.

Stock scrapy-redis pops destructively: a request in flight on a node that dies is lost.
Here a pop moves the entry to ``inflight`` under the node's name; the node acknowledges it once
the request and everything it produced (child requests queued, file stored) is done. A node
that stops heart-beating loses its leases to whichever node runs ``reclaim`` next. Each
operation is one Lua script, so nodes never see a half-done state. Standalone Redis >= 5.
"""

from __future__ import annotations

from typing import Any

from scrapy import Request, Spider
from scrapy_redis.queue import Base

from ravelscraper.distributed.keys import JobKeys

NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS dupefilter requests payloads seq activity / ARGV fingerprint ('' = dont_filter) json score
PUSH = (
    NOW_MS
    + """
if ARGV[1] ~= '' and redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local id = string.format('%014d', redis.call('INCR', KEYS[4]))
redis.call('HSET', KEYS[3], id, ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], id)
redis.call('SET', KEYS[5], now)
return 1
"""
)

# KEYS requests payloads inflight activity / ARGV node
POP = (
    NOW_MS
    + """
local top = redis.call('ZPOPMIN', KEYS[1])
if #top == 0 then return false end
redis.call('HSET', KEYS[3], top[1], ARGV[1] .. '|' .. top[2])
redis.call('SET', KEYS[4], now)
return {top[1], redis.call('HGET', KEYS[2], top[1])}
"""
)

# KEYS inflight payloads attempts activity counters / ARGV node id
ACK = (
    NOW_MS
    + """
local lease = redis.call('HGET', KEYS[1], ARGV[2])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HINCRBY', KEYS[5], 'acked', 1)
redis.call('SET', KEYS[4], now)
return 1
"""
)

# KEYS inflight requests / ARGV node id...  (a node that stops hands its leases back)
NACK = """
local n = 0
for i = 2, #ARGV do
  local lease = redis.call('HGET', KEYS[1], ARGV[i])
  if lease and string.sub(lease, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[2], string.sub(lease, #ARGV[1] + 2), ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS inflight payloads rejected / ARGV node id reason
REJECT = """
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# KEYS nodes inflight requests attempts dead activity counters / ARGV max_attempts
RECLAIM = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local leases = redis.call('HGETALL', KEYS[2])
local moved, dead = 0, 0
for i = 1, #leases, 2 do
  local id, lease = leases[i], leases[i + 1]
  local bar = string.find(lease, '|', 1, true)
  local node = string.sub(lease, 1, bar - 1)
  if not redis.call('ZSCORE', KEYS[1], node) then
    redis.call('HDEL', KEYS[2], id)
    if redis.call('HINCRBY', KEYS[4], id, 1) >= tonumber(ARGV[1]) then
      redis.call('HSET', KEYS[5], id, node)
      dead = dead + 1
    else
      redis.call('ZADD', KEYS[3], string.sub(lease, bar + 1), id)
      moved = moved + 1
    end
  end
end
if moved + dead > 0 then
  redis.call('SET', KEYS[6], now)
  redis.call('HINCRBY', KEYS[7], 'reclaimed', moved)
end
return {moved, dead}
"""
)

# KEYS nodes / ARGV node ttl_ms  -> 1 if the node was not registered (new, or declared dead)
HEARTBEAT = NOW_MS + "return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])"

# KEYS requests inflight start_urls activity nodes dead rejected counters
SNAPSHOT = (
    NOW_MS
    + """
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
return {redis.call('ZCARD', KEYS[1]), redis.call('HLEN', KEYS[2]), redis.call('LLEN', KEYS[3]),
        now - last, redis.call('ZCOUNT', KEYS[5], now, '+inf'), redis.call('HLEN', KEYS[6]),
        redis.call('HLEN', KEYS[7]), tonumber(redis.call('HGET', KEYS[8], 'acked') or '0'),
        tonumber(redis.call('HGET', KEYS[8], 'reclaimed') or '0')}
"""
)

# KEYS requests inflight start_urls dupefilter attempts counters: forget this run's fingerprints
# once nothing is waiting or leased, so that a re-run lists the item again.
FINISH = """
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('HLEN', KEYS[2]) > 0
   or redis.call('LLEN', KEYS[3]) > 0 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HINCRBY', KEYS[6], 'runs_finished', 1)
return 1
"""

SNAPSHOT_FIELDS = (
    "queued",
    "inflight",
    "start_urls",
    "quiet_ms",
    "live_nodes",
    "dead",
    "rejected",
    "acked",
    "reclaimed",
)


def snapshot(server: Any, keys: JobKeys) -> dict[str, int]:
    """The job's counts, read atomically (also used by ``python -m ravelscraper.distributed``)."""
    values = server.eval(
        SNAPSHOT,
        8,
        keys.requests,
        keys.inflight,
        keys.start_urls,
        keys.activity,
        keys.nodes,
        keys.dead,
        keys.rejected,
        keys.counters,
    )
    return dict(zip(SNAPSHOT_FIELDS, (int(v) for v in values), strict=True))


class ReliableQueue(Base):
    """Priority queue with leases; ``SCHEDULER_QUEUE_CLASS`` for :class:`RavelScheduler`."""

    def __init__(
        self,
        server: Any,
        spider: Spider,
        key: str,
        serializer: Any = None,
        *,
        keys: JobKeys,
        node: str,
    ) -> None:
        super().__init__(server, spider, key, serializer)
        self.keys = keys
        self.node = node
        self.scripts = {
            name: server.register_script(source)
            for name, source in {
                "push": PUSH,
                "pop": POP,
                "ack": ACK,
                "nack": NACK,
                "reject": REJECT,
                "reclaim": RECLAIM,
                "heartbeat": HEARTBEAT,
                "finish": FINISH,
            }.items()
        }

    def __len__(self) -> int:
        return int(self.server.zcard(self.keys.requests))

    def push(self, request: Request, fingerprint: str | None = None) -> bool:  # type: ignore[override]
        """Queue ``request`` unless its fingerprint was seen in this run (one atomic step)."""
        k = self.keys
        pushed = self.scripts["push"](
            keys=[k.dupefilter, k.requests, k.payloads, k.seq, k.activity],
            args=[fingerprint or "", self._encode_request(request), -request.priority],
        )
        return bool(pushed)

    def pop(self, timeout: int = 0) -> tuple[str, bytes | None] | None:  # type: ignore[override]
        """Lease the first entry: ``(id, payload)``; the payload is None if it is missing."""
        k = self.keys
        found = self.scripts["pop"](
            keys=[k.requests, k.payloads, k.inflight, k.activity], args=[self.node]
        )
        if not found:
            return None
        entry_id, payload = found[0], found[1] if len(found) > 1 else None
        return _text(entry_id), payload or None

    def ack(self, entry_id: str) -> bool:
        """Done: forget the entry. False if the lease was lost (the node was declared dead)."""
        k = self.keys
        return bool(
            self.scripts["ack"](
                keys=[k.inflight, k.payloads, k.attempts, k.activity, k.counters],
                args=[self.node, entry_id],
            )
        )

    def nack(self, entry_ids: list[str]) -> int:
        """Hand leases back to the queue, e.g. when the node stops."""
        if not entry_ids:
            return 0
        k = self.keys
        return int(
            self.scripts["nack"](keys=[k.inflight, k.requests], args=[self.node, *entry_ids])
        )

    def reject(self, entry_id: str, reason: str) -> None:
        k = self.keys
        self.scripts["reject"](
            keys=[k.inflight, k.payloads, k.rejected], args=[self.node, entry_id, reason[:500]]
        )

    def reclaim(self, max_attempts: int) -> tuple[int, int]:
        """Requeue the leases of nodes whose heartbeat expired: ``(requeued, given up)``."""
        k = self.keys
        moved, dead = self.scripts["reclaim"](
            keys=[k.nodes, k.inflight, k.requests, k.attempts, k.dead, k.activity, k.counters],
            args=[max_attempts],
        )
        return int(moved), int(dead)

    def heartbeat(self, ttl_ms: int) -> bool:
        """Say this node is alive for ``ttl_ms``; True if it was not registered before."""
        return bool(self.scripts["heartbeat"](keys=[self.keys.nodes], args=[self.node, ttl_ms]))

    def leave(self) -> None:
        self.server.zrem(self.keys.nodes, self.node)

    def snapshot(self) -> dict[str, int]:
        return snapshot(self.server, self.keys)

    def finish_run(self) -> bool:
        """Forget the run's fingerprints if nothing is waiting or leased; True if done now."""
        k = self.keys
        return bool(
            self.scripts["finish"](
                keys=[k.requests, k.inflight, k.start_urls, k.dupefilter, k.attempts, k.counters]
            )
        )

    def clear(self) -> None:
        raise RuntimeError(
            "a fleet queue is shared: reset it with `python -m ravelscraper.distributed reset`"
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
