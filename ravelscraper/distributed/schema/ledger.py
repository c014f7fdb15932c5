"""The run's ledger: how many files were listed, verified or failed, per item (the failed ones
by name), and when the run opens and closes (:class:`RunLedger`); what an item's record needs
(:class:`ItemRecord`).

A file has no record of its own while it waits: it is a row of a file entry (several files of
one item, ``ravelscraper.distributed.entries.Chunk``), and its outcome is counted when the
node that holds the entry settles it (or when the entry is given up or rejected: its files
fail). So each file is counted once: the entry holds exactly the files not yet counted."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ravelscraper.distributed.schema.keys import JobKeys, hash_text, text
from ravelscraper.distributed.schema.lua import BATCHED, FAIL_FILES, NOW_MS, NUM, SETTLE, Scripts

# The outcomes of a file entry's files, recorded once, with its lease: verified ones counted
# (ARGV[4] files, ARGV[5] bytes), failed ones with their reasons (ARGV[9]... path, reason);
# ARGV[6] '0': a file was stored unverified, the item is never recorded complete. The entry
# is then forgotten, or, if ARGV[7] is not '', it holds what is left (ARGV[7], the files not
# done: a node that stops hands them back) and goes back to the queue. Nothing is recorded if
# the lease was lost (the entry went to another node, which does its files). The item's last
# file settles the item.
# KEYS inflight payloads attempts activity counters owners tally items item_records failures
#      requests
# ARGV node id identifier verified bytes recordable left n_failed (path reason)...
# -> {acked, settled (see SETTLE), the item record's data or false}
SETTLE_ENTRY = (
    NOW_MS
    + BATCHED
    + SETTLE
    + FAIL_FILES
    + """
local lease = redis.call('HGET', KEYS[1], ARGV[2])
if not lease or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then return {0, 0, false} end
local ident, verified = ARGV[3], tonumber(ARGV[4]) or 0
if ARGV[6] == '0' then redis.call('HDEL', KEYS[9], ident) end  -- stored, unverified
if verified > 0 then
  hincr(KEYS[7], 'verified', verified)
  hincr(KEYS[7], 'verified:' .. ident, verified)
  hincr(KEYS[7], 'bytes_verified', tonumber(ARGV[5]) or 0)
end
redis.call('HDEL', KEYS[1], ARGV[2])
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[6], ARGV[2])
  hincr(KEYS[5], 'acked', 1)
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[7])
  redis.call('ZADD', KEYS[11], tonumber(string.sub(lease, #ARGV[1] + 2)) or 0, ARGV[2])
end
redis.call('SET', KEYS[4], now)
local failed = {}
for i = 9, 8 + 2 * (tonumber(ARGV[8]) or 0) do table.insert(failed, ARGV[i]) end
if #failed > 0 then
  fail_files(ident, failed, KEYS[10], KEYS[7], KEYS[8], KEYS[9])  -- settles the item
  return {1, 0, false}
end
local settled, record = settle(KEYS[7], KEYS[8], KEYS[9], ident)
return {1, settled, record}
"""
)


# An item's files enter the ledger and the queue in one step, once per run: its file entries
# (ARGV[9]...: payloads of ravelscraper.distributed.entries.Chunk, at score ARGV[4]) hold
# ARGV[5] files of ARGV[6] bytes; ARGV[7] pairs (path, reason) after them are files refused
# here (failed at once). One spelling per case-folded identifier (ARGV[2]), fleet-wide, as a
# single node keeps one folder per item: an item whose folder another identifier holds is not
# listed (-> {-1, that identifier}), unless ARGV[8] is '0' (its files are all refused then).
# ARGV[3], unless '', is kept in item_records for the node that settles its last file. An
# item whose files all failed here is done at once.
# Each entry's owner is "files" (a file entry: its files are in its payload).
# KEYS items tally names item_records failures activity requests payloads seq owners
# ARGV identifier folded record score files bytes n_refused claim (path reason)... payload...
# -> {1, '', pending files of the run} listed, {0} already listed in this run,
#    {-1, other spelling}
LIST_ITEM = (
    NOW_MS
    + BATCHED
    + SETTLE
    + FAIL_FILES
    + """
local ident = ARGV[1]
if redis.call('HGET', KEYS[1], ident) then return {0} end
if ARGV[8] ~= '0' then
  local other = redis.call('HGET', KEYS[3], ARGV[2])
  if other and other ~= ident then return {-1, other} end
  if not other then redis.call('HSET', KEYS[3], ARGV[2], ident) end
end
redis.call('HSET', KEYS[1], ident, 'listed')
hincr(KEYS[2], 'items_listed', 1)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ident, ARGV[3]) end
local n_refused = tonumber(ARGV[7]) or 0
local listed = (tonumber(ARGV[5]) or 0) + n_refused
if listed > 0 then
  hincr(KEYS[2], 'listed', listed)
  hincr(KEYS[2], 'listed:' .. ident, listed)
  hincr(KEYS[2], 'bytes_listed', tonumber(ARGV[6]) or 0)
end
local first = 9 + 2 * n_refused
local n = #ARGV - first + 1
if n > 0 then
  if not whole(tonumber(redis.call('GET', KEYS[9]))) then redis.call('SET', KEYS[9], now - 1) end
  local last = redis.call('INCRBY', KEYS[9], n)
  local scored, payloads, owners = {}, {}, {}
  for j = 0, n - 1 do
    local id = string.format('%014d', last - n + 1 + j)
    table.insert(scored, ARGV[4])
    table.insert(scored, id)
    table.insert(payloads, id)
    table.insert(payloads, ARGV[first + j])
    table.insert(owners, id)
    table.insert(owners, 'files')
  end
  batched('HSET', KEYS[8], payloads)
  batched('HSET', KEYS[10], owners)
  batched('ZADD', KEYS[7], scored)
end
local failed = {}
for i = 9, first - 1 do table.insert(failed, ARGV[i]) end
fail_files(ident, failed, KEYS[5], KEYS[2], KEYS[1], KEYS[4])
settle(KEYS[2], KEYS[1], KEYS[4], ident)
redis.call('SET', KEYS[6], now)
local t = redis.call('HMGET', KEYS[2], 'listed', 'verified', 'failed')
return {1, '', (tonumber(t[1]) or 0) - (tonumber(t[2]) or 0) - (tonumber(t[3]) or 0)}
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
# random one. KEYS run runs names failures items tally owners activity item_records
# ARGV node token -> {the run's id, its ledger token}
OPEN_RUN = (
    NOW_MS
    + """
redis.call('SET', KEYS[8], now)
local ledger = redis.call('HGET', KEYS[1], 'ledger')
if not ledger or ledger == '' then ledger = ARGV[2] end
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  redis.call('HSET', KEYS[1], 'ledger', ledger)
  return {tonumber(redis.call('HGET', KEYS[1], 'id')) or 0, ledger}
end
local id = incr(KEYS[2], 1)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[9])
redis.call('HSET', KEYS[1], 'id', id, 'state', 'open', 'opened', now, 'opened_by', ARGV[1],
           'ledger', ledger)
redis.call('HDEL', KEYS[1], 'closed', 'closed_by', 'listing_held')
return {id, ledger}
"""
)


# Close the run once nothing is waiting, leased or pending: forget its fingerprints, so that
# a re-run lists again the items not recorded, and its folder names (every file settled: the
# tally, the failures and the items keep the run's account). -> {1} closed now,
# {0} not idle or not open,
# {-1, pending} files are pending that no entry will ever complete (the queue was lost).
# KEYS requests inflight start_urls dupefilter attempts counters run tally listing names
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
redis.call('DEL', KEYS[4], KEYS[5], KEYS[10], KEYS[11])
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
        self.pending = 0  # the run's pending files, as the last listing saw them
        self.scripts = Scripts(
            client,
            {
                "open_run": OPEN_RUN,
                "list": LIST_ITEM,
                "settle": SETTLE_ENTRY,
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

    def list_item(
        self,
        identifier: str,
        entries: list[EntryFiles],
        refused: list[tuple[str, str]] | None = None,
        record: str = "",
        priority: int = 0,
        claim: bool = True,
    ) -> tuple[int, str]:
        """Put an item's files in the ledger and its file entries in the queue, in one step,
        once per run: ``(1, "")``; ``(0, "")`` if the item was already listed in this run.
        :attr:`pending` is then the run's pending files.
        ``refused`` ``(path, reason)`` fail at once. One spelling per case-folded identifier
        (``claim``): ``(-1, other spelling)`` if another identifier holds the item's folder;
        then nothing is listed (list it again with every file refused, ``claim=False``).

        ``record`` (:func:`item_record`), kept until the item is done, is handed to the node
        that verifies its last file (:meth:`settle_entry`), which records the item."""
        k = self.keys
        args: list[str | int | bytes] = [identifier, identifier.casefold(), record, -priority]
        refused = refused or []
        args += [sum(e.files for e in entries), sum(e.bytes for e in entries), len(refused)]
        args.append("1" if claim else "0")
        for path, reason in refused:
            args += [path, reason[:500]]
        args += [e.payload for e in entries]
        found = self.scripts(
            "list",
            [
                k.items,
                k.tally,
                k.names,
                k.item_records,
                k.failures,
                k.activity,
                k.requests,
                k.payloads,
                k.seq,
                k.owners,
            ],
            args,
        )
        if len(found) > 2:
            self.pending = int(found[2])
        return int(found[0]), text(found[1]) if len(found) > 1 else ""

    def settle_entry(
        self,
        entry_id: str,
        identifier: str,
        outcomes: list[Outcome],
        left: bytes = b"",
    ) -> tuple[bool, ItemRecord | None]:
        """Record the outcomes of a file entry's files (of item ``identifier``) and forget the
        entry, or put it back in the queue holding ``left`` (its files not done, when this node
        stops). Nothing is recorded if the lease was lost (False): the entry's files are
        another node's. Returns the item's record data too when this settled the last file of
        an item whose every file was verified (once per item and run, to one node); a file
        stored without a checksum match (not ``recordable``) never lets its item be recorded."""
        k = self.keys
        verified = [o for o in outcomes if o.outcome == "verified"]
        failed = [o for o in outcomes if o.outcome != "verified"]
        args: list[str | int | bytes] = [self.node, entry_id, identifier, len(verified)]
        args += [sum(o.size for o in verified), int(all(o.recordable for o in verified))]
        args += [left, len(failed)]
        for o in failed:
            args += [o.path, o.reason[:500]]
        found = self.scripts(
            "settle",
            [*k.ack_keys(), k.tally, k.items, k.item_records, k.failures, k.requests],
            args,
        )
        acked, settled = bool(found[0]), int(found[1]) if len(found) > 1 else 0
        raw = found[2] if len(found) > 2 and settled == 1 else None
        return acked, ItemRecord.parse(identifier, raw) if raw else None

    def complete(
        self, entry_id: str, path: str, outcome: str, reason: str = "", size: int = 0
    ) -> bool:
        """Record the outcome of an entry of one file; False if the lease was lost."""
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
        """:meth:`settle_entry` for an entry of one file."""
        identifier = path.split("/", 1)[0]
        done = Outcome(path, outcome, reason, size, recordable)
        return self.settle_entry(entry_id, identifier, [done])

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
class EntryFiles:
    """A file entry to queue: its payload, how many files and bytes it holds."""

    payload: bytes
    files: int
    bytes: int


@dataclass(frozen=True)
class Outcome:
    """What became of one file of an entry: ``verified`` or ``failed`` (with ``reason``)."""

    path: str
    outcome: str
    reason: str = ""
    size: int = 0
    recordable: bool = True  # stored with a checksum match: its item may be recorded


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
