"""The run's ledger: which files were listed, verified or failed, per item, and when the run
opens and closes (:class:`RunLedger`); what an item's record needs (:class:`ItemRecord`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ravelscraper.distributed.schema.keys import JobKeys, hash_text, text
from ravelscraper.distributed.schema.lua import FORGET, NOW_MS, NUM, SETTLE, Scripts

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
