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
from ravelscraper.distributed.serializer import MAX_ENTRY_BYTES

NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) " + (
    # Counters written by hand (not an integer) are repaired, never a failing script.
    """
local function whole(v) return v ~= nil and v == math.floor(v) and math.abs(v) < 2^53 end
local function hincr(key, field, by)
  if not whole(tonumber(redis.call('HGET', key, field))) then redis.call('HSET', key, field, 0) end
  return redis.call('HINCRBY', key, field, by)
end
local function incr(key, restart)
  if not whole(tonumber(redis.call('GET', key))) then redis.call('SET', key, restart - 1) end
  return redis.call('INCR', key)
end
"""
)
# Every number read back from Redis goes through num(): a malformed value counts as 0.
NUM = "local function num(v) return tonumber(v) or 0 end "

# KEYS dupefilter requests payloads seq activity owners
# ARGV fingerprint ('' = dont_filter) json score owner ('' = none)
PUSH = (
    NOW_MS
    + """
if ARGV[1] ~= '' and redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local id = string.format('%014d', incr(KEYS[4], now))
redis.call('HSET', KEYS[3], id, ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], id)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[6], id, ARGV[4]) end
redis.call('SET', KEYS[5], now)
return 1
"""
)

# KEYS requests payloads inflight activity / ARGV node max_bytes
# -> {id, payload} | {id, '', size} for a payload too large to send | {id} if none
POP = (
    NOW_MS
    + """
local top = redis.call('ZPOPMIN', KEYS[1])
if #top == 0 then return false end
redis.call('HSET', KEYS[3], top[1], ARGV[1] .. '|' .. top[2])
redis.call('SET', KEYS[4], now)
local size = redis.call('HSTRLEN', KEYS[2], top[1])
if size > tonumber(ARGV[2]) then return {top[1], '', tostring(size)} end
return {top[1], redis.call('HGET', KEYS[2], top[1])}
"""
)

# Forget an acknowledged entry (ARGV[1] node, ARGV[2] id); sets `acked`.
# KEYS inflight payloads attempts activity counters owners
FORGET = """
local acked = 0
local lease = redis.call('HGET', KEYS[1], ARGV[2])
if lease and string.sub(lease, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[6], ARGV[2])
  hincr(KEYS[5], 'acked', 1)
  redis.call('SET', KEYS[4], now)
  acked = 1
end
"""

# KEYS inflight payloads attempts activity counters owners / ARGV node id
ACK = NOW_MS + FORGET + "return acked"

# A file's outcome, recorded once (pending -> verified | failed), and its entry acknowledged.
# The outcome is recorded even if the lease was lost: it is still true.
# KEYS inflight payloads attempts activity counters owners files failures tally
# ARGV node id path outcome reason size identifier
COMPLETE = (
    NOW_MS
    + FORGET
    + """
if redis.call('HGET', KEYS[7], ARGV[3]) == 'pending' then
  redis.call('HSET', KEYS[7], ARGV[3], ARGV[4])
  hincr(KEYS[9], ARGV[4], 1)
  hincr(KEYS[9], ARGV[4] .. ':' .. ARGV[7], 1)
  if ARGV[4] == 'verified' then
    hincr(KEYS[9], 'bytes_verified', tonumber(ARGV[6]) or 0)
  else
    redis.call('HSET', KEYS[8], ARGV[3], ARGV[5])
  end
  redis.call('SET', KEYS[4], now)
end
return acked
"""
)

# The files of one item enter the ledger as pending; one spelling per case-folded path.
# KEYS files names tally items activity failures / ARGV identifier (path fold size)...
# -> {path, other spelling, ...} for the names refused (recorded as failed)
LIST = (
    NOW_MS
    + """
local refused = {}
local ident = ARGV[1]
if string.sub(redis.call('HGET', KEYS[4], ident) or '', 1, 6) ~= 'failed' then
  redis.call('HSET', KEYS[4], ident, 'listed')
end
for i = 2, #ARGV, 3 do
  local path, fold, size = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]) or 0
  local other = redis.call('HGET', KEYS[2], fold)
  local new = not redis.call('HGET', KEYS[1], path)
  if other and other ~= path then
    table.insert(refused, path)
    table.insert(refused, other)
    if new then
      redis.call('HSET', KEYS[1], path, 'failed')
      redis.call('HSET', KEYS[6], path, 'refused the name: it differs only in case from ' .. other)
      for _, field in ipairs({'listed', 'failed'}) do
        hincr(KEYS[3], field, 1)
        hincr(KEYS[3], field .. ':' .. ident, 1)
      end
    end
  else
    if not other then redis.call('HSET', KEYS[2], fold, path) end
    if new then
      redis.call('HSET', KEYS[1], path, 'pending')
      hincr(KEYS[3], 'listed', 1)
      hincr(KEYS[3], 'listed:' .. ident, 1)
      hincr(KEYS[3], 'bytes_listed', size)
    end
  end
end
redis.call('SET', KEYS[5], now)
return refused
"""
)

# A job (an item) that could not be listed. KEYS items tally activity / ARGV identifier reason
ITEM_FAILED = (
    NOW_MS
    + """
if string.sub(redis.call('HGET', KEYS[1], ARGV[1]) or '', 1, 6) == 'failed' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'failed: ' .. ARGV[2])
hincr(KEYS[2], 'jobs_failed', 1)
redis.call('SET', KEYS[3], now)
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
    redis.call('ZADD', KEYS[2], tonumber(string.sub(lease, #ARGV[1] + 2)) or 0, ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS inflight payloads rejected owners / ARGV node id reason
REJECT = """
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"""

# Requeue the leases of nodes that stopped heart-beating; an entry held by max_attempts
# dead nodes is given up, and its file (or item) is failed in the ledger. A malformed lease
# (no "<node>|<score>") belongs to no live node: it is requeued like a dead node's.
# KEYS nodes inflight requests attempts dead activity counters owners files failures tally
#      items / ARGV max_attempts
RECLAIM = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local leases = redis.call('HGETALL', KEYS[2])
local moved, dead = 0, 0
for i = 1, #leases, 2 do
  local id, lease = leases[i], leases[i + 1]
  local bar = string.find(lease, '|', 1, true)
  local node, score = '', 0
  if bar then
    node = string.sub(lease, 1, bar - 1)
    score = tonumber(string.sub(lease, bar + 1)) or 0
  end
  if node == '' or not redis.call('ZSCORE', KEYS[1], node) then
    redis.call('HDEL', KEYS[2], id)
    local tries = hincr(KEYS[4], id, 1)
    if tries >= tonumber(ARGV[1]) then
      redis.call('HSET', KEYS[5], id, node)
      dead = dead + 1
      local owner = redis.call('HGET', KEYS[8], id) or ''
      local why = 'given up: ' .. tries .. ' nodes stopped while holding it (RAVEL_MAX_ATTEMPTS)'
      if string.sub(owner, 1, 5) == 'file:' then
        local path = string.sub(owner, 6)
        if redis.call('HGET', KEYS[9], path) == 'pending' then
          local ident = string.match(path, '^[^/]*')
          redis.call('HSET', KEYS[9], path, 'failed')
          redis.call('HSET', KEYS[10], path, why)
          hincr(KEYS[11], 'failed', 1)
          hincr(KEYS[11], 'failed:' .. ident, 1)
        end
      elseif string.sub(owner, 1, 5) == 'item:' then
        local ident = string.sub(owner, 6)
        if string.sub(redis.call('HGET', KEYS[12], ident) or '', 1, 6) ~= 'failed' then
          redis.call('HSET', KEYS[12], ident, 'failed: ' .. why)
          hincr(KEYS[11], 'jobs_failed', 1)
        end
      end
    else
      redis.call('ZADD', KEYS[3], score, id)
      moved = moved + 1
    end
  end
end
if moved + dead > 0 then
  redis.call('SET', KEYS[6], now)
  hincr(KEYS[7], 'reclaimed', moved)
end
return {moved, dead}
"""
)

# KEYS nodes / ARGV node ttl_ms  -> 1 if the node was not registered (new, or declared dead)
HEARTBEAT = NOW_MS + "return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])"

# KEYS requests inflight start_urls activity nodes dead rejected counters tally run
SNAPSHOT = (
    NOW_MS
    + NUM
    + """
local last = num(redis.call('GET', KEYS[4]))
local tally = function(field) return num(redis.call('HGET', KEYS[9], field)) end
return {redis.call('ZCARD', KEYS[1]), redis.call('HLEN', KEYS[2]), redis.call('LLEN', KEYS[3]),
        now - last, redis.call('ZCOUNT', KEYS[5], now, '+inf'), redis.call('HLEN', KEYS[6]),
        redis.call('HLEN', KEYS[7]), num(redis.call('HGET', KEYS[8], 'acked')),
        num(redis.call('HGET', KEYS[8], 'reclaimed')), tally('listed'), tally('verified'),
        tally('failed'), tally('bytes_listed'), tally('bytes_verified'), tally('jobs_failed'),
        num(redis.call('HGET', KEYS[10], 'id')),
        redis.call('HGET', KEYS[10], 'state') == 'open' and 1 or 0, last}
"""
)

# Open a run unless one is open: the previous run's ledger is cleared. -> the run's id
# KEYS run runs files names failures items tally owners activity / ARGV node
OPEN_RUN = (
    NOW_MS
    + """
redis.call('SET', KEYS[9], now)
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  return tonumber(redis.call('HGET', KEYS[1], 'id')) or 0
end
local id = incr(KEYS[2], 1)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HSET', KEYS[1], 'id', id, 'state', 'open', 'opened', now, 'opened_by', ARGV[1])
redis.call('HDEL', KEYS[1], 'closed', 'closed_by')
return id
"""
)

# Close the run once nothing is waiting, leased or pending: forget its fingerprints, so that
# a re-run lists its items again. -> {1} closed now, {0} not idle or not open,
# {-1, pending} files are pending that no entry will ever complete (the queue was lost).
# KEYS requests inflight start_urls dupefilter attempts counters run tally / ARGV node
FINISH = (
    NOW_MS
    + NUM
    + """
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('HLEN', KEYS[2]) > 0
   or redis.call('LLEN', KEYS[3]) > 0 then return {0} end
if redis.call('HGET', KEYS[7], 'state') ~= 'open' then return {0} end
local t = function(field) return num(redis.call('HGET', KEYS[8], field)) end
local pending = t('listed') - t('verified') - t('failed')
if pending > 0 then return {-1, pending} end
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('HSET', KEYS[7], 'state', 'closed', 'closed', now, 'closed_by', ARGV[1])
hincr(KEYS[6], 'runs_finished', 1)
return {1}
"""
)

# The head of the start-URL list; one larger than ARGV[1] bytes is removed and rejected
# without being sent. KEYS start_urls rejected -> false | {'ok', raw} | {'big', size}
TAKE_START_URL = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return false end
if #head <= tonumber(ARGV[1]) then return {'ok', head} end
redis.call('LREM', KEYS[1], 1, head)
redis.call('HSET', KEYS[2], 'start_url:' .. string.sub(redis.sha1hex(head), 1, 12),
           'entry of ' .. #head .. ' bytes is larger than ' .. ARGV[1])
return {'big', tostring(#head)}
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
    "listed",
    "verified",
    "failed",
    "bytes_listed",
    "bytes_verified",
    "jobs_failed",
    "run",
    "run_open",
    "last_activity_ms",
)


def snapshot(server: Any, keys: JobKeys) -> dict[str, int]:
    """The job's counts, read atomically (also used by ``scrapy fleet status``)."""
    values = server.eval(
        SNAPSHOT,
        10,
        keys.requests,
        keys.inflight,
        keys.start_urls,
        keys.activity,
        keys.nodes,
        keys.dead,
        keys.rejected,
        keys.counters,
        keys.tally,
        keys.run,
    )
    state = dict(zip(SNAPSHOT_FIELDS, (int(v) for v in values), strict=True))
    state["pending"] = max(0, state["listed"] - state["verified"] - state["failed"])
    return state


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
                "complete": COMPLETE,
                "list": LIST,
                "item_failed": ITEM_FAILED,
                "nack": NACK,
                "reject": REJECT,
                "reclaim": RECLAIM,
                "heartbeat": HEARTBEAT,
                "open_run": OPEN_RUN,
                "finish": FINISH,
                "take_start_url": TAKE_START_URL,
            }.items()
        }

    def __len__(self) -> int:
        return int(self.server.zcard(self.keys.requests))

    def _encode_request(self, request: Request) -> bytes:
        # A request popped here carries a guarded errback (see scheduler): queue the
        # spider's own method, which is what the entry names.
        original = getattr(request.errback, "ravel_original", None)
        if original is not None:
            request = request.replace(errback=original)
        return super()._encode_request(request)

    def push(  # type: ignore[override]
        self, request: Request, fingerprint: str | None = None, owner: str = ""
    ) -> bool:
        """Queue ``request`` unless its fingerprint was seen in this run (one atomic step).

        ``owner`` (``file:<path>`` or ``item:<identifier>``) says what the ledger fails if
        the entry is ever given up.
        """
        k = self.keys
        pushed = self.scripts["push"](
            keys=[k.dupefilter, k.requests, k.payloads, k.seq, k.activity, k.owners],
            args=[fingerprint or "", self._encode_request(request), -request.priority, owner],
        )
        return bool(pushed)

    def pop(self, timeout: int = 0) -> tuple[str, bytes | int | None] | None:  # type: ignore[override]
        """Lease the first entry: ``(id, payload)``; the payload is None if it is missing, and
        its size (an int) if it is larger than ``MAX_ENTRY_BYTES``: it is never sent."""
        k = self.keys
        found = self.scripts["pop"](
            keys=[k.requests, k.payloads, k.inflight, k.activity],
            args=[self.node, MAX_ENTRY_BYTES],
        )
        if not found:
            return None
        entry_id, payload = found[0], found[1] if len(found) > 1 else None
        if len(found) > 2:
            return _text(entry_id), int(found[2])
        return _text(entry_id), payload or None

    def _ack_keys(self) -> list[str]:
        k = self.keys
        return [k.inflight, k.payloads, k.attempts, k.activity, k.counters, k.owners]

    def ack(self, entry_id: str) -> bool:
        """Done: forget the entry. False if the lease was lost (the node was declared dead)."""
        return bool(self.scripts["ack"](keys=self._ack_keys(), args=[self.node, entry_id]))

    def complete(
        self, entry_id: str, path: str, outcome: str, reason: str = "", size: int = 0
    ) -> bool:
        """Record a file's outcome (``verified`` or ``failed``) and acknowledge its entry
        (``entry_id`` "" for a file that never had one). False if the lease was lost."""
        k = self.keys
        identifier = path.split("/", 1)[0]
        return bool(
            self.scripts["complete"](
                keys=[*self._ack_keys(), k.files, k.failures, k.tally],
                args=[self.node, entry_id, path, outcome, reason[:500], size, identifier],
            )
        )

    def list_files(
        self, identifier: str, files: list[tuple[str, str, int]]
    ) -> list[tuple[str, str]]:
        """Put an item's files ``(path, case-folded path, size)`` in the ledger as pending;
        returns ``(path, other spelling)`` for the names refused as case-only duplicates."""
        k = self.keys
        args: list[str | int] = [identifier]
        for path, folded, size in files:
            args += [path, folded, size]
        found = self.scripts["list"](
            keys=[k.files, k.names, k.tally, k.items, k.activity, k.failures], args=args
        )
        flat = [_text(v) for v in found or []]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def item_failed(self, identifier: str, reason: str) -> bool:
        """Record a job (an item) that could not be listed; True the first time."""
        k = self.keys
        return bool(
            self.scripts["item_failed"](
                keys=[k.items, k.tally, k.activity], args=[identifier, reason[:500]]
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
            keys=[k.inflight, k.payloads, k.rejected, k.owners],
            args=[self.node, entry_id, reason[:500]],
        )

    def reclaim(self, max_attempts: int) -> tuple[int, int]:
        """Requeue the leases of nodes whose heartbeat expired: ``(requeued, given up)``."""
        k = self.keys
        moved, dead = self.scripts["reclaim"](
            keys=[
                k.nodes,
                k.inflight,
                k.requests,
                k.attempts,
                k.dead,
                k.activity,
                k.counters,
                k.owners,
                k.files,
                k.failures,
                k.tally,
                k.items,
            ],
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

    def open_run(self) -> int:
        """The id of the open run, opening a new one (with an empty ledger) if none is."""
        k = self.keys
        return int(
            self.scripts["open_run"](
                keys=[
                    k.run,
                    k.runs,
                    k.files,
                    k.names,
                    k.failures,
                    k.items,
                    k.tally,
                    k.owners,
                    k.activity,
                ],
                args=[self.node],
            )
        )

    def run_id(self) -> int:
        """The current run's id, 0 if there is none (never opened, reset or lost)."""
        value = self.server.hget(self.keys.run, "id")
        try:
            return int(value or 0)
        except ValueError:
            return 0

    def finish_run(self) -> tuple[int, int]:
        """Close the run if nothing is waiting, leased or pending: ``(1, 0)`` if closed now,
        ``(0, 0)`` if not, ``(-1, pending)`` if files are pending that no entry will complete."""
        k = self.keys
        found = self.scripts["finish"](
            keys=[
                k.requests,
                k.inflight,
                k.start_urls,
                k.dupefilter,
                k.attempts,
                k.counters,
                k.run,
                k.tally,
            ],
            args=[self.node],
        )
        return int(found[0]), int(found[1]) if len(found) > 1 else 0

    def take_start_url(self, max_bytes: int) -> tuple[str, bytes | int] | None:
        """The first start URL (``("ok", raw)``), or ``("big", size)`` for one that was too
        large and has been removed and rejected; None if there is none."""
        k = self.keys
        found = self.scripts["take_start_url"](keys=[k.start_urls, k.rejected], args=[max_bytes])
        if not found:
            return None
        kind = _text(found[0])
        return (kind, found[1]) if kind == "ok" else (kind, int(found[1]))

    def failures(self, limit: int = 5) -> tuple[list[tuple[str, str]], int]:
        """Some failed files ``(path, reason)`` (sorted) and how many there are."""
        reasons = self.server.hgetall(self.keys.failures)
        pairs = sorted((_text(p), _text(r)) for p, r in reasons.items())
        return pairs[:limit], len(pairs)

    def failed_items(self, limit: int = 5) -> tuple[list[tuple[str, str]], int]:
        """Some jobs that failed ``(identifier, reason)`` (sorted) and how many there are."""
        states = self.server.hgetall(self.keys.items)
        failed = sorted(
            (_text(i), _text(v).removeprefix("failed: "))
            for i, v in states.items()
            if _text(v).startswith("failed")
        )
        return failed[:limit], len(failed)

    def clear(self) -> None:
        raise RuntimeError("a fleet queue is shared: reset it with `scrapy fleet reset`")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
