"""Lua pieces several scripts share (the clock, counters, settling an item, failing an
entry's owner, forgetting a lease), and the script runner."""

from __future__ import annotations

from typing import Any

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
