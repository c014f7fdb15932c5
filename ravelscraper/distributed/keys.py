"""The Redis keys of one fleet job, all under one prefix (``ravel`` by default)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

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
    run: str  # HASH id, state (open|closed), opened, closed (ms): the current run
    runs: str  # INCR: run ids; a smaller id than a node saw means the data was lost
    files: str  # HASH "<identifier>/<name>" -> pending | verified | failed
    names: str  # HASH case-folded path -> path: one spelling per name, fleet-wide
    failures: str  # HASH path -> why the file failed
    items: str  # HASH identifier -> "listed" or "failed: <reason>" (a bad job)
    tally: str  # HASH listed, verified, failed, bytes_listed, bytes_verified (+ ":<id>")
    owners: str  # HASH entry id -> "file:<path>" or "item:<identifier>"

    @classmethod
    def for_prefix(cls, prefix: str) -> JobKeys:
        return cls(**{f.name: f"{prefix}:{f.name}" for f in fields(cls)})

    @property
    def prefix(self) -> str:
        return self.requests.rsplit(":", 1)[0]

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]

    def types(self) -> dict[str, str]:
        """The Redis type each key must have when it exists."""
        kinds = {"requests": "zset", "nodes": "zset", "start_urls": "list", "dupefilter": "set"}
        kinds |= dict.fromkeys(("fleetcap", "fleetcap_queue", "fleetcap_waiting"), "zset")
        kinds |= dict.fromkeys(("seq", "activity", "fleetcap_seq", "runs"), "string")
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
