"""Back-pressure (``RAVEL_FLEET_MAX_PENDING``), end to end: real nodes on a real Redis, the
fake archive.org serving a generated collection whose listing outruns its downloads (file
bodies at a few kB/s). The test polls the ledger while the run goes on."""

from __future__ import annotations

import time

import pytest

from tests.fakearchive import FakeArchive
from tests.support.crawl import FAST_LISTING, stored_files
from tests.support.fleet import Node, NodeGroup, scrapy_fleet
from tests.support.redisserver import RedisServer

pytestmark = pytest.mark.slow

ITEMS, FILES = 40, 5  # 200 files of 1 kB, one search page
BOUND = 20
CONFIG = {"collections": {"bp": {"items": ITEMS, "files": FILES, "size": 1000}}}


@pytest.fixture(scope="module")
def fake() -> FakeArchive:
    with FakeArchive(CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
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
        if held and not held_seen:
            held_seen = True
            shown = scrapy_fleet(fleet.url, "status").stdout
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
