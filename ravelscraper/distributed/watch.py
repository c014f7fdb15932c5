"""Reading a job's ledger, queue and nodes for people: the one reader behind ``scrapy fleet
status``, and ``scrapy fleet serve``'s page, ``/status.json`` and ``/metrics``.

It reads what :mod:`.schema`'s scripts write, next to them: :func:`status_data` the run's
ledger, the queue and the live nodes; :func:`watch_data` adds each node (alive or gone, its
counters and rate, what it holds), the throughput of the last hour from the job's ``history``
(:class:`History`), the rate and ETA, the first failures and rejected entries, and whether
listing is held back. Only reads: never a write to Redis. Nothing here imports Scrapy.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from ravelscraper.archive.names import shown
from ravelscraper.distributed.schema.keys import JobKeys, text
from ravelscraper.distributed.schema.queue import JobData

WINDOW_MS = 3_600_000  # the chart's hour
RATE_WINDOW_MS = 15_000  # a rate is measured over the samples of the last 15 s
SHOWN = 10  # failures, rejected entries and held files named (the counts are whole)
MAX_SAMPLES = 200_000  # history kept in memory by a server, whatever the stream holds
READ_PAGE = 2_000  # stream entries per XRANGE call
MAX_PAGES = 100  # XRANGE calls per refresh (the rest comes at the next one)
CHART_BUCKETS = 120
MAX_START_URL_ROWS = 5  # start URLs shown by `status` (the first ones waiting)
# The snapshot's counters that are hand-writable fields of <prefix>:tally / <prefix>:counters.
TALLY_FIELDS = ("listed", "verified", "failed", "bytes_listed", "bytes_verified", "jobs_failed")
COUNTER_FIELDS = ("acked", "reclaimed")


def count_of(value: str) -> int:
    """A counter as Redis holds it; anything else written there by hand counts as 0."""
    return int(value) if value.isascii() and value.isdigit() else 0


def failure(state: str) -> str:
    """Why a job failed, from its state in the ledger ("" if it did not)."""
    return state.removeprefix("failed: ") if state.startswith("failed") else ""


def status_data(data: JobData) -> dict[str, Any]:
    """The current run's ledger per item, the queue and the live nodes, as one dict."""
    keys = data.keys
    state: dict[str, int | None] = dict(data.snapshot())
    now = data.redis_now_ms()
    live_nodes = data.live_nodes()
    run = data.strings(keys.run)
    tally = data.strings(keys.tally)
    item_states = data.strings(keys.items)
    failures = data.strings(keys.failures)
    counters = data.strings(keys.counters)
    malformed: dict[str, str] = {}  # "<key> <field>" -> the value written there, escaped

    def well_formed(key: str, values: dict[str, str], field: str) -> bool:
        """A counter is a whole number >= 0 (or missing); anything else was written by hand
        and is shown as malformed, never as a number."""
        value = values.get(field, "0")
        if value.isascii() and value.isdigit():
            return True
        malformed[f"{key} {shown(field)}"] = repr(value[:100])
        return False

    def count(field: str, values: dict[str, str] = tally) -> int:
        return count_of(values.get(field, ""))

    def counter(field: str) -> int | None:
        """A tally counter, None if malformed."""
        return count(field) if well_formed(keys.tally, tally, field) else None

    for field in TALLY_FIELDS:
        if not well_formed(keys.tally, tally, field):
            state[field] = None
    for field in COUNTER_FIELDS:
        if not well_formed(keys.counters, counters, field):
            state[field] = None

    items = {}
    searches = {
        job.removeprefix("search:"): failure(state)
        for job, state in item_states.items()
        if job.startswith("search:")
    }
    names = set(item_states) | {f.split(":", 1)[1] for f in tally if ":" in f}
    for identifier in sorted(n for n in names if not n.startswith("search:")):
        listed, verified = counter(f"listed:{identifier}"), counter(f"verified:{identifier}")
        failed = counter(f"failed:{identifier}")
        job = item_states.get(identifier, "listed")
        items[identifier] = {
            "listed": listed,
            "verified": verified,
            "failed": failed,
            "pending": pending(listed, verified, failed),
            "error": failure(job),
        }
    failed_items = sum(1 for row in items.values() if row["error"])
    listed_items, done_items = counter("items_listed"), counter("items_done")
    opened, closed = count("opened", run), count("closed", run)
    return {
        "run": state["run"],
        "run_state": run.get("state", "none"),
        "run_opened_s_ago": round((now - opened) / 1000, 1) if opened else None,
        "run_closed_s_ago": round((now - closed) / 1000, 1) if closed else None,
        "files": {
            **{k: state[k] for k in ("listed", "verified", "failed")},
            "pending": pending(state["listed"], state["verified"], state["failed"]),
        },
        # items: listed (their files are in the ledger), done (every file verified or
        # failed), failed (could not be listed), pending (listed, files still pending)
        "item_counts": {
            "listed": listed_items,
            "done": done_items,
            "failed": failed_items,
            "pending": pending(listed_items, done_items),
        },
        "searches": searches,  # query -> "" or why it failed
        "bytes": {"listed": state["bytes_listed"], "verified": state["bytes_verified"]},
        "items": items,
        "failed_files": dict(sorted(failures.items())),
        "queued": state["queued"],
        # back-pressure (RAVEL_FLEET_MAX_PENDING), as the nodes' last pop found it
        "listing_queued": state["listing_queued"],
        "listing_held": bool(state["listing_held"]) and bool(state["listing_queued"]),
        "max_pending": state["max_pending"],
        "inflight": state["inflight"],
        "start_urls": state["start_urls"],
        # the first ones waiting, as pushed (a job no node could queue yet stays there)
        "start_url_entries": [
            text(raw)[:300]
            for raw in data.client.lrange(keys.start_urls, 0, MAX_START_URL_ROWS - 1)
        ],
        "live_nodes": len(live_nodes),
        "nodes": live_nodes,  # the live ones: an expired node is not listed
        "acked": state["acked"],
        "reclaimed": state["reclaimed"],
        "dead": state["dead"],
        "rejected": state["rejected"],
        "last_activity_s_ago": (
            round(state["quiet_ms"] / 1000, 1) if state["last_activity_ms"] else None
        ),
        # counters written by hand (not a whole number): their values are None above
        "malformed": malformed,
    }


def pending(listed: int | None, *settled: int | None) -> int | None:
    """What is left of ``listed`` once ``settled`` is taken off; None if a counter is
    malformed."""
    if listed is None or None in settled:
        return None
    return max(0, listed - sum(n or 0 for n in settled))


# --- the history of the nodes' counters, and what the page adds ----------------------------


@dataclass(frozen=True)
class Sample:
    """One node's counters at one heartbeat (an entry of the job's ``history`` stream)."""

    ms: int  # Redis time of the heartbeat
    node: str
    files: int
    failed: int
    bytes: int


def stream_ms(entry_id: bytes | str) -> tuple[int, int]:
    ms, _, seq = text(entry_id).partition("-")
    return count_of(ms), count_of(seq)


class History:
    """The samples of the last hour, read from the job's ``history`` stream: all of it at the
    first :meth:`refresh`, then only what is new (a server polls it every second or two)."""

    def __init__(self, keys: JobKeys) -> None:
        self.key = keys.history
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self.last: tuple[int, int] | None = None  # the last stream id read

    def refresh(self, client: Any, now_ms: int) -> list[Sample]:
        newest = client.xrevrange(self.key, "+", "-", count=1)
        if not newest or (self.last is not None and stream_ms(newest[0][0]) < self.last):
            self.samples.clear()  # gone (reset, expired) or rewritten: read it anew
            self.last = None
        if newest:
            start = f"{now_ms - WINDOW_MS}" if self.last is None else self.next_id()
            for _ in range(MAX_PAGES):
                entries = client.xrange(self.key, start, "+", count=READ_PAGE)
                for entry_id, fields in entries:
                    self.add(entry_id, fields)
                if len(entries) < READ_PAGE:
                    break
                start = self.next_id()
        while self.samples and self.samples[0].ms < now_ms - WINDOW_MS:
            self.samples.popleft()
        return list(self.samples)

    def next_id(self) -> str:
        """The stream id just after the last one read (XRANGE's "(" needs Redis 6.2)."""
        assert self.last is not None
        return f"{self.last[0]}-{self.last[1] + 1}"

    def add(self, entry_id: bytes | str, fields: dict[Any, Any]) -> None:
        self.last = stream_ms(entry_id)
        values = {text(k): text(v) for k, v in fields.items()}
        self.samples.append(
            Sample(
                ms=self.last[0],
                node=values.get("node", ""),
                files=count_of(values.get("files", "")),
                failed=count_of(values.get("failed", "")),
                bytes=count_of(values.get("bytes", "")),
            )
        )


def rate_of(series: list[Sample], now_ms: int, field: str = "bytes") -> float:
    """Per second, over the samples of the last RATE_WINDOW_MS (0 with fewer than two)."""
    recent = [s for s in series if s.ms >= now_ms - RATE_WINDOW_MS]
    if len(recent) < 2 or recent[-1].ms <= recent[0].ms:
        return 0.0
    grown = getattr(recent[-1], field) - getattr(recent[0], field)
    return max(0, grown) * 1000 / (recent[-1].ms - recent[0].ms)


def throughput(by_node: dict[str, list[Sample]], now_ms: int) -> dict[str, Any]:
    """The fleet's bytes per second over time: what each node's counter grew by between two
    of its samples, spread evenly over that time and summed per bucket. Buckets span the
    history, an hour at most."""
    first = min((s[0].ms for s in by_node.values() if s), default=now_ms)
    # The chart ends at the newest sample: a bucket after it would be only partly reported.
    end = min(now_ms, max((s[-1].ms for s in by_node.values() if s), default=now_ms))
    span = min(WINDOW_MS, max(60_000, end - first))
    width = max(1_000, span // CHART_BUCKETS)
    start = end - width * CHART_BUCKETS
    grown = [0.0] * CHART_BUCKETS
    for series in by_node.values():
        for before, after in pairwise(series):
            took = after.ms - before.ms
            if took <= 0 or after.bytes <= before.bytes:
                continue
            per_ms = (after.bytes - before.bytes) / took
            lo, hi = max(before.ms, start), min(after.ms, end)
            slot = max(0, (lo - start) // width)
            while lo < hi and slot < CHART_BUCKETS:
                upto = min(hi, start + (slot + 1) * width)
                grown[slot] += per_ms * (upto - lo)
                lo, slot = upto, slot + 1
    return {
        "bucket_s": width / 1000,
        "span_s": width * CHART_BUCKETS / 1000,
        "end_s_ago": round((now_ms - end) / 1000, 1),
        # bytes per second in each bucket, oldest first; the last one ends end_s_ago
        "bytes_per_s": [round(g * 1000 / width, 1) for g in grown],
    }


def node_rows(data: JobData, now_ms: int, by_node: dict[str, list[Sample]]) -> list[dict[str, Any]]:
    """One row per node seen in the last hour: alive (its heartbeat has not expired) or gone,
    its counters and rate, and the entries it holds."""
    client, keys = data.client, data.keys
    # the heartbeat expiry of each node (a float: "+inf" written by hand is no error)
    expiry = {text(n): float(s) for n, s in client.zrange(keys.nodes, 0, -1, withscores=True)}
    held: dict[str, list[str]] = {}
    for entry_id, lease in data.strings(keys.inflight).items():
        holder, bar, _ = lease.rpartition("|")
        held.setdefault(holder if bar else "", []).append(entry_id)
    rows = []
    for node in sorted(set(expiry) | set(by_node) | (set(held) - {""})):
        series = by_node.get(node, [])
        last = series[-1] if series else None
        ids = sorted(held.get(node, []))
        owners = client.hmget(keys.owners, ids[:SHOWN]) if ids else []
        # a file entry's files are in its payload
        files = [i for i, o in zip(ids, owners, strict=False) if o == b"files"]
        payloads = (
            dict(zip(files, client.hmget(keys.payloads, files), strict=True)) if files else {}
        )
        alive = expiry.get(node, 0) >= now_ms
        rows.append(
            {
                "node": node,
                "alive": alive,
                "last_heartbeat_s_ago": round((now_ms - last.ms) / 1000, 1) if last else None,
                "files": last.files if last else 0,
                "failed": last.failed if last else 0,
                "bytes": last.bytes if last else 0,
                "bytes_per_s": round(rate_of(series, now_ms), 1) if alive else 0.0,
                "holds": len(ids),
                "holding": [
                    held_text(i, o, payloads.get(i)) for i, o in zip(ids, owners, strict=False)
                ],
            }
        )
    return rows


def held_text(entry_id: str, owner: bytes | None, payload: bytes | None = None) -> str:
    """What a held entry is for: its files' paths ("a/x.mp3 and 19 more"), "item
    <identifier>", "search:<query>"..."""
    if owner == b"files":
        paths = entry_paths(payload)
        if paths:
            return paths[0] + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
    if owner is None or owner == b"files":
        return f"entry {entry_id}"
    kind, _, what = text(owner).partition(":")
    return what if kind == "file" else f"{kind} {what}" if kind == "item" else text(owner)


def entry_paths(payload: bytes | None) -> list[str]:
    """The paths of a file entry's files (``entries.Chunk``: [2, origin, identifier, album,
    creator, [[name, ...], ...]]); [] for any other payload."""
    if not payload or payload[:1] != b"[":
        return []
    try:
        chunk = json.loads(payload)
        identifier, rows = chunk[2], chunk[5]
        return [f"{identifier}/{row[0]}" for row in rows if isinstance(row[0], str)]
    except (ValueError, RecursionError, TypeError, IndexError, KeyError):
        return []


def first_of(client: Any, key: str, limit: int = SHOWN) -> list[list[str]]:
    """Some ``[field, value]`` pairs of a hash, sorted, without reading all of a large one."""
    pairs: list[list[str]] = []
    for field, value in client.hscan_iter(key, count=limit * 10):
        pairs.append([text(field), text(value)])
        if len(pairs) >= limit * 10:
            break
    return sorted(pairs)[:limit]


def watch_data(data: JobData, history: History) -> dict[str, Any]:
    """:func:`status_data`, and what ``scrapy fleet serve`` shows besides (see the README's
    table of ``/status.json``)."""
    status = status_data(data)
    client, keys = data.client, data.keys
    now = data.redis_now_ms()
    by_node: dict[str, list[Sample]] = {}
    for sample in history.refresh(client, now):
        by_node.setdefault(sample.node, []).append(sample)
    nodes = node_rows(data, now, by_node)
    rate = sum(row["bytes_per_s"] for row in nodes if row["alive"])
    # a malformed counter (None) counts as 0 here: status_data names it
    remaining = max(0, (status["bytes"]["listed"] or 0) - (status["bytes"]["verified"] or 0))
    failed_files = list(status["failed_files"].items())
    failed_jobs = sorted([i, row["error"]] for i, row in status["items"].items() if row["error"])
    failed_jobs += sorted([f"search:{q}", why] for q, why in status["searches"].items() if why)
    status.update(
        {
            "now_ms": now,
            "bytes_per_s": round(rate, 1),
            "eta_s": round(remaining / rate) if rate > 0 and remaining else None,
            "node_rows": nodes,
            "nodes_alive": sum(1 for row in nodes if row["alive"]),
            "nodes_gone": sum(1 for row in nodes if not row["alive"]),
            "throughput": throughput(by_node, now),
            "failures": {
                "count": len(failed_files),
                "first": [list(pair) for pair in failed_files[:SHOWN]],
            },
            "failed_jobs": {"count": len(failed_jobs), "first": failed_jobs[:SHOWN]},
            "rejected_entries": {
                "count": status["rejected"],
                "first": first_of(client, keys.rejected),
            },
            # whether listing is held back (RAVEL_FLEET_MAX_PENDING; None: no bound)
            "listing": {
                "bound": status["max_pending"] or None,
                "held_back": status["listing_held"],
            },
        }
    )
    return status
