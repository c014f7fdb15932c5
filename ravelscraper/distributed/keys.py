"""The Redis keys of one fleet job, all under one prefix (``ravel`` by default)."""

from __future__ import annotations

from dataclasses import dataclass, fields


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

    @classmethod
    def for_prefix(cls, prefix: str) -> JobKeys:
        return cls(**{f.name: f"{prefix}:{f.name}" for f in fields(cls)})

    @property
    def prefix(self) -> str:
        return self.requests.rsplit(":", 1)[0]

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


def job_prefix(settings_prefix: str, spider_name: str) -> str:
    """``RAVEL_REDIS_PREFIX`` with ``%(spider)s`` replaced: ``ravel`` by default."""
    return settings_prefix % {"spider": spider_name}
