"""A soak of a fleet under random faults, and a Redis restarted under a running fleet.

Real ``scrapy crawl ravel`` processes against the fake archive.org and real Redis servers.
The soak runs shortened by default (300 files); ``RAVEL_SOAK_FULL=1`` runs the issue's full
length (1,000 files). Figures (wall time, split, peak RSS, faults, retries, exit times) are
printed, not asserted: run with ``pytest -s tests/test_soak.py`` to see them.

"Redis unreachable at start" (one ERROR line, exit 1) is not repeated here: it is the
``down`` case of ``test_an_unusable_redis_is_one_line_and_a_failed_exit`` in
test_distributed.py.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.fakearchive import file_bytes, md5_of
from tests.support.crawl import stored_files
from tests.support.fleet import Node, NodeGroup, kill_all, storage_gets
from tests.support.redisserver import RedisServer

SOAK_FULL = os.environ.get("RAVEL_SOAK_FULL", "") == "1"
# RAVEL_SOAK_FILES=N runs a soak of any length by hand (e.g. 10000 for a longer one).
SOAK_FILES = int(os.environ.get("RAVEL_SOAK_FILES") or (1000 if SOAK_FULL else 300))
SOAK_TIMEOUT = 60 + SOAK_FILES * 0.2  # seconds; 1,000 files take about 11 s on 2 cores
SOAK_SIZE = 4096
SOAK_SEED = int(os.environ.get("RAVEL_SOAK_SEED") or 20240427)  # which files fail, and how
FAULT_RATE = 0.05
FAULT_KINDS = ("429", "503", "reset", "truncate", "corrupt")
BODY_FAULTS = frozenset({"reset", "truncate", "corrupt"})  # a storage transfer that went bad
SAMPLE_EVERY = 0.25  # seconds between RSS samples
MB = 1024 * 1024
PEAK_RSS_LIMIT = 300 * MB
RSS_GROWTH_LIMIT = 60 * MB
# Nodes in the soak never die: a long TTL keeps a busy 2-core machine from declaring one dead.
SOAK_FLEET = {"RAVEL_NODE_TTL": 30, "RAVEL_HEARTBEAT": 1}
FAST_CRAWL = {
    "DOWNLOAD_DELAY": 0,
    "RAVEL_RETRY_BACKOFF_BASE": 0.1,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
    "RAVEL_PROGRESS_INTERVAL": 3600,
}


@pytest.fixture(scope="module")
def soak_redis():
    with RedisServer(databases=4) as server:
        yield server


def fault_plan(names: list[str], seed: int, rate: float = FAULT_RATE) -> dict[str, str]:
    """``rate`` of ``names``, chosen at random (seeded), each with a fault kind.

    The kinds are dealt round-robin before shuffling, so each kind gets its share even in
    the shortened run.
    """
    rng = random.Random(seed)
    chosen = rng.sample(names, max(len(FAULT_KINDS), round(len(names) * rate)))
    kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(len(chosen))]
    rng.shuffle(kinds)
    return dict(zip(chosen, kinds, strict=True))


def fault_rules(plan: dict[str, str]) -> list[dict]:
    rules = []
    for name, kind in sorted(plan.items()):
        # On the storage node: a file after an item's first goes there directly
        # (RAVEL_STORAGE_DIRECT), so a fault on /download/ would not always be met.
        rule: dict = {"match": name, "kind": kind, "times": 1, "host": "storage"}
        if kind == "429":
            rule["retry_after"] = 1
        rules.append(rule)
    return rules


@dataclass
class RssSampler:
    """RSS of each node's process, sampled every ``SAMPLE_EVERY`` s while it runs.

    Samples taken before a node stored its first file (start-up: imports, listing) count for
    its peak, not for its steady state.
    """

    nodes: list[Node]
    samples: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    steady: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    last: float = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        if now - self.last < SAMPLE_EVERY:
            return
        self.last = now
        for index, node in enumerate(self.nodes):
            if node.process.poll() is not None:
                continue
            try:
                rss = psutil.Process(node.process.pid).memory_info().rss
            except psutil.Error:  # exited between poll() and the read
                continue
            if not rss:
                continue
            self.samples[index].append(rss)
            if self.steady[index] or "[download finished]" in node.log:
                self.steady[index].append(rss)

    def peak(self, index: int) -> int:
        return max(self.samples[index], default=0)

    def quarters(self, index: int) -> tuple[int, int]:
        """Max RSS in the first and in the last quarter of the node's steady state."""
        values = self.steady[index]
        quarter = max(1, len(values) // 4)
        return max(values[:quarter], default=0), max(values[-quarter:], default=0)


def wait_sampling(nodes: list[Node], sampler: RssSampler, timeout: float) -> None:
    """Wait for every node to exit by itself, sampling RSS; kill them all past ``timeout``."""
    deadline = time.monotonic() + timeout
    while any(n.exited is None for n in nodes):
        for node in nodes:
            if node.exited is None and node.process.poll() is not None:
                node.exited = time.time()
        sampler.sample()
        if time.monotonic() > deadline:
            kill_all(nodes)
            pytest.fail(f"nodes still running after {timeout:.0f} s")
        time.sleep(0.05)


def file_name(path: str) -> str:
    return path.rsplit("/", 1)[1]


def assert_store_verified(archive, store: Path, identifier: str, count: int) -> None:
    """The store holds exactly the item's ``count`` files, byte for byte, and nothing else."""
    files = stored_files(store)
    entries = {f.name: f for f in archive.item(identifier).files if f.format == "VBR MP3"}
    assert len(entries) == count
    assert sorted(files) == sorted(f"{identifier}/{name}" for name in entries)  # no .part
    for path, body in files.items():
        name = file_name(path)
        size = entries[name].size
        assert hashlib.md5(body).hexdigest() == md5_of(identifier, name, size), path
        assert body == file_bytes(identifier, name, size), path


@pytest.mark.slow
@pytest.mark.timeout(SOAK_TIMEOUT + 120)
def test_soak_three_nodes_random_faults_every_file_verified_once_memory_flat(
    archive, soak_redis, tmp_path, record_property
):
    identifier = "soak"
    archive.configure({"items": {identifier: {"count": SOAK_FILES, "size": SOAK_SIZE}}})
    names = sorted(f.name for f in archive.item(identifier).files if f.format == "VBR MP3")
    assert len(names) == SOAK_FILES
    plan = fault_plan(names, SOAK_SEED)
    archive.configure({"faults": fault_rules(plan)})
    store = tmp_path / "store"  # one store shared by the three nodes
    fleet = NodeGroup.on(soak_redis, tmp_path)
    details = f"url={archive.details_url(identifier)}"
    started = time.monotonic()
    try:
        for _ in range(3):
            fleet.start("-a", details, store=store, **SOAK_FLEET, **FAST_CRAWL)
        sampler = RssSampler(fleet.nodes)
        wait_sampling(fleet.nodes, sampler, timeout=SOAK_TIMEOUT)
    finally:
        fleet.close()
    wall = time.monotonic() - started

    stats = archive.stats()
    split = [n.downloaded for n in fleet.nodes]
    retries = [len(n.lines("[retry]")) for n in fleet.nodes]
    reverifies = [len(n.lines("[verify]")) for n in fleet.nodes]
    fired = Counter(f["kind"] for f in stats["faults_fired"])
    figures = {
        "files": SOAK_FILES,
        "seed": SOAK_SEED,
        "wall_s": round(wall, 1),
        "files_per_node": split,
        "peak_rss_mb": [round(sampler.peak(i) / MB, 1) for i in range(len(fleet.nodes))],
        "rss_quarters_mb": [
            tuple(round(v / MB, 1) for v in sampler.quarters(i)) for i in range(len(fleet.nodes))
        ],
        "rss_samples": [
            (len(sampler.samples[i]), len(sampler.steady[i])) for i in range(len(fleet.nodes))
        ],
        "faults_planned": dict(Counter(plan.values())),
        "faults_fired": dict(fired),
        "retries_per_node": retries,
        "verify_refetches_per_node": reverifies,
    }
    print(f"\n[soak] {figures}")
    for key, value in figures.items():
        record_property(key, value)

    # Every node exits 0 by itself, cleanly.
    for node in fleet.nodes:
        assert node.returncode == 0, node.log[-3000:]
        assert "Traceback" not in node.log, node.log[-3000:]
        assert node.lines("[ERROR]") == [], node.lines("[ERROR]")
    assert sum(split) == SOAK_FILES  # each file stored once, by one node
    assert min(split) >= 1  # all three nodes took part

    # Every fault fired exactly once, on the file it was planned for.
    assert sorted((file_name(f["path"]), f["kind"]) for f in stats["faults_fired"]) == sorted(
        plan.items()
    )
    # Each fault cost exactly one retry: a backoff retry, or (corrupt) one more download.
    corrupt = sum(kind == "corrupt" for kind in plan.values())
    assert (sum(retries), sum(reverifies)) == (len(plan) - corrupt, corrupt), figures

    # Every file ends verified.
    assert_store_verified(archive, store, identifier, SOAK_FILES)

    # Storage transfers: exactly one good transfer per file, and it is the last transfer of
    # that file: a 200 of the whole file, or, after a transfer a body fault cut off, a 206 of
    # the rest (resumed); the only repeats are the transfers that the planned faults spoiled.
    transfers: dict[str, list[dict]] = defaultdict(list)
    for entry in storage_gets(archive):
        transfers[file_name(entry["path"])].append(entry)
    assert sorted(transfers) == names
    for name, tries in transfers.items():
        tries.sort(key=lambda e: e["start"])
        good = [
            e
            for e in tries
            if e["fault"] is None
            and (
                (e["status"] == 200 and e["bytes_sent"] == SOAK_SIZE)
                or (e["status"] == 206 and 0 < e["bytes_sent"] < SOAK_SIZE)
            )
        ]
        assert len(good) == 1, (name, tries)
        assert tries[-1] is good[0], (name, tries)  # nothing fetched after the good one
        if good[0]["status"] == 206:  # resumed only where a body fault cut a transfer off
            assert plan.get(name) in BODY_FAULTS, (name, tries)
        spoiled = [e["fault"] for e in tries[:-1]]
        expected = [plan[name]] if name in plan else []
        assert spoiled == expected, (name, tries)

    # Memory stays flat.
    for index in range(len(fleet.nodes)):
        assert len(sampler.steady[index]) >= 4, figures
        first, last = sampler.quarters(index)
        assert sampler.peak(index) < PEAK_RSS_LIMIT, figures
        assert last <= first + RSS_GROWTH_LIMIT, figures


# --- Redis restarted mid-crawl -----------------------------------------------------------


def verified_names(archive, store: Path, identifier: str) -> set[str]:
    """Names of the files stored whole and verified (the store writes atomically)."""
    folder = store / identifier
    if not folder.is_dir():
        return set()
    sizes = {f.name: f.size for f in archive.item(identifier).files}
    return {
        p.name
        for p in folder.iterdir()
        if p.name in sizes
        and hashlib.md5(p.read_bytes()).hexdigest() == md5_of(identifier, p.name, sizes[p.name])
    }


def wait_exits(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(n.exited is None for n in nodes):
        for node in nodes:
            if node.exited is None and node.process.poll() is not None:
                node.exited = time.time()
        if time.monotonic() > deadline:
            kill_all(nodes)
            pytest.fail(f"nodes still running after {timeout:.0f} s")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("grace", "outage", "expected"),
    [(30, 1.0, "reconnected"), (1, 5.0, "failed")],  # an outage within, then beyond, the grace
)
def test_redis_restarted_mid_crawl_nodes_reconnect_or_fail_clearly_and_a_rerun_completes(
    archive, tmp_path, record_property, grace, outage, expected
):
    identifier, count = "restart-24", 24
    # 1 s per 64 KiB file, 2 nodes x 2 at a time: about 6 s of transfers, Redis stopped
    # after 8 files.
    archive.configure({"bandwidth": 65536, "items": {identifier: {"count": count}}})
    server = RedisServer(databases=1, appendonly=True)
    store = tmp_path / "store"
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = NodeGroup(server, 0, logs)  # type: ignore[arg-type]  # only url() and client() used
    details = f"url={archive.details_url(identifier)}"
    settings = {
        "RAVEL_NODE_TTL": 6,
        "RAVEL_HEARTBEAT": 1,
        "RAVEL_IDLE_QUIET": 1.5,
        "RAVEL_REDIS_GRACE": grace,
    }
    try:
        server.start()
        first = [fleet.start("-a", details, store=store, **settings) for _ in range(2)]

        # Mid-crawl: some files verified, most still to come, both nodes running.
        deadline = time.monotonic() + 60
        while len(verified_names(archive, store, identifier)) < 8:
            assert time.monotonic() < deadline, [n.log[-2000:] for n in first]
            assert all(n.process.poll() is None for n in first), [n.log[-2000:] for n in first]
            time.sleep(0.1)
        before_stop = len(verified_names(archive, store, identifier))
        stopped = time.time()
        server.stop()
        down_at = time.time()
        time.sleep(outage)
        server.start()
        back = time.time()
        with server.client() as kept:  # the append-only file kept the queue
            acked_after_restart = int(kept.hget("ravel:counters", "acked") or 0)
            pending_after_restart = kept.zcard("ravel:requests") + kept.hlen("ravel:inflight")
        wait_exits(first, timeout=120)

        outcomes = []
        for node in first:
            errors = [
                line for line in node.log.splitlines() if line.startswith(("[ERROR]", "[CRITICAL]"))
            ]
            outcomes.append(
                {
                    "exit": node.returncode,
                    "outcome": "reconnected" if node.returncode == 0 else "failed",
                    "exit_after_stop_s": round(node.exited - stopped, 1),
                    "noticed": bool(node.lines("[fleet] Redis at")),
                    "files": node.downloaded,
                    "errors": errors,
                }
            )
        stored_before = verified_names(archive, store, identifier)
        figures = {
            "verified_at_stop": before_stop,
            "redis_down_s": round(back - stopped, 2),
            "redis_stop_took_s": round(down_at - stopped, 2),
            "acked_kept_across_restart": acked_after_restart,
            "pending_kept_across_restart": pending_after_restart,
            "nodes": outcomes,
            "verified_before_rerun": len(stored_before),
        }
        print(f"\n[redis restart] {figures}")

        # Reconnected, or failed clearly: one ERROR line naming Redis, no traceback.
        assert before_stop < count  # Redis went away mid-crawl
        # The append-only file kept the queue: entries done, and entries still to do.
        assert acked_after_restart >= 1 and pending_after_restart >= 1
        for node, outcome in zip(first, outcomes, strict=True):
            assert "Traceback" not in node.log, node.log[-3000:]
            assert outcome["noticed"], node.log[-3000:]
            assert outcome["outcome"] == expected, node.log[-3000:]
            if node.returncode == 0:
                assert outcome["errors"] == [], node.log[-3000:]
                assert node.lines("[fleet] Redis at") and "answers again" in node.log
            else:
                assert node.returncode == 1, node.log[-3000:]
                assert len(outcome["errors"]) == 1, node.log[-3000:]
                assert "Redis" in outcome["errors"][0], node.log[-3000:]

        # The re-run (the same command on two nodes) completes and re-fetches nothing verified.
        archive.reset()
        rerun_started = time.time()
        again = [fleet.start("-a", details, store=store, **settings) for _ in range(2)]
        wait_exits(again, timeout=120)
        refetched = [file_name(e["path"]) for e in storage_gets(archive)]
        requeued = [line for n in again for line in n.lines("[fleet] requeued")]
        figures.update(
            rerun_s=round(max(n.exited for n in again) - rerun_started, 1),
            rerun_fetched=len(refetched),
            rerun_requeued=requeued,
        )
        print(f"[redis restart] re-run: {figures['rerun_s']} s, {len(refetched)} files fetched")
        for key, value in figures.items():
            record_property(key, value)
        for node in again:
            assert node.returncode == 0, node.log[-3000:]
            assert "Traceback" not in node.log, node.log[-3000:]
            assert node.lines("[ERROR]") == [], node.log[-3000:]
        assert set(refetched).isdisjoint(stored_before), sorted(set(refetched) & stored_before)
        assert Counter(refetched) == Counter(set(refetched))  # each missing file once
        assert set(refetched) | stored_before == {f"track{n:02d}.mp3" for n in range(1, count + 1)}
        assert_store_verified(archive, store, identifier, count)
        if expected == "reconnected":
            assert len(stored_before) == count and refetched == []  # the first run finished
        else:
            assert requeued  # the failed nodes' leases went to the re-run
        with server.client() as client:
            left = (client.zcard("ravel:requests"), client.hlen("ravel:inflight"))
            assert left == (0, 0) and client.hlen("ravel:dead") == 0  # nothing lost
    finally:
        fleet.close()
        server.stop()
        server.workdir.cleanup()
