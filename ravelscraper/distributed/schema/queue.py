"""The queue, the leases and the nodes of a job: :class:`JobData`, with the scripts it runs
(and the run's ledger as :attr:`JobData.ledger`, its start URLs as ``start_urls``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ravelscraper.distributed.schema.keys import JobKeys, hash_text, text
from ravelscraper.distributed.schema.ledger import RunLedger
from ravelscraper.distributed.schema.lua import (
    BATCHED,
    ENTRY_FILES,
    FAIL_ENTRY,
    FAIL_FILES,
    FORGET,
    NOW_MS,
    NUM,
    SETTLE,
    Scripts,
)
from ravelscraper.distributed.schema.startlist import StartUrls

# KEYS dupefilter requests payloads seq activity owners listing
# ARGV fingerprint ('' = dont_filter) json score owner ('' = none) listing ('1': a listing
# entry, queued in `listing`, held back by POP while too many files are pending)
PUSH = (
    NOW_MS
    + """
if ARGV[1] ~= '' and redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
local id = string.format('%014d', incr(KEYS[4], now))
redis.call('HSET', KEYS[3], id, ARGV[2])
redis.call('ZADD', ARGV[5] == '1' and KEYS[7] or KEYS[2], ARGV[3], id)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[6], id, ARGV[4]) end
redis.call('SET', KEYS[5], now)
return 1
"""
)


# Back-pressure: a listing entry may be taken only while the run's pending files, plus what
# the listing entries already leased may add (each counted as an average item's files, or as
# the whole bound before any item was listed), stay below ARGV[3] (0: no bound). So pending
# passes the bound by at most about one item's files. The verdict and its figures are kept
# in the run's hash (listing_held, max_pending, held_pending, held_leased, held_per_item,
# held_changed) when they change, for `scrapy fleet status`; listing_held is 1 only once an
# item was listed (before, one listing entry at a time is pacing, not files piling up).
# Needs NOW_MS and NUM; KEYS as POP.
LISTING_HELD = """
local function listing_held(bound)
  local held, pending, leased, per_item, known = false, 0, 0, 0, false
  if bound > 0 then
    local t = redis.call('HMGET', KEYS[7], 'listed', 'items_listed', 'verified', 'failed')
    local listed, items = num(t[1]), num(t[2])
    pending = listed - num(t[3]) - num(t[4])
    for _, id in ipairs(redis.call('HKEYS', KEYS[6])) do
      if redis.call('HEXISTS', KEYS[3], id) == 1 then leased = leased + 1
      else redis.call('HDEL', KEYS[6], id) end
    end
    per_item = bound
    if items > 0 then per_item, known = math.max(1, math.ceil(listed / items)), true end
    held = pending + leased * per_item >= bound
  end
  local state = (held and known) and '1' or '0'
  local was = redis.call('HMGET', KEYS[8], 'listing_held', 'max_pending')
  if was[1] ~= state or was[2] ~= tostring(bound) then
    redis.call('HSET', KEYS[8], 'listing_held', state, 'max_pending', bound,
               'held_pending', pending, 'held_leased', leased, 'held_per_item', per_item,
               'held_changed', now)
  end
  return held
end
"""


# KEYS requests payloads inflight activity listing listing_leases tally run
# ARGV node max_bytes max_pending
# -> {id, payload} | {id, '', size} for a payload too large to send | {id} if none; false if
# nothing can be taken. The first entry in priority order (then FIFO) of `requests` and
# `listing`; a listing entry only if LISTING_HELD lets it through (files are always taken).
POP = (
    NOW_MS
    + NUM
    + LISTING_HELD
    + """
local key = KEYS[1]
local files = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local lists = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
if #lists > 0 then
  local ls, fs = tonumber(lists[2]), files[2] and tonumber(files[2])
  if #files == 0 or ls < fs or (ls == fs and lists[1] < files[1]) then
    if not listing_held(tonumber(ARGV[3]) or 0) then key = KEYS[5] end
  end
end
local top = redis.call('ZPOPMIN', key)
if #top == 0 then return false end
redis.call('HSET', KEYS[3], top[1], ARGV[1] .. '|' .. top[2])
if key == KEYS[5] and (tonumber(ARGV[3]) or 0) > 0 then
  redis.call('HSET', KEYS[6], top[1], ARGV[1])
end
redis.call('SET', KEYS[4], now)
local size = redis.call('HSTRLEN', KEYS[2], top[1])
if size > tonumber(ARGV[2]) then return {top[1], '', tostring(size)} end
return {top[1], redis.call('HGET', KEYS[2], top[1])}
"""
)


# KEYS inflight payloads attempts activity counters owners / ARGV node id
ACK = NOW_MS + FORGET + "return acked"


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


# An entry refused (malformed, too large, on an origin not allowed): recorded in rejected;
# if it belongs to this run's ledger (its files, or its owner), its files or job fail: never
# dropped. KEYS inflight rejected owners payloads failures tally items item_records activity
# ARGV node id reason -> what failed ('file', 'job' or '')
REJECT = (
    NOW_MS
    + BATCHED
    + SETTLE
    + FAIL_FILES
    + ENTRY_FILES
    + FAIL_ENTRY
    + """
local why = 'rejected: ' .. ARGV[3]
local failed = fail_entry(ARGV[2], why, KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SET', KEYS[9], now)
return failed
"""
)


# Requeue the leases of nodes that stopped heart-beating; an entry held by max_attempts
# dead nodes is given up, and its files (or job) fail in the ledger. A malformed lease
# (no "<node>|<score>") belongs to no live node: it is requeued like a dead node's.
# KEYS nodes inflight requests attempts dead activity counters owners payloads failures tally
#      items item_records / ARGV max_attempts
RECLAIM = (
    NOW_MS
    + BATCHED
    + SETTLE
    + FAIL_FILES
    + ENTRY_FILES
    + FAIL_ENTRY
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
      local why = 'given up: ' .. tries .. ' nodes stopped while holding it (RAVEL_MAX_ATTEMPTS)'
      fail_entry(id, why, KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13])
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


# The history of each node's counters, for `scrapy fleet serve`'s chart: bounded in length
# (about an hour of 5 nodes at the default RAVEL_HEARTBEAT) and in time.
HISTORY_MAXLEN = 10_000


HISTORY_TTL_MS = 3_600_000


# KEYS nodes history / ARGV node ttl_ms [files failed bytes maxlen history_ttl_ms]
# -> 1 if the node was not registered (new, or declared dead). With its counters, the node's
# sample is appended to the history in the same step.
HEARTBEAT = (
    NOW_MS
    + """
local new = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if #ARGV >= 7 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'node', ARGV[1], 'files', ARGV[3],
             'failed', ARGV[4], 'bytes', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
return new
"""
)


# KEYS requests inflight start_urls activity nodes dead rejected counters tally run listing
SNAPSHOT = (
    NOW_MS
    + NUM
    + """
local last = num(redis.call('GET', KEYS[4]))
local t = redis.call('HMGET', KEYS[9], 'listed', 'verified', 'failed', 'bytes_listed',
                     'bytes_verified', 'jobs_failed', 'items_listed', 'items_done')
local c = redis.call('HMGET', KEYS[8], 'acked', 'reclaimed')
local r = redis.call('HMGET', KEYS[10], 'id', 'state', 'listing_held', 'max_pending')
local listing = redis.call('ZCARD', KEYS[11])
return {redis.call('ZCARD', KEYS[1]) + listing, redis.call('HLEN', KEYS[2]),
        redis.call('LLEN', KEYS[3]),
        now - last, redis.call('ZCOUNT', KEYS[5], now, '+inf'), redis.call('HLEN', KEYS[6]),
        redis.call('HLEN', KEYS[7]), num(c[1]), num(c[2]), num(t[1]), num(t[2]), num(t[3]),
        num(t[4]), num(t[5]), num(t[6]), num(r[1]), r[2] == 'open' and 1 or 0, last,
        num(t[7]), num(t[8]), listing, num(r[3]), num(r[4])}
"""
)


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
    "items_listed",
    "items_done",
    "listing_queued",  # of queued: listing entries, held back while listing_held
    "listing_held",  # 1 while the last pop found listing held back (RAVEL_FLEET_MAX_PENDING)
    "max_pending",  # the bound the nodes apply (0: none), as the last pop saw it
)


class JobData:
    """One job's queue, leases and nodes, and reads of the whole job, on behalf of ``node``
    ("" for the command line). Its run's ledger is :attr:`ledger`, its start URLs
    :attr:`start_urls`."""

    def __init__(self, client: Any, keys: JobKeys, node: str = "") -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self.ledger = RunLedger(client, keys, node)
        self.start_urls = StartUrls(client, keys)
        self.scripts = Scripts(
            client,
            {
                "push": PUSH,
                "pop": POP,
                "ack": ACK,
                "nack": NACK,
                "reject": REJECT,
                "reclaim": RECLAIM,
                "heartbeat": HEARTBEAT,
                "snapshot": SNAPSHOT,
            },
        )

    # --- the queue and the leases ----------------------------------------------------------

    def queued(self) -> int:
        return int(self.client.zcard(self.keys.requests)) + int(
            self.client.zcard(self.keys.listing)
        )

    def push(
        self,
        payload: bytes,
        priority: int,
        fingerprint: str = "",
        owner: str = "",
        listing: bool = False,
    ) -> bool:
        """Queue an entry unless ``fingerprint`` was seen in this run; the two in one step.
        A ``listing`` entry (a search page, an item's /metadata) waits in ``listing``, held
        back while too many files are pending (:meth:`pop`)."""
        k = self.keys
        return bool(
            self.scripts(
                "push",
                [k.dupefilter, k.requests, k.payloads, k.seq, k.activity, k.owners, k.listing],
                [fingerprint, payload, -priority, owner, "1" if listing else ""],
            )
        )

    def pop(self, max_bytes: int, max_pending: int = 0) -> tuple[str, bytes | int | None] | None:
        """Lease the first entry: ``(id, payload)``; the payload is None if it is missing, its
        size (an int) if it is larger than ``max_bytes``: then it is never sent. A listing entry
        is skipped while the run's pending files reach ``max_pending`` (0: no bound)."""
        k = self.keys
        found = self.scripts(
            "pop",
            [
                k.requests,
                k.payloads,
                k.inflight,
                k.activity,
                k.listing,
                k.listing_leases,
                k.tally,
                k.run,
            ],
            [self.node, max_bytes, max_pending],
        )
        if not found:
            return None
        if len(found) > 2:
            return text(found[0]), int(found[2])
        return text(found[0]), (found[1] if len(found) > 1 else None) or None

    def ack(self, entry_id: str) -> bool:
        """Done: forget the entry. False if the lease was lost (the node was declared dead)."""
        return bool(self.scripts("ack", self.keys.ack_keys(), [self.node, entry_id]))

    def nack(self, entry_ids: list[str]) -> int:
        """Hand leases back to the queue, e.g. when the node stops."""
        if not entry_ids:
            return 0
        k = self.keys
        return int(self.scripts("nack", [k.inflight, k.requests], [self.node, *entry_ids]))

    def reject(self, entry_id: str, reason: str) -> str:
        """Forget a bad entry and record why in ``rejected``; the files it holds, or the job it
        belongs to in the run's ledger, fail: returns ``file``, ``job`` or "" (an entry of no
        job: forged)."""
        k = self.keys
        found = self.scripts(
            "reject",
            [k.inflight, k.rejected, *k.fail_owner_keys(), k.activity],
            [self.node, entry_id, reason[:500]],
        )
        return text(found or "")

    # --- the nodes -------------------------------------------------------------------------

    def heartbeat(self, ttl_ms: int, sample: NodeSample | None = None) -> bool:
        """Say this node is alive for ``ttl_ms``; True if it was not registered before.
        ``sample``, this node's counters, goes to the job's ``history`` in the same step."""
        args: list[Any] = [self.node, ttl_ms]
        if sample is not None:
            args += [sample.files, sample.failed, sample.bytes, HISTORY_MAXLEN, HISTORY_TTL_MS]
        return bool(self.scripts("heartbeat", [self.keys.nodes, self.keys.history], args))

    def leave(self, sample: NodeSample | None = None) -> None:
        """Sign off; ``sample``, this node's final counters, goes to the job's ``history``
        first, so the files done since its last heartbeat are not missing there."""
        pipe = self.client.pipeline(transaction=True)
        if sample is not None:
            history = self.keys.history
            fields = {"node": self.node, "files": sample.files, "failed": sample.failed}
            pipe.xadd(history, {**fields, "bytes": sample.bytes}, maxlen=HISTORY_MAXLEN)
            pipe.pexpire(history, HISTORY_TTL_MS)
        pipe.zrem(self.keys.nodes, self.node)
        pipe.execute()

    def reclaim(self, max_attempts: int) -> tuple[int, int]:
        """Requeue the leases of nodes whose heartbeat expired: ``(requeued, given up)``."""
        k = self.keys
        moved, dead = self.scripts(
            "reclaim",
            [
                k.nodes,
                k.inflight,
                k.requests,
                k.attempts,
                k.dead,
                k.activity,
                k.counters,
                *k.fail_owner_keys(),
            ],
            [max_attempts],
        )
        return int(moved), int(dead)

    def redis_now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def live_nodes(self) -> list[str]:
        """The nodes whose heartbeat has not expired (an expired one is not live)."""
        found = self.client.zrangebyscore(self.keys.nodes, self.redis_now_ms(), "+inf")
        return sorted(text(n) for n in found)

    # --- the whole job ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, int]:
        """The job's counts, read atomically (``SNAPSHOT_FIELDS``, and ``pending``)."""
        k = self.keys
        values = self.scripts(
            "snapshot",
            [
                k.requests,
                k.inflight,
                k.start_urls,
                k.activity,
                k.nodes,
                k.dead,
                k.rejected,
                k.counters,
                k.tally,
                k.run,
                k.listing,
            ],
            [],
        )
        state = dict(zip(SNAPSHOT_FIELDS, (int(v) for v in values), strict=True))
        state["pending"] = max(0, state["listed"] - state["verified"] - state["failed"])
        return state

    def strings(self, key: str) -> dict[str, str]:
        """A hash of the job (``run``, ``tally``, ``items``, ``failures``...) as text."""
        return hash_text(self.client, key)

    def reset(self) -> int:
        """Delete every key of the job; how many existed."""
        return int(self.client.delete(*self.keys.all()))


@dataclass(frozen=True)
class NodeSample:
    """A node's own counters since it started, sent with each heartbeat (``history``)."""

    files: int  # files done: downloaded, already up to date or failed
    failed: int
    bytes: int  # bytes of the files downloaded or already up to date

    @classmethod
    def of(cls, stats: Any) -> NodeSample:
        """The counters in a crawler's stats (``ravel/*``)."""

        def count(name: str) -> int:
            return int(stats.get_value(f"ravel/{name}", 0) or 0)

        failed = count("files_failed")
        return cls(
            files=count("files_downloaded") + count("files_uptodate") + failed,
            failed=failed,
            bytes=count("bytes_downloaded") + count("bytes_uptodate"),
        )
