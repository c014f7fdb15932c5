"""The fleet's data model in Redis: every key of a job, every Lua script, every command on them.

A job's keys all live under one prefix (``RAVEL_REDIS_PREFIX``, ``ravel`` by default), listed
with their types in :class:`JobKeys`. Each change that must look atomic to other nodes is one
Lua script (standalone Redis >= 5; scripts write after ``TIME``, which Redis 5 allows with
effects replication). The classes here run them and the few plain commands, so the order of
``KEYS`` and ``ARGV`` stays next to the scripts that read them: :class:`JobData` the queue,
leases and nodes; :class:`RunLedger` the run's ledger; :class:`StartUrls` the start-URL list;
:class:`TransferPlaces` the fleet-wide transfer cap's semaphore. Nothing here imports Scrapy:
the scripts are tested against a real ``redis-server`` in ``tests/test_redis_schema.py``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, fields
from typing import Any

PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


class BadPrefix(ValueError):
    """``RAVEL_REDIS_PREFIX`` cannot name the job's keys; the message says why, in one line."""


@dataclass(frozen=True)
class JobKeys:
    """Key names; ``reset`` deletes exactly these."""

    requests: str  # ZSET entry id -> -priority: what is waiting
    payloads: str  # HASH entry id -> JSON request
    seq: str  # INCR: entry ids, FIFO within a priority
    dupefilter: str  # SET of fingerprints queued or done in this run
    inflight: str  # HASH entry id -> "<node>|<score>": leased, not yet acknowledged
    attempts: str  # HASH entry id -> times a dead node held it
    dead: str  # HASH entry id -> node: given up after too many attempts
    rejected: str  # HASH entry id -> reason: hostile or malformed entries
    nodes: str  # ZSET node id -> heartbeat expiry (ms, Redis clock)
    activity: str  # STRING: Redis time (ms) of the last enqueue, pop, ack or reclaim
    counters: str  # HASH: acked, reclaimed, runs finished
    start_urls: str  # LIST of JSON {"url": "<details page>"} pushed by users
    fleetcap: str  # ZSET transfer token -> lease expiry (ms): the fleet-wide cap
    fleetcap_queue: str  # ZSET waiting token -> ticket: first come, first served
    fleetcap_waiting: str  # ZSET waiting token -> expiry (ms): a killed node's tickets lapse
    fleetcap_seq: str  # INCR: tickets
    # --- the ledger of the current run ---
    run: str  # HASH id, state (open|closed), opened, closed (ms), ledger: the current run
    # (ledger: a random token, drawn when a run opens without a previous one and kept by the
    # runs after it; a node that finds another token, or none, than it saw: the data was lost)
    runs: str  # INCR: run ids, for people (they start again at 1 after a FLUSHDB)
    files: str  # HASH "<identifier>/<name>" -> pending | verified | failed (until closed)
    names: str  # HASH case-folded path -> path: one spelling per name, fleet-wide (until closed)
    failures: str  # HASH path -> why the file failed
    items: str  # HASH identifier -> listed | done | "failed: <reason>" (a job that failed);
    # a search's job is "search:<query>"
    tally: str  # HASH listed, verified, failed, bytes_listed, bytes_verified (+ ":<id>"),
    # items_listed, items_done, jobs_failed
    item_records: str  # HASH identifier -> JSON [fingerprint, selection, [names]] until done
    owners: str  # HASH entry id -> "file:<path>" or "item:<identifier>"
    # --- what `scrapy fleet serve` shows (ravelscraper.distributed.watch) ---
    history: str  # STREAM node, files, failed, bytes: each node's counters at each heartbeat
    # (HISTORY_MAXLEN entries at most; gone HISTORY_TTL_MS after the last heartbeat)
    # --- back-pressure (RAVEL_FLEET_MAX_PENDING) ---
    listing: str  # ZSET entry id -> -priority: waiting listing entries (search pages and
    # /metadata, serializer.HELD_CALLBACKS), taken only while the run's pending files are
    # below the bound; an entry handed back or reclaimed goes to ``requests`` (always taken)
    listing_leases: str  # HASH entry id -> node: listing entries leased (POP drops stale ones)

    @classmethod
    def for_prefix(cls, prefix: str) -> JobKeys:
        return cls(**{f.name: f"{prefix}:{f.name}" for f in fields(cls)})

    @property
    def prefix(self) -> str:
        return self.requests.rsplit(":", 1)[0]

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]

    def ack_keys(self) -> list[str]:
        """The ``KEYS`` of acknowledging an entry (``FORGET``)."""
        return [
            self.inflight,
            self.payloads,
            self.attempts,
            self.activity,
            self.counters,
            self.owners,
        ]

    def types(self) -> dict[str, str]:
        """The Redis type each key must have when it exists."""
        kinds = {"requests": "zset", "nodes": "zset", "start_urls": "list", "dupefilter": "set"}
        kinds |= {"listing": "zset"}
        kinds |= dict.fromkeys(("fleetcap", "fleetcap_queue", "fleetcap_waiting"), "zset")
        kinds |= dict.fromkeys(("seq", "activity", "fleetcap_seq", "runs"), "string")
        kinds["history"] = "stream"
        return {getattr(self, f.name): kinds.get(f.name, "hash") for f in fields(self)}


def job_prefix(settings_prefix: str, spider_name: str) -> str:
    """``RAVEL_REDIS_PREFIX`` with ``%(spider)s`` replaced: ``ravel`` by default.

    Raises BadPrefix for a value that is not a plain key prefix (a stray ``%``, spaces...).
    """
    try:
        prefix = settings_prefix % {"spider": spider_name}
    except (ValueError, TypeError, KeyError) as exc:
        raise BadPrefix(
            f"RAVEL_REDIS_PREFIX {settings_prefix[:100]!r} is not a valid prefix "
            f"({type(exc).__name__}; write %% for a literal %, %(spider)s for the spider name)"
        ) from None
    if not PREFIX.fullmatch(prefix):
        raise BadPrefix(
            f"RAVEL_REDIS_PREFIX {settings_prefix[:100]!r} gives {prefix[:100]!r}: use 1 to 100 "
            "letters, digits, '_', '.', ':' or '-'"
        )
    return prefix


# --- the queue, the leases and the run's ledger -----------------------------------------

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

# An item whose last listed file just got its outcome is done (once): 1 if every one of its
# files was verified, 2 if some failed, 0 if it is not done now. Its item record's data is
# dropped from item_records either way (returned for 1). Needs NOW_MS's hincr.
SETTLE = """
local function settle(tally, items, records, ident)
  local t = function(f) return tonumber(redis.call('HGET', tally, f .. ':' .. ident)) or 0 end
  local listed = t('listed')
  if listed == 0 or t('verified') + t('failed') < listed then return 0, false end
  if redis.call('HGET', items, ident) ~= 'listed' then return 0, false end
  redis.call('HSET', items, ident, 'done')
  hincr(tally, 'items_done', 1)
  local record = redis.call('HGET', records, ident)
  redis.call('HDEL', records, ident)
  if t('failed') == 0 then return 1, record end
  return 2, false
end
"""

# The owner of an entry that will never be done ("file:<path>", "item:<identifier>" or
# "search:<query>") fails in the ledger, with why: its file if still pending (which may
# settle its item), else its job, once. -> 'file', 'job' or '' (nothing failed here).
# Needs NOW_MS's hincr and SETTLE.
FAIL_OWNER = """
local function fail_owner(owner, why, files, failures, tally, items, records)
  if string.sub(owner, 1, 5) == 'file:' then
    local path = string.sub(owner, 6)
    if redis.call('HGET', files, path) ~= 'pending' then return '' end
    local ident = string.match(path, '^[^/]*')
    redis.call('HSET', files, path, 'failed')
    redis.call('HSET', failures, path, why)
    hincr(tally, 'failed', 1)
    hincr(tally, 'failed:' .. ident, 1)
    settle(tally, items, records, ident)
    return 'file'
  elseif string.sub(owner, 1, 5) == 'item:' or string.sub(owner, 1, 7) == 'search:' then
    local ident = string.sub(owner, 1, 5) == 'item:' and string.sub(owner, 6) or owner
    if string.sub(redis.call('HGET', items, ident) or '', 1, 6) == 'failed' then return '' end
    redis.call('HSET', items, ident, 'failed: ' .. why)
    hincr(tally, 'jobs_failed', 1)
    return 'job'
  end
  return ''
end
"""

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
    local t = function(f) return num(redis.call('HGET', KEYS[7], f)) end
    local listed, items = t('listed'), t('items_listed')
    pending = listed - t('verified') - t('failed')
    for _, id in ipairs(redis.call('HKEYS', KEYS[6])) do
      if redis.call('HEXISTS', KEYS[3], id) == 1 then leased = leased + 1
      else redis.call('HDEL', KEYS[6], id) end
    end
    per_item = bound
    if items > 0 then per_item, known = math.max(1, math.ceil(listed / items)), true end
    held = pending + leased * per_item >= bound
  end
  local state = (held and known) and '1' or '0'
  if redis.call('HGET', KEYS[8], 'listing_held') ~= state
     or redis.call('HGET', KEYS[8], 'max_pending') ~= tostring(bound) then
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
# The outcome is recorded even if the lease was lost: it is still true. The item's last file
# settles the item. KEYS inflight payloads attempts activity counters owners files failures
# tally items item_records / ARGV node id path outcome reason size identifier
# -> {acked, settled (see SETTLE), the item record's data or false}
COMPLETE = (
    NOW_MS
    + SETTLE
    + FORGET
    + """
local settled, record = 0, false
if redis.call('HGET', KEYS[7], ARGV[3]) == 'pending' then
  if ARGV[8] == '0' then redis.call('HDEL', KEYS[11], ARGV[7]) end  -- stored, unverified
  redis.call('HSET', KEYS[7], ARGV[3], ARGV[4])
  hincr(KEYS[9], ARGV[4], 1)
  hincr(KEYS[9], ARGV[4] .. ':' .. ARGV[7], 1)
  if ARGV[4] == 'verified' then
    hincr(KEYS[9], 'bytes_verified', tonumber(ARGV[6]) or 0)
  else
    redis.call('HSET', KEYS[8], ARGV[3], ARGV[5])
  end
  redis.call('SET', KEYS[4], now)
  settled, record = settle(KEYS[9], KEYS[10], KEYS[11], ARGV[7])
end
return {acked, settled, record}
"""
)

# The files of one item enter the ledger as pending; one spelling per case-folded path. The
# item is listed once per run (items_listed); ARGV[2], unless '', is kept in item_records for
# the node that settles its last file. An item whose files all failed here is done at once.
# KEYS files names tally items activity failures item_records
# ARGV identifier record (path fold size)...
# -> {path, other spelling, ...} for the names refused (recorded as failed)
LIST = (
    NOW_MS
    + SETTLE
    + """
local refused = {}
local ident = ARGV[1]
if not redis.call('HGET', KEYS[4], ident) then
  redis.call('HSET', KEYS[4], ident, 'listed')
  hincr(KEYS[3], 'items_listed', 1)
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[7], ident, ARGV[2]) end
end
for i = 3, #ARGV, 3 do
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
settle(KEYS[3], KEYS[4], KEYS[7], ident)
redis.call('SET', KEYS[5], now)
return refused
"""
)

# A job (an item, or a search "search:<query>") that could not be listed, or an item of a
# collection that failed. KEYS items tally activity / ARGV identifier reason
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

# An entry refused (malformed, too large, on an origin not allowed): recorded in rejected;
# if it belongs to this run's ledger (its owner), its file or job fails: never dropped.
# KEYS inflight payloads rejected owners files failures tally items item_records activity
# ARGV node id reason -> what failed ('file', 'job' or '')
REJECT = (
    NOW_MS
    + SETTLE
    + FAIL_OWNER
    + """
local owner = redis.call('HGET', KEYS[4], ARGV[2]) or ''
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('SET', KEYS[10], now)
return fail_owner(owner, 'rejected: ' .. ARGV[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
"""
)

# Requeue the leases of nodes that stopped heart-beating; an entry held by max_attempts
# dead nodes is given up, and its file (or item) is failed in the ledger. A malformed lease
# (no "<node>|<score>") belongs to no live node: it is requeued like a dead node's.
# KEYS nodes inflight requests attempts dead activity counters owners files failures tally
#      items item_records / ARGV max_attempts
RECLAIM = (
    NOW_MS
    + SETTLE
    + FAIL_OWNER
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
      fail_owner(owner, why, KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13])
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
local tally = function(field) return num(redis.call('HGET', KEYS[9], field)) end
local listing = redis.call('ZCARD', KEYS[11])
return {redis.call('ZCARD', KEYS[1]) + listing, redis.call('HLEN', KEYS[2]),
        redis.call('LLEN', KEYS[3]),
        now - last, redis.call('ZCOUNT', KEYS[5], now, '+inf'), redis.call('HLEN', KEYS[6]),
        redis.call('HLEN', KEYS[7]), num(redis.call('HGET', KEYS[8], 'acked')),
        num(redis.call('HGET', KEYS[8], 'reclaimed')), tally('listed'), tally('verified'),
        tally('failed'), tally('bytes_listed'), tally('bytes_verified'), tally('jobs_failed'),
        num(redis.call('HGET', KEYS[10], 'id')),
        redis.call('HGET', KEYS[10], 'state') == 'open' and 1 or 0, last,
        tally('items_listed'), tally('items_done'), listing,
        num(redis.call('HGET', KEYS[10], 'listing_held')),
        num(redis.call('HGET', KEYS[10], 'max_pending'))}
"""
)

# Open a run unless one is open: the previous run's ledger is cleared. The run keeps the
# previous run's ledger token; with none (a new job, or its data lost) it takes ARGV[2], a
# random one. KEYS run runs files names failures items tally owners activity item_records
# ARGV node token -> {the run's id, its ledger token}
OPEN_RUN = (
    NOW_MS
    + """
redis.call('SET', KEYS[9], now)
local ledger = redis.call('HGET', KEYS[1], 'ledger')
if not ledger or ledger == '' then ledger = ARGV[2] end
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  redis.call('HSET', KEYS[1], 'ledger', ledger)
  return {tonumber(redis.call('HGET', KEYS[1], 'id')) or 0, ledger}
end
local id = incr(KEYS[2], 1)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[10])
redis.call('HSET', KEYS[1], 'id', id, 'state', 'open', 'opened', now, 'opened_by', ARGV[1],
           'ledger', ledger)
redis.call('HDEL', KEYS[1], 'closed', 'closed_by', 'listing_held')
return {id, ledger}
"""
)

# Close the run once nothing is waiting, leased or pending: forget its fingerprints, so that
# a re-run lists again the items not recorded, and its per-file states and names (every file
# settled: the tally, the failures and the items keep the run's account). -> {1} closed now,
# {0} not idle or not open,
# {-1, pending} files are pending that no entry will ever complete (the queue was lost).
# KEYS requests inflight start_urls dupefilter attempts counters run tally listing files names
#      listing_leases / ARGV node
FINISH = (
    NOW_MS
    + NUM
    + """
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('HLEN', KEYS[2]) > 0
   or redis.call('LLEN', KEYS[3]) > 0 or redis.call('ZCARD', KEYS[9]) > 0 then return {0} end
if redis.call('HGET', KEYS[7], 'state') ~= 'open' then return {0} end
local t = function(field) return num(redis.call('HGET', KEYS[8], field)) end
local pending = t('listed') - t('verified') - t('failed')
if pending > 0 then return {-1, pending} end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[10], KEYS[11], KEYS[12])
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
    "items_listed",
    "items_done",
    "listing_queued",  # of queued: listing entries, held back while listing_held
    "listing_held",  # 1 while the last pop found listing held back (RAVEL_FLEET_MAX_PENDING)
    "max_pending",  # the bound the nodes apply (0: none), as the last pop saw it
)

# The start URL ARGV[1] (raw) is refused: removed, and recorded in rejected with ARGV[2] as the
# reason, by whichever node removes it first. KEYS start_urls rejected -> 1 if removed here
REJECT_START_URL = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'start_url:' .. string.sub(redis.sha1hex(ARGV[1]), 1, 12), ARGV[2])
return 1
"""

# --- the fleet-wide transfer cap (ravelscraper.distributed.fleetcap) ---------------------
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


class Scripts:
    """The Lua scripts, registered once per client (``EVALSHA``, loaded again after a restart)."""

    def __init__(self, client: Any, sources: dict[str, str]) -> None:
        self.registered = {name: client.register_script(src) for name, src in sources.items()}

    def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.registered[name](keys=keys, args=args)


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
        """Forget a bad entry and record why in ``rejected``; the file or job it belongs to in
        the run's ledger fails: returns ``file``, ``job`` or "" (an entry of no job: forged)."""
        k = self.keys
        found = self.scripts(
            "reject",
            [
                k.inflight,
                k.payloads,
                k.rejected,
                k.owners,
                k.files,
                k.failures,
                k.tally,
                k.items,
                k.item_records,
                k.activity,
            ],
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

    def leave(self) -> None:
        self.client.zrem(self.keys.nodes, self.node)

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
                k.owners,
                k.files,
                k.failures,
                k.tally,
                k.items,
                k.item_records,
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


class RunLedger:
    """The ledger of the current run: each listed file's outcome, each failed job, the tally;
    opening and closing the run."""

    def __init__(self, client: Any, keys: JobKeys, node: str = "") -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self.scripts = Scripts(
            client,
            {
                "open_run": OPEN_RUN,
                "list": LIST,
                "complete": COMPLETE,
                "item_failed": ITEM_FAILED,
                "finish": FINISH,
            },
        )

    def open_run(self) -> tuple[int, str]:
        """The id and ledger token of the open run, opening a new one (with an empty ledger)
        if none is. The token is the previous run's, or a new random one (uuid4) when there
        is no previous run: after a FLUSHDB run 1 comes again, its token never does."""
        k = self.keys
        found = self.scripts(
            "open_run",
            [
                k.run,
                k.runs,
                k.files,
                k.names,
                k.failures,
                k.items,
                k.tally,
                k.owners,
                k.activity,
                k.item_records,
            ],
            [self.node, uuid.uuid4().hex],
        )
        return int(found[0]), text(found[1])

    def token(self) -> str:
        """The ledger token of the current run ("" if there is no run)."""
        return text(self.client.hget(self.keys.run, "ledger") or b"")

    def list_files(
        self, identifier: str, files: list[tuple[str, str, int]], record: str = ""
    ) -> list[tuple[str, str]]:
        """Put an item's files ``(path, case-folded path, size)`` in the ledger as pending;
        returns ``(path, other spelling)`` for the names refused as case-only duplicates.

        ``record`` (:func:`item_record`), kept until the item is done, is handed to the node
        that verifies its last file (:meth:`settle_file`), which records the item."""
        k = self.keys
        args: list[str | int] = [identifier, record]
        for path, folded, size in files:
            args += [path, folded, size]
        found = self.scripts(
            "list",
            [k.files, k.names, k.tally, k.items, k.activity, k.failures, k.item_records],
            args,
        )
        flat = [text(v) for v in found or []]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def complete(
        self, entry_id: str, path: str, outcome: str, reason: str = "", size: int = 0
    ) -> bool:
        """Record a file's outcome (``verified`` or ``failed``) and acknowledge its entry
        (``entry_id`` "" for a file that never had one). False if the lease was lost."""
        return self.settle_file(entry_id, path, outcome, reason, size)[0]

    def settle_file(
        self,
        entry_id: str,
        path: str,
        outcome: str,
        reason: str = "",
        size: int = 0,
        recordable: bool = True,
    ) -> tuple[bool, ItemRecord | None]:
        """:meth:`complete`, and the item's record data when this was the last file of an
        item whose every file was verified (once per item and run, to one node). A file
        stored without a checksum match (not ``recordable``) counts as stored, but its item
        is never recorded complete."""
        k = self.keys
        identifier = path.split("/", 1)[0]
        found = self.scripts(
            "complete",
            [*k.ack_keys(), k.files, k.failures, k.tally, k.items, k.item_records],
            [self.node, entry_id, path, outcome, reason[:500], size, identifier, int(recordable)],
        )
        acked, settled = bool(found[0]), int(found[1]) if len(found) > 1 else 0
        raw = found[2] if len(found) > 2 and settled == 1 else None
        return acked, ItemRecord.parse(identifier, raw) if raw else None

    def item_failed(self, identifier: str, reason: str) -> bool:
        """Record a job (an item) that could not be listed; True the first time."""
        k = self.keys
        return bool(
            self.scripts("item_failed", [k.items, k.tally, k.activity], [identifier, reason[:500]])
        )

    def finish_run(self) -> tuple[int, int]:
        """Close the run if nothing is waiting, leased or pending: ``(1, 0)`` if closed now,
        ``(0, 0)`` if not, ``(-1, pending)`` if files are pending that no entry will complete."""
        k = self.keys
        found = self.scripts(
            "finish",
            [
                k.requests,
                k.inflight,
                k.start_urls,
                k.dupefilter,
                k.attempts,
                k.counters,
                k.run,
                k.tally,
                k.listing,
                k.files,
                k.names,
                k.listing_leases,
            ],
            [self.node],
        )
        return int(found[0]), int(found[1]) if len(found) > 1 else 0

    def failures(self, limit: int = 5) -> tuple[list[tuple[str, str]], int]:
        """Some failed files ``(path, reason)`` (sorted) and how many there are."""
        pairs = sorted(hash_text(self.client, self.keys.failures).items())
        return pairs[:limit], len(pairs)

    def failed_items(self, limit: int = 5) -> tuple[list[tuple[str, str]], int]:
        """Some jobs that failed ``(identifier, reason)`` (sorted) and how many there are."""
        failed = sorted(
            (ident, state.removeprefix("failed: "))
            for ident, state in hash_text(self.client, self.keys.items).items()
            if state.startswith("failed")
        )
        return failed[:limit], len(failed)


@dataclass(frozen=True)
class NodeSample:
    """A node's own counters since it started, sent with each heartbeat (``history``)."""

    files: int  # files done: downloaded, already up to date or failed
    failed: int
    bytes: int  # bytes of the files downloaded or already up to date


@dataclass(frozen=True)
class ItemRecord:
    """What the node that verifies an item's last file needs to record the item
    (``ravelscraper.pipelines.records.ItemRecords.complete``); kept in ``item_records``
    meanwhile."""

    identifier: str
    fingerprint: str
    selection: str
    names: tuple[str, ...]

    def encode(self) -> str:
        return json.dumps([self.fingerprint, self.selection, list(self.names)])

    @classmethod
    def parse(cls, identifier: str, raw: bytes | str) -> ItemRecord | None:
        """None for anything but what :meth:`encode` writes (Redis is not trusted)."""
        try:
            fingerprint, selection, names = json.loads(raw)
        except (ValueError, TypeError, RecursionError):
            return None
        if not isinstance(fingerprint, str) or not fingerprint or not isinstance(selection, str):
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            return None
        return cls(identifier, fingerprint, selection, tuple(names))


class StartUrls:
    """``<prefix>:start_urls``: pushed by users, taken by nodes, refused ones recorded."""

    def __init__(self, client: Any, keys: JobKeys) -> None:
        self.client = client
        self.keys = keys
        self.scripts = Scripts(client, {"take": TAKE_START_URL, "reject": REJECT_START_URL})

    def push(self, entry: str) -> int:
        """Append a start-URL entry (JSON); how many now wait."""
        return int(self.client.rpush(self.keys.start_urls, entry))

    def take(self, max_bytes: int) -> tuple[str, bytes | int] | None:
        """The first start URL (``("ok", raw)``), or ``("big", size)`` for one that was too
        large and has been removed and rejected; None if there is none. ``ok`` entries stay
        in the list until :meth:`drop`: a node that dies meanwhile loses nothing."""
        k = self.keys
        found = self.scripts("take", [k.start_urls, k.rejected], [max_bytes])
        if not found:
            return None
        kind = text(found[0])
        return (kind, found[1]) if kind == "ok" else (kind, int(found[1]))

    def drop(self, raw: bytes) -> bool:
        """Remove a start URL once its requests are queued; False if another node did."""
        return bool(self.client.lrem(self.keys.start_urls, 1, raw))

    def reject(self, raw: bytes, reason: str) -> bool:
        """Remove a refused start URL and record why; True for the node that removed it."""
        k = self.keys
        return bool(self.scripts("reject", [k.start_urls, k.rejected], [raw, reason[:500]]))


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


def hash_text(client: Any, key: str) -> dict[str, str]:
    return {text(f): text(v) for f, v in client.hgetall(key).items()}


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
