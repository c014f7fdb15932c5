"""Lua pieces several scripts share (the clock, counters, settling an item, failing an
entry's owner, forgetting a lease), and the script runner."""

from __future__ import annotations

from typing import Any

NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) " + (
    # Counters written by hand (not an integer) are repaired, never a failing script.
    """
local function whole(v) return v ~= nil and v == math.floor(v) and math.abs(v) < 2^53 end
local function hincr(key, field, by)
  local v = redis.pcall('HINCRBY', key, field, by)
  if type(v) == 'table' and v.err then  -- not an integer: counted again from 0
    redis.call('HSET', key, field, 0)
    v = redis.call('HINCRBY', key, field, by)
  end
  return v
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
  local t = redis.call('HMGET', tally, 'listed:' .. ident, 'verified:' .. ident,
                       'failed:' .. ident)
  local listed, failed = tonumber(t[1]) or 0, tonumber(t[3]) or 0
  if listed == 0 or (tonumber(t[2]) or 0) + failed < listed then return 0, false end
  if redis.call('HGET', items, ident) ~= 'listed' then return 0, false end
  redis.call('HSET', items, ident, 'done')
  hincr(tally, 'items_done', 1)
  local record = redis.call('HGET', records, ident)
  redis.call('HDEL', records, ident)
  if failed == 0 then return 1, record end
  return 2, false
end
"""


# Commands that take many fields (HSET, ZADD...), in batches: Lua's stack is not unbounded.
BATCHED = """
local function batched(cmd, key, args)
  for i = 1, #args, 400 do redis.call(cmd, key, unpack(args, i, math.min(i + 399, #args))) end
end
"""


# A file entry's payload (JSON [2, origin, identifier, album, creator, [[name, ...], ...](, dir)],
# ravelscraper.distributed.entries.Chunk) -> its identifier and its files' paths; nil for any
# other payload (a page entry, or one written by hand).
ENTRY_FILES = """
local function entry_files(raw)
  if not raw or string.sub(raw, 1, 1) ~= '[' then return nil end
  local ok, c = pcall(cjson.decode, raw)
  if not ok or type(c) ~= 'table' or c[1] ~= 2 or type(c[3]) ~= 'string'
     or type(c[6]) ~= 'table' then return nil end
  local paths = {}
  for _, row in ipairs(c[6]) do
    if type(row) == 'table' and type(row[1]) == 'string' then
      table.insert(paths, c[3] .. '/' .. row[1])
    end
  end
  return c[3], paths
end
"""


# Files of item ident fail, each with its reason (a flat {path, why, ...}); settles the item.
# Needs NOW_MS's hincr, BATCHED and SETTLE.
FAIL_FILES = """
local function fail_files(ident, failed, failures, tally, items, records)
  local n = #failed / 2
  if n == 0 then return end
  batched('HSET', failures, failed)
  hincr(tally, 'failed', n)
  hincr(tally, 'failed:' .. ident, n)
  settle(tally, items, records, ident)
end
"""


# An entry that will never be done fails in the ledger, with why, as its owner says: the
# files a file entry (owner "files") still holds, which may settle their item, or the job of
# a page entry ("item:<identifier>" or "search:<query>"), once. -> 'file', 'job' or ''
# (nothing failed: an entry of no job). Read before the payload is deleted. Needs FAIL_FILES
# and ENTRY_FILES.
FAIL_ENTRY = """
local function fail_entry(id, why, owners, payloads, failures, tally, items, records)
  local owner = redis.call('HGET', owners, id) or ''
  local ident, paths = nil, nil
  if owner == 'files' then ident, paths = entry_files(redis.call('HGET', payloads, id)) end
  if ident then
    local failed = {}
    for _, path in ipairs(paths) do
      table.insert(failed, path)
      table.insert(failed, why)
    end
    fail_files(ident, failed, failures, tally, items, records)
    return #paths > 0 and 'file' or ''
  end
  if string.sub(owner, 1, 5) == 'item:' or string.sub(owner, 1, 7) == 'search:' then
    local job = string.sub(owner, 1, 5) == 'item:' and string.sub(owner, 6) or owner
    if string.sub(redis.call('HGET', items, job) or '', 1, 6) == 'failed' then return '' end
    redis.call('HSET', items, job, 'failed: ' .. why)
    hincr(tally, 'jobs_failed', 1)
    return 'job'
  end
  return ''
end
"""


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


class Scripts:
    """The Lua scripts, registered once per client (``EVALSHA``, loaded again after a restart)."""

    def __init__(self, client: Any, sources: dict[str, str]) -> None:
        self.registered = {name: client.register_script(src) for name, src in sources.items()}

    def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self.registered[name](keys=keys, args=args)
