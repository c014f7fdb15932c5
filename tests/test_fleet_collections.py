"""Collections in a fleet, end to end: real ``scrapy crawl ravel`` nodes on a real Redis,
against the fake archive.org's scrape API. Figures are printed (``pytest -s``)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.fakearchive import FakeArchive, max_simultaneous
from tests.support.catalog import catalog_fixtures
from tests.support.crawl import FAST_LISTING, RAVEL, RAVEL_MP3S, stored_files
from tests.support.fleet import (
    NONE_DIES,
    Node,
    NodeGroup,
    scrapy_fleet,
    storage_gets,
    wait_for,
    wait_queued,
)
from tests.support.redisserver import RedisServer

pytestmark = pytest.mark.slow

ITEMS = 201  # three search pages of 100 (the last one holds one item)
SAMPLES_ONLY = "samples-only-cd"  # every recording access-restricted: fails as an item
CONFIG = {
    "collections": {
        "fleetgen": {"items": ITEMS, "files": 1, "size": 1500},
        "mix": {"members": [RAVEL, SAMPLES_ONLY]},
        "oom2": {"items": 2, "files": 1, "size": 1500},
        "oom3": {"items": 3, "files": 1, "size": 1500},
        "full": {"items": 4, "files": 1, "size": 16384},
        "paged": {"items": 3, "files": 1, "size": 1500},
    }
}


fake, routes = catalog_fixtures(CONFIG)


def assert_clean(node: Node) -> None:
    assert node.returncode == 0, node.log[-3000:]
    assert "Traceback" not in node.log and node.lines("[ERROR]") == []


def test_two_nodes_share_a_collection_each_item_listed_once_each_file_fetched_once(
    routes, fleet, tmp_path
):
    store = tmp_path / "store"  # one store for both nodes, as on a shared disk
    settings = {
        **FAST_LISTING,
        **NONE_DIES,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
        "RAVEL_FLEET_MAX_TRANSFERS": 2,
    }
    started = time.monotonic()
    first = fleet.start(
        "-a", "collection=fleetgen", store=store, **routes_origin(routes), **settings
    )
    wait_queued(fleet, first)  # nodes start in any order, seconds apart
    second = fleet.start(
        "-a", "collection=fleetgen", store=store, **routes_origin(routes), **settings
    )
    fleet.wait(timeout=240)
    took = time.monotonic() - started

    gets = storage_gets(routes)
    counts = routes.routes()
    stats = routes.stats()
    split = (first.downloaded, second.downloaded)
    listed = (len(first.lines("[item] ")), len(second.lines("[item] ")))
    peak = max_simultaneous(stats["log"])
    print(
        f"\n[fleet collection] {ITEMS} items over 2 nodes in {took:.1f} s: files {split}, "
        f"items listed {listed}, scrape pages {counts.get('scrape')}, /metadata "
        f"{counts.get('metadata')}, server peak {peak} (cap 2)"
    )
    for node in fleet.nodes:
        assert_clean(node)
    assert len(gets) == ITEMS and len({e["path"] for e in gets}) == ITEMS  # each file once
    assert counts["metadata"] == ITEMS and sum(listed) == ITEMS  # no item listed twice
    assert counts["scrape"] == 3  # each search page once, by whichever node held it
    assert min(split) >= ITEMS // 10 and min(listed) >= 1  # both nodes worked
    assert peak <= 2  # the fleet-wide cap holds search pages and /metadata too
    assert len(stored_files(store)) == ITEMS
    # One node pushed the search, the other joined it and did not re-page (which one depends
    # on which got through start-up first, seconds apart on a loaded machine).
    joined = [bool(n.lines("already queued or done by the fleet")) for n in (first, second)]
    assert sorted(joined) == [False, True]
    closing = [line for n in fleet.nodes for line in n.lines("[fleet] run 1 closed")]
    assert closing == [
        f"{closing[0].split('[fleet]')[0]}[fleet] run 1 closed: {ITEMS} of {ITEMS} files "
        f"verified, {ITEMS} of {ITEMS} items done; "
        "a re-run lists again the items not recorded unchanged"
    ]
    state = fleet.queue_state()
    assert state["item_counts"] == {"listed": ITEMS, "done": ITEMS, "failed": 0, "pending": 0}
    assert state["files"] == {"listed": ITEMS, "verified": ITEMS, "failed": 0, "pending": 0}
    assert state["searches"] == {}  # a search is named there only once it failed
    shown = scrapy_fleet(fleet.url, "status")
    assert f"items: {ITEMS} listed, {ITEMS} done, 0 failed, 0 pending" in shown.stdout
    # Every item was recorded complete by the node that verified its last file, whichever
    # node stored its other files: the nightly re-run asks for the search pages only.
    records = sorted(p.stem for p in (store / ".ravel" / "items").glob("*.json"))
    assert len(records) == ITEMS and records[0] == "fleetgen-00001"

    routes.reset()
    again = fleet.start(
        "-a", "collection=fleetgen", store=store, **routes_origin(routes), **FAST_LISTING
    )
    fleet.wait(timeout=120)
    assert_clean(again)
    assert routes.routes().get("metadata", 0) == 0 and routes.routes()["scrape"] == 3
    assert storage_gets(routes) == []
    assert len(again.lines("[item unchanged]")) == ITEMS


def test_an_item_that_fails_inside_a_pushed_collection_fails_alone(routes, fleet, tmp_path):
    store = tmp_path / "store"
    waiting = {**FAST_LISTING, "RAVEL_WAIT_FOR_WORK": 4}
    nodes = [
        fleet.start(store=store, **routes_origin(routes), **waiting),
        fleet.start(store=store, **routes_origin(routes), **waiting),
    ]
    pushed = scrapy_fleet(fleet.url, "push", "--collection", "mix")
    assert pushed.returncode == 0, pushed.stderr
    assert '{"collection": "mix"}' in pushed.stdout
    fleet.wait(timeout=120)

    assert sorted(stored_files(store)) == sorted(f"{RAVEL}/{name}" for name in RAVEL_MP3S)
    failed = [line for n in nodes for line in n.lines("[item failed]")]
    assert len(failed) == 1 and failed[0].startswith("[ERROR]") and SAMPLES_ONLY in failed[0]
    closing = [n for n in nodes if n.lines("[fleet] run 1 closed")]
    assert len(closing) == 1 and closing[0].returncode == 1
    (summary,) = closing[0].lines("[fleet] run 1 closed")
    assert "[ERROR]" in summary and f"1 items or jobs failed: '{SAMPLES_ONLY}'" in summary
    for node in nodes:
        assert "Traceback" not in node.log
        # a node exits 1 only for a failure it saw or a run it closed with failures
        assert node.returncode == (1 if node.lines("[item failed]") or node is closing[0] else 0)
    state = fleet.queue_state()
    assert state["item_counts"] == {"listed": 1, "done": 1, "failed": 1, "pending": 0}
    assert state["items"][SAMPLES_ONLY]["error"].startswith("the recordings")
    assert routes.routes()["scrape"] == 1 and routes.routes()["metadata"] == 2


def test_bad_collection_pushes_are_one_line_and_never_reach_redis(fleet):
    for args, reason in (
        (("--collection", "not an id!"), "not an archive.org identifier"),
        (("--search", "   "), "an empty search"),
        (("--search", "x" * 5000), "at most 4096 bytes"),
    ):
        done = scrapy_fleet(fleet.url, "push", *args)
        assert done.returncode == 1 and reason in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert fleet.queue_state()["start_urls"] == 0


def routes_origin(fake: FakeArchive) -> dict[str, str]:
    return {"RAVEL_ORIGIN": fake.archive}


def push_as_redis_fills_up(group: NodeGroup, collection: str) -> None:
    """Push a collection, and in the same step fill Redis up: every write that needs memory is
    refused from then on (``maxmemory``, ``noeviction``: Redis's default)."""
    with group.redis.pipeline(transaction=True) as step:
        step.rpush("ravel:start_urls", json.dumps({"collection": collection}))
        step.config_set("maxmemory", 1)
        step.execute()


def test_a_pushed_collection_redis_cannot_queue_stays_and_the_node_exits_1(routes, tmp_path):
    """Issue 18 (5): Redis out of memory (maxmemory) as a waiting node takes a pushed
    collection. The start URL was removed although its search page was never queued; reads
    that worked reset the grace period, so the node never gave up; a SIGTERM exited 0; and
    `scrapy fleet status` showed no trace of the job. Now the start URL stays until its
    requests are queued, writes failing for RAVEL_REDIS_GRACE stop the node, a node holding
    work it could not queue exits 1, and a later node takes the job."""
    store = tmp_path / "store"
    waiting = {**FAST_LISTING, **routes_origin(routes), "RAVEL_WAIT_FOR_WORK": -1}
    with RedisServer(databases=1) as server, NodeGroup.on(server, tmp_path) as group:
        # Writes refused for longer than the grace period: the node gives up, in one line.
        first = group.start(store=store, RAVEL_HEARTBEAT=2, RAVEL_REDIS_GRACE=3, **waiting)
        wait_for(first, "waiting for work")
        push_as_redis_fills_up(group, "oom2")
        group.wait(timeout=30)  # it used to wait on forever, its reads working
        assert first.returncode == 1, first.log[-3000:]
        errors = first.lines("[ERROR]")
        assert len(errors) == 1 and "OutOfMemoryError" in errors[0], first.log[-3000:]
        assert "Traceback" not in first.log
        assert group.queue_state()["start_urls"] == 1  # the job is still there
        assert routes.routes().get("scrape", 0) == 0

        # Memory again: the next node takes the job and mirrors the collection.
        group.redis.config_set("maxmemory", 0)
        second = group.start(store=store, RAVEL_REDIS_GRACE=60, **waiting)
        wait_for(second, "[fleet] run 1 closed: 2 of 2 files verified")
        assert len(stored_files(store)) == 2
        assert group.queue_state()["start_urls"] == 0

        # A SIGTERM while it holds a job Redis would not queue: exit 1, the job stays.
        push_as_redis_fills_up(group, "oom3")
        wait_for(second, "[fleet] start URL from ravel:start_urls", count=2)
        time.sleep(1.5)  # ticks whose reads work, and the heartbeats that fail
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=30) == 1, second.log[-3000:]
        assert "Traceback" not in second.log
        assert any("could not queue" in line for line in second.lines("[ERROR]")), second.log[
            -3000:
        ]
        status = scrapy_fleet(group.url, "status")
        assert "1 start URLs waiting" in status.stdout, status.stdout + status.stderr
        assert 'start URL waiting: {"collection": "oom3"}' in status.stdout, status.stdout
        group.redis.config_set("maxmemory", 0)
    assert routes.routes()["scrape"] == 1  # oom3's page was never asked for


def test_redis_full_while_listing_is_one_error_line_and_a_rerun_completes(routes, tmp_path):
    """What held in issue 18, kept: `maxmemory` reached while a node lists a collection."""
    store = tmp_path / "store"
    # A second per file; the last item's /metadata stalls, so that its listing is still under
    # way when Redis is full (whatever the machine's load): its files can't be queued.
    stall = {"kind": "stall", "host": "archive", "match": "/metadata/full-00004", "stall": 6}
    routes.configure({"bandwidth": 16384, "faults": [stall]})
    settings = {**FAST_LISTING, **routes_origin(routes), "CONCURRENT_REQUESTS_PER_DOMAIN": 1}
    with RedisServer(databases=1) as server, NodeGroup.on(server, tmp_path) as group:
        first = group.start("-a", "collection=full", store=store, RAVEL_REDIS_GRACE=3, **settings)
        wait_for(first, "[item] full-00001")  # listing; full-00004's /metadata stalls 6 s
        group.redis.config_set("maxmemory", 1)
        group.wait(timeout=60)
        assert first.returncode == 1, first.log[-3000:]
        errors = first.lines("[ERROR]")
        assert len(errors) == 1 and "OutOfMemoryError" in errors[0], first.log[-3000:]
        assert "Traceback" not in first.log

        group.redis.config_set("maxmemory", 0)
        routes.configure({"bandwidth": None})
        again = group.start("-a", "collection=full", store=store, **settings)
        group.wait(timeout=90)
        assert_clean(again)
        assert len(stored_files(store)) == 4
        state = group.queue_state()
        assert state["files"] == {"listed": 4, "verified": 4, "failed": 0, "pending": 0}


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_node_paging_a_search_stopped_mid_page_loses_nothing(routes, fleet, tmp_path, how):
    """What held in issue 18, kept: SIGKILL or SIGTERM of the node that holds a search page;
    another node takes the page over and mirrors the collection."""
    scrape = "/services/search/v1/scrape"
    routes.configure(
        {"faults": [{"kind": "stall", "host": "archive", "match": scrape, "stall": 5}]}
    )
    store = tmp_path / "store"
    settings = {**FAST_LISTING, **routes_origin(routes)}
    first = fleet.start("-a", "collection=paged", store=store, **settings)
    deadline = time.monotonic() + 30
    while not routes.stats()["faults_fired"]:  # the page is half sent, then stalls
        assert time.monotonic() < deadline and first.process.poll() is None, first.log[-3000:]
        time.sleep(0.05)
    first.process.send_signal(how)
    assert first.process.wait(timeout=30) == (-9 if how == signal.SIGKILL else 1)
    first.exited = time.time()
    second = fleet.start("-a", "collection=paged", store=store, **settings)
    fleet.wait(timeout=90)
    assert_clean(second)
    assert len(stored_files(store)) == 3
    state = fleet.queue_state()
    assert state["files"] == {"listed": 3, "verified": 3, "failed": 0, "pending": 0}
    assert state["item_counts"]["done"] == 3
