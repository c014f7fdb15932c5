"""Back-pressure (``RAVEL_FLEET_MAX_PENDING``), end to end: real nodes on a real Redis, the
fake archive.org serving a generated collection whose listing outruns its downloads (file
bodies at a few kB/s). The test polls the ledger while the run goes on."""

from __future__ import annotations

import signal
import time

import pytest

from tests.fakearchive import FakeArchive
from tests.support.crawl import FAST_LISTING, stored_files
from tests.support.fleet import Node, NodeGroup, scrapy_fleet

pytestmark = pytest.mark.slow

ITEMS, FILES = 40, 5  # 200 files of 1 kB, one search page
BOUND = 20
CONFIG = {"collections": {"bp": {"items": ITEMS, "files": FILES, "size": 1000}}}


@pytest.fixture(scope="module")
def fake() -> FakeArchive:
    with FakeArchive(CONFIG) as server:
        yield server


def pending(fleet: NodeGroup) -> tuple[int, bool]:
    """The run's pending files, read from the ledger, and whether listing is held back."""
    tally = {k.decode(): int(v) for k, v in fleet.redis.hgetall("ravel:tally").items()}
    held = fleet.redis.hget("ravel:run", "listing_held") == b"1"
    return tally.get("listed", 0) - tally.get("verified", 0) - tally.get("failed", 0), held


def assert_clean(node: Node) -> None:
    assert node.returncode == 0, node.log[-3000:]
    assert "Traceback" not in node.log and node.lines("[ERROR]") == []


def test_listing_waits_while_too_many_files_are_pending(fake, fleet, tmp_path):
    fake.reset()
    fake.configure({"bandwidth": 8000})  # 1 kB in ~0.13 s: /metadata outruns the files
    store = tmp_path / "store"
    settings = {
        **FAST_LISTING,
        "RAVEL_ORIGIN": fake.archive,
        "RAVEL_FLEET_MAX_PENDING": BOUND,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
    }
    for _ in range(2):
        fleet.start("-a", "collection=bp", store=store, **settings)
    peak, held_seen, shown = 0, False, ""
    deadline = time.monotonic() + 180
    while any(n.process.poll() is None for n in fleet.nodes) and time.monotonic() < deadline:
        now, held = pending(fleet)
        peak = max(peak, now)
        held_seen = held_seen or held
        if held and not shown:
            # The nodes paused while `status` starts (seconds under load): the ledger stays
            # as it is, listing held back, for its answer.
            paused = [n.process for n in fleet.nodes if n.process.poll() is None]
            for process in paused:
                process.send_signal(signal.SIGSTOP)
            now, held = pending(fleet)
            if held:
                peak = max(peak, now)
                shown = scrapy_fleet(fleet.url, "status").stdout
            for process in paused:
                process.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    fleet.wait(timeout=30)
    fake.configure({"bandwidth": None})
    print(f"\n[back-pressure] bound {BOUND}, items of {FILES} files: peak pending {peak}")
    for node in fleet.nodes:
        assert_clean(node)
    assert held_seen, "listing was never held back"
    assert "listing held back: " in shown and f"RAVEL_FLEET_MAX_PENDING {BOUND}" in shown
    assert BOUND <= peak <= BOUND + FILES  # reached, never passed by more than one item
    state = fleet.queue_state()
    files = ITEMS * FILES
    assert state["files"] == {"listed": files, "verified": files, "failed": 0, "pending": 0}
    assert state["item_counts"]["done"] == ITEMS and state["run_state"] == "closed"
    assert state["max_pending"] == BOUND and state["listing_held"] is False
    assert len(stored_files(store)) == files
    assert sum(n.downloaded for n in fleet.nodes) == files


def test_nodes_killed_and_stopped_while_listing_is_held_back_lose_nothing(fake, fleet, tmp_path):
    """One node SIGKILLed and one SIGTERMed while listing waits: their leases (files and
    listing entries) go back to the queue, a third node finishes the run, nothing is lost."""
    fake.reset()
    fake.configure({"bandwidth": 4000})
    store = tmp_path / "store"
    settings = {
        **FAST_LISTING,
        "RAVEL_ORIGIN": fake.archive,
        "RAVEL_FLEET_MAX_PENDING": BOUND,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
    }
    killed = fleet.start("-a", "collection=bp", store=store, **settings)
    stopped = fleet.start("-a", "collection=bp", store=store, **settings)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (
        pending(fleet)[1] and all(n.lines("[download start]") for n in (killed, stopped))
    ):
        time.sleep(0.02)
    assert pending(fleet)[1], "listing was never held back"
    assert killed.process.poll() is None and stopped.process.poll() is None
    killed.process.send_signal(signal.SIGKILL)
    killed.exited = time.time()
    stopped.process.send_signal(signal.SIGTERM)
    stopped.process.wait(timeout=60)
    stopped.exited = time.time()
    left, _ = pending(fleet)
    assert 0 < left <= BOUND + FILES
    fake.configure({"bandwidth": None})
    finisher = fleet.start("-a", "collection=bp", store=store, **settings)
    fleet.wait(timeout=180)
    assert_clean(finisher)
    assert "Traceback" not in stopped.log
    assert stopped.lines("[ERROR]") == []  # stopped: whatever it held went back at once
    state = fleet.queue_state()
    files = ITEMS * FILES
    assert state["files"] == {"listed": files, "verified": files, "failed": 0, "pending": 0}
    assert state["item_counts"]["done"] == ITEMS and state["run_state"] == "closed"
    assert (state["queued"], state["inflight"], state["dead"]) == (0, 0, 0)
    assert state["reclaimed"] >= 1  # the killed node's leases, taken over after its TTL
    assert len(stored_files(store)) == files
