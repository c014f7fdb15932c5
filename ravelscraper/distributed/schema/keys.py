"""Every key of a job, under its prefix (``RAVEL_REDIS_PREFIX``), with its type."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


class BadPrefix(ValueError):
    """``RAVEL_REDIS_PREFIX`` cannot name the job's keys; the message says why, in one line."""


@dataclass(frozen=True)
class JobKeys:
    """Key names; ``reset`` deletes exactly these."""

    requests: str  # ZSET entry id -> -priority: what is waiting
    payloads: str  # HASH entry id -> JSON request (a page), or the files of a file entry
    # (JSON [2, origin, identifier, album, creator, [[name, ...], ...](, dir)]: entries.Chunk)
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
    names: str  # HASH case-folded identifier -> identifier: one folder per item (until closed)
    failures: str  # HASH path -> why the file failed
    items: str  # HASH identifier -> listed | done | "failed: <reason>" (a job that failed);
    # a search's job is "search:<query>"
    tally: str  # HASH listed, verified, failed, bytes_listed, bytes_verified (+ ":<id>"),
    # items_listed, items_done, jobs_failed
    item_records: str  # HASH identifier -> JSON [fingerprint, selection, [names]] until done
    owners: str  # HASH entry id -> "files" (a file entry: its files are in its payload),
    # "item:<identifier>" or "search:<query>"
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

    def fail_owner_keys(self) -> list[str]:
        """The keys an entry fails in (``FAIL_ENTRY``), in a script's ``KEYS`` order:
        owners, payloads, failures, tally, items, item_records."""
        return [
            self.owners,
            self.payloads,
            self.failures,
            self.tally,
            self.items,
            self.item_records,
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


def hash_text(client: Any, key: str) -> dict[str, str]:
    return {text(f): text(v) for f, v in client.hgetall(key).items()}


def text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
