"""The fleet's ledger end to end: real nodes, a real Redis, the fake archive.org.

A node stopped for any reason puts back what it has not finished; a run is closed, and a node
exits 0, only when no file is pending; failures are named; bad jobs, hostile entries and bad
Redis values never stop or wedge a node. Figures are printed: ``pytest -s`` shows them.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.crawl import ROOT, crawl_command, crawl_env, small_tmpfs
from tests.support.fleet import Node, NodeGroup, fleet_status, scrapy_fleet, wait_for
from tests.support.redisserver import RedisServer
from tests.support.tinyarchive import TinyArchive, body_of, metadata_entry

WAITING = {"RAVEL_WAIT_FOR_WORK": -1}


@pytest.fixture(scope="module")
def ledger_redis():
    with RedisServer(databases=16) as server:
        yield server


@pytest.fixture
def fleet(ledger_redis, tmp_path):
    with NodeGroup.on(ledger_redis, tmp_path) as group:
        yield group


def verified(store: Path, archive, identifier: str) -> int:
    """Files of ``identifier`` in ``store`` whose bytes are archive.org's."""
    folder = store / identifier
    return sum(
        1
        for path in folder.iterdir()
        if path.is_file()
        and hashlib.md5(path.read_bytes()).hexdigest() == archive.md5_of(identifier, path.name)
    )


def stop(node: Node, how: signal.Signals = signal.SIGTERM) -> int:
    node.process.send_signal(how)
    code = node.process.wait(timeout=60)
    node.exited = time.time()
    return code


@pytest.mark.slow
def test_sigterm_with_the_default_delay_puts_back_the_entries_waiting_for_their_pause(
    archive, fleet, tmp_path
):
    """Issue 8, finding 1: the entries a stopped node held (waiting for the download delay)
    were acknowledged as done, and the next node closed the run without them."""
    archive.configure({"items": {"sig-6": {"count": 6}}})
    store = tmp_path / "store"
    details = f"url={archive.details_url('sig-6')}"
    first = fleet.start("-a", details, store=store, DOWNLOAD_DELAY=2)  # the default pause
    wait_for(first, "[download finished]")
    assert stop(first) == 1  # stopped in the middle of a job
    assert first.lines("[fleet] handed"), first.log[-2000:]
    state = fleet_status(fleet.url)
    assert state["files"]["pending"] >= 1 and state["run_state"] == "open"

    second = fleet.start("-a", details, store=store)
    fleet.wait()
    assert second.returncode == 0, second.log[-3000:]
    assert verified(store, archive, "sig-6") == 6
    state = fleet_status(fleet.url)
    assert state["files"] == {"listed": 6, "verified": 6, "failed": 0, "pending": 0}
    assert state["run_state"] == "closed"
    assert second.lines("run 1 closed: 6 of 6 files verified")
    print(
        f"\n[ledger] SIGTERM, default delay: {first.lines('[fleet] handed')[0].split(chr(9))[-1]}"
    )


@pytest.mark.slow
def test_sigint_with_delay_0_on_two_nodes_loses_nothing_and_both_show_the_fleet_progress(
    archive, fleet, tmp_path
):
    archive.configure({"bandwidth": 65536, "items": {"int-12": {"count": 12}}})
    store = tmp_path / "store"
    details = f"url={archive.details_url('int-12')}"
    victim = fleet.start("-a", details, store=store, RAVEL_PROGRESS_INTERVAL=1)
    survivor = fleet.start("-a", details, store=store, RAVEL_PROGRESS_INTERVAL=1)
    wait_for(survivor, "[progress] fleet")
    wait_for(victim, "[progress] fleet")  # under load, its first line can come late
    wait_for(victim, "[download start]")
    assert stop(victim, signal.SIGINT) == 1  # Ctrl-C in the middle of a job
    fleet.wait()
    assert survivor.returncode == 0, survivor.log[-3000:]
    assert verified(store, archive, "int-12") == 12
    assert fleet_status(fleet.url)["files"]["pending"] == 0
    for node in fleet.nodes:  # every node tells the fleet's truth, and its own share
        lines = node.lines("[progress] fleet")
        assert lines and all("/12 files" in line and "this node" in line for line in lines)


@pytest.mark.slow
def test_a_waiting_fleet_serves_on_after_a_bad_job_and_stops_cleanly(archive, fleet, tmp_path):
    """Pushed jobs are validated; a job the node cannot list fails in the ledger, not the
    node; a node stopped mid-job exits 1 and hands its entries back; one stopped idle exits 0."""
    archive.configure({"bandwidth": 65536, "items": {"wait-8": {"count": 8}}})
    store = tmp_path / "store"
    origin = {"RAVEL_ORIGIN": archive.archive}

    refused = scrapy_fleet(fleet.url, "push", "not/an id", **origin)
    assert refused.returncode == 1 and "not an archive.org identifier" in refused.stderr
    foreign = scrapy_fleet(fleet.url, "push", "http://127.0.0.3:9/details/x", **origin)
    assert foreign.returncode == 1 and "would refuse it" in foreign.stderr
    assert fleet.redis.llen("ravel:start_urls") == 0

    first = fleet.start(store=store, **WAITING, **origin)
    wait_for(first, "waiting for work")
    pushed = scrapy_fleet(
        fleet.url, "push", "NoSuchItemAtAll", archive.details_url("wait-8"), **origin
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.count("pushed {") == 2
    wait_for(first, "[download start]")
    assert first.lines("[ERROR]") and "NoSuchItemAtAll" in first.lines("[ERROR]")[0]
    assert first.process.poll() is None  # the bad job did not stop the node
    assert stop(first) == 1  # stopped in the middle of a job

    second = fleet.start(store=store, **WAITING, **origin)
    # The run closes once every file settled (no `fleet status` polled meanwhile: a Scrapy
    # process every 0.5 s took the CPU the nodes needed).
    wait_for(second, "run 1 closed")
    state = fleet_status(fleet.url)
    assert state["files"] == {"listed": 8, "verified": 8, "failed": 0, "pending": 0}
    assert "unknown item" in state["items"]["NoSuchItemAtAll"]["error"]
    text = scrapy_fleet(fleet.url, "status").stdout
    assert "NoSuchItemAtAll" in text and "job failed" in text
    assert verified(store, archive, "wait-8") == 8
    closing = second.lines("run 1 closed")[0]
    assert "[ERROR]" in closing and "1 items or jobs failed: 'NoSuchItemAtAll'" in closing
    assert stop(second) == 1  # it closed a run with a failed job

    idle = fleet.start(store=store, **WAITING, **origin)
    wait_for(idle, "waiting for work")
    time.sleep(1.5)  # a heartbeat or two
    assert stop(idle) == 0  # a waiting node, no work held, nothing failed: a normal stop


@pytest.mark.slow
def test_entries_given_up_fail_their_files_and_the_run(archive, fleet, tmp_path):
    """Issue 8, finding 9: with RAVEL_MAX_ATTEMPTS=1 a killed node's files were dropped, exit 0."""
    archive.configure({"bandwidth": 32768, "items": {"dead-6": {"count": 6}}})
    store = tmp_path / "store"
    details = f"url={archive.details_url('dead-6')}"
    victim = fleet.start("-a", details, store=store, RAVEL_MAX_ATTEMPTS=1)
    wait_for(victim, "[download start]")
    survivor = fleet.start("-a", details, store=store, RAVEL_MAX_ATTEMPTS=1)
    victim.process.send_signal(signal.SIGKILL)
    victim.exited = time.time()
    fleet.wait()
    assert survivor.returncode == 1, survivor.log[-3000:]
    closing = survivor.lines("[fleet] run 1 closed")
    assert closing and "failed: 'dead-6/track" in closing[0] and "given up" in closing[0]
    state = fleet_status(fleet.url)
    assert state["files"]["failed"] >= 1 and state["files"]["pending"] == 0
    assert state["files"]["verified"] + state["files"]["failed"] == 6


@pytest.mark.slow
def test_the_fleet_keeps_exactly_the_files_a_single_node_keeps(fleet, tmp_path):
    """Odd lengths are kept (as a single node keeps them); a case-only duplicate name is
    refused fleet-wide, as a single node refuses it, and fails the run."""
    files = [
        metadata_entry("odd", "a.mp3", length="-5"),
        metadata_entry("odd", "b.mp3", length="nan"),
        metadata_entry("odd", "Track.mp3"),
        metadata_entry("odd", "track.mp3"),
        metadata_entry("odd", "c.mp3"),
    ]
    with TinyArchive({"odd": files}) as tiny:
        store = tmp_path / "store"
        details = f"url={tiny.details_url('odd')}"
        for _ in range(2):
            fleet.start("-a", details, store=store, RAVEL_NODE_MAX_LEASES=1)
        fleet.wait()
    stored = sorted(p.name for p in (store / "odd").iterdir())
    assert stored == ["Track.mp3", "a.mp3", "b.mp3", "c.mp3"]
    for name in stored:
        assert (store / "odd" / name).read_bytes() == body_of("odd", name)
    logs = "".join(n.log for n in fleet.nodes)
    assert "Traceback" not in logs
    assert "[download failed] 'track.mp3': refused the name: it differs only in case" in logs
    assert {n.returncode for n in fleet.nodes} == {1} or sorted(
        n.returncode for n in fleet.nodes
    ) == [0, 1]
    state = fleet_status(fleet.url)
    assert state["files"] == {"listed": 5, "verified": 4, "failed": 1, "pending": 0}


@pytest.mark.slow
def test_hostile_redis_values_never_stop_or_wedge_a_node(archive, fleet, tmp_path):
    archive.configure({"items": {"good-3": {"count": 3}}})
    redis = fleet.redis
    nested = b"[" * 100_000 + b"]" * 100_000
    redis.rpush("ravel:start_urls", nested)  # at the head: it closed every waiting node
    redis.rpush("ravel:start_urls", b"x" * (1 << 20))  # 1 MB: read, logged whole
    redis.rpush("ravel:start_urls", json.dumps({"item": "good-3"}))
    redis.zadd("ravel:requests", {"deep": 0})
    redis.hset("ravel:payloads", "deep", nested)  # RecursionError in the decoder
    redis.zadd("ravel:requests", {"huge": 0})
    redis.hset("ravel:payloads", "huge", b"{" * (3 << 20))  # never sent to the node
    redis.hset("ravel:inflight", "no-bar", "garbage")  # a malformed lease
    redis.hset("ravel:payloads", "no-bar", b"{}")
    redis.set("ravel:activity", "not-a-number")
    redis.set("ravel:seq", "garbage")  # counters written by hand are repaired
    redis.hset("ravel:counters", "acked", "1.5")
    redis.hset("ravel:attempts", "no-bar", "x")
    store = tmp_path / "store"
    node = fleet.start(store=store, RAVEL_WAIT_FOR_WORK=1.5, RAVEL_ORIGIN=archive.archive)
    fleet.wait(timeout=60)
    log = node.log
    assert "Traceback" not in log
    assert max(len(line) for line in log.splitlines()) < 2000
    assert verified(store, archive, "good-3") == 3
    rejected = {k.decode(): v.decode() for k, v in redis.hgetall("ravel:rejected").items()}
    assert rejected["deep"].startswith("not a JSON entry") or "Recursion" in rejected["deep"]
    assert "larger than" in rejected["huge"]
    assert any("larger than" in v for k, v in rejected.items() if k.startswith("start_url:"))
    assert "no-bar" in rejected  # the malformed lease was requeued, then refused
    assert redis.llen("ravel:start_urls") == 0 and redis.hlen("ravel:inflight") == 0
    assert node.returncode == 0, log[-3000:]


@pytest.mark.slow
def test_a_waiting_node_on_a_fresh_redis_waits_as_long_as_asked(archive, fleet, tmp_path):
    node = fleet.start(store=tmp_path, RAVEL_WAIT_FOR_WORK=3)
    wait_for(node, "waiting for work")
    waiting = time.time()
    fleet.wait(timeout=60)
    assert node.returncode == 0, node.log[-3000:]
    # It exited RAVEL_IDLE_QUIET (1 s) after joining: no activity counted as idle since 1970.
    # The wait counts from its joining, which the test sees in the log a moment later.
    assert node.exited - waiting >= 2


@pytest.mark.slow
def test_a_key_of_the_wrong_type_stops_a_running_node_in_one_line(fleet, tmp_path):
    node = fleet.start(store=tmp_path, **WAITING)
    wait_for(node, "waiting for work")
    fleet.redis.sadd("ravel:start_urls", "not a list")
    fleet.wait(timeout=30)
    assert node.returncode == 1
    errors = node.lines("[ERROR]")
    assert len(errors) == 1 and "WRONGTYPE" in errors[0], node.log[-3000:]
    assert "Traceback" not in node.log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "settings", "expected"),
    [
        (None, {"RAVEL_REDIS_PREFIX": "ravel%"}, "RAVEL_REDIS_PREFIX 'ravel%' is not a valid"),
        ("sadd", {}, "Redis key 'ravel:start_urls' holds a set, not a list"),
        (None, {"RAVEL_HEARTBEAT": "abc"}, "setting RAVEL_HEARTBEAT='abc'"),
    ],
)
def test_bad_fleet_settings_and_keys_are_one_line_and_exit_1(
    archive, fleet, tmp_path, setup, settings, expected
):
    if setup == "sadd":
        fleet.redis.sadd("ravel:start_urls", "x")
    done = subprocess.run(
        crawl_command(
            "-a",
            f"url={archive.details_url('bulk-40')}",
            store=tmp_path,
            REDIS_URL=fleet.url,
            **settings,
        ),
        cwd=ROOT,
        env=crawl_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = done.stdout + done.stderr
    errors = [line for line in log.splitlines() if line.startswith(("[ERROR]", "[CRITICAL]"))]
    assert done.returncode == 1, log[-3000:]
    assert len(errors) == 1 and expected in errors[0], log[-3000:]
    assert "Traceback" not in log
    assert archive.stats()["log"] == []
    if setup is None:
        assert fleet.redis.keys("*") == []  # refused before it joined or opened a run


@pytest.mark.slow
def test_a_waiting_node_refuses_a_mistyped_argument(fleet, tmp_path):
    """-a formats/glob apply to the jobs a waiting node takes: a typo is one line, exit 1."""
    node = fleet.start("-a", "formts=Flac", store=tmp_path, **WAITING)
    fleet.wait(timeout=30)
    assert node.returncode == 1, node.log[-3000:]
    errors = node.lines("[ERROR]")
    assert len(errors) == 1 and "unknown argument -a formts=" in errors[0], node.log[-3000:]
    assert "Traceback" not in node.log


@pytest.mark.slow
def test_a_flushed_redis_is_reported_as_lost_never_as_success(archive, fleet, tmp_path):
    archive.configure({"bandwidth": 65536, "items": {"lost-12": {"count": 12}}})
    store = tmp_path / "store"
    details = f"url={archive.details_url('lost-12')}"
    nodes = [fleet.start("-a", details, store=store) for _ in range(2)]
    wait_for(nodes[0], "[download finished]")
    fleet.redis.flushdb()
    fleet.wait(timeout=60)
    for node in nodes:
        assert node.returncode == 1, node.log[-3000:]
        assert "Traceback" not in node.log
        assert any("is gone" in line or "was lost" in line for line in node.lines("[ERROR]"))


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB filesystem: room for a few 64 KiB files, not eight."""
    with small_tmpfs(tmp_path, "300k") as mountpoint:
        yield mountpoint


@pytest.mark.slow
def test_a_node_whose_disk_fills_up_hands_its_files_to_the_fleet(
    archive, fleet, tmp_path, small_disk
):
    archive.configure({"items": {"disk-8": {"count": 8}}})
    details = f"url={archive.details_url('disk-8')}"
    full = fleet.start("-a", details, store=small_disk)
    fleet.wait()
    assert full.returncode == 1
    assert any("No space left on device" in line for line in full.lines("[ERROR]"))
    state = fleet_status(fleet.url)
    assert state["files"]["failed"] == 0 and state["files"]["pending"] >= 1  # not failed: back

    store = tmp_path / "store"
    other = fleet.start("-a", details, store=store)
    fleet.wait()
    assert other.returncode == 0, other.log[-3000:]
    assert verified(small_disk, archive, "disk-8") + verified(store, archive, "disk-8") == 8
    state = fleet_status(fleet.url)
    assert state["files"] == {"listed": 8, "verified": 8, "failed": 0, "pending": 0}


@pytest.mark.slow
def test_a_flush_before_a_search_page_is_answered_is_reported_never_a_new_run_1(
    archive, fleet, tmp_path
):
    """Issue 18 (4): Redis flushed while a search page is in flight. Its answer opened "run 1"
    again, the node took it for its own run and exited 0, with the files the flush took
    never fetched. Run tokens never repeat: the node reports the lost data and exits 1.

    The node's heartbeat (which would see the moment with no run) is slowed down: the flush
    must come just before the page's answer, as in a fleet it can."""
    scrape = "/services/search/v1/scrape"
    archive.configure(
        {
            "collections": {"flushc": {"items": 2, "files": 1, "size": 1000}},
            "items": {"flushy": {"count": 4}},
            "bandwidth": 65536,  # about 1 s per file of flushy: its entries wait in the queue
            "faults": [{"kind": "stall", "host": "archive", "match": scrape, "stall": 4}],
        }
    )
    store = tmp_path / "store"
    node = fleet.start(
        "-a", "collection=flushc", "-a", f"url={archive.details_url('flushy')}",
        store=store, RAVEL_HEARTBEAT=60, RAVEL_NODE_TTL=120, RAVEL_NODE_MAX_LEASES=2,
        RAVEL_LISTING_DELAY=0, RAVEL_ORIGIN=archive.archive,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (archive.stats()["faults_fired"] and fleet.redis.zcard("ravel:requests") >= 2):
        assert time.monotonic() < deadline and node.process.poll() is None, node.log[-3000:]
        time.sleep(0.05)
    fleet.redis.flushdb()  # the search page is stalled halfway; flushy's files wait
    fleet.wait(timeout=60)
    assert node.returncode == 1, node.log[-3000:]
    errors = node.lines("[ERROR]")
    assert len(errors) == 1 and "the fleet's data in Redis is gone" in errors[0], errors
    # Found at the page's answer (run 1 again, another token), or, on a loaded machine, by
    # the idle check before it (no run at all): either way never taken for this node's run.
    assert "run 1 is another" in errors[0] or "there is no run" in errors[0], errors
    assert "Traceback" not in node.log
    assert not node.lines("closed: ")  # no run was closed as if nothing had happened
    print(f"\n[ledger] flushed mid-search: {len(list(store.rglob('*.mp3')))} of 6 files stored")


@pytest.mark.slow
def test_an_item_list_entry_on_a_foreign_origin_fails_the_run(archive, fleet, tmp_path):
    """Issue 18 (6): a fleet node's `-a items=` list naming a details page on an origin the
    fleet does not allow: the queue entry was rejected, and the run closed "1 of 1 files
    verified" with exit 0. A rejected entry of the run is its job's failure: exit 1, and the
    reason is in `scrapy fleet status`."""
    archive.configure({"items": {"near-1": {"count": 1}}})
    with TinyArchive({"far": [metadata_entry("far", "a.mp3")]}) as tiny:
        listed = tmp_path / "items.txt"
        listed.write_text(f"near-1\n{tiny.details_url('far')}\n")
        store = tmp_path / "store"
        node = fleet.start("-a", f"items={listed}", store=store, RAVEL_ORIGIN=archive.archive)
        fleet.wait(timeout=60)
    assert node.returncode == 1, node.log[-3000:]
    assert "Traceback" not in node.log
    assert verified(store, archive, "near-1") == 1
    closing = node.lines("[fleet] run 1 closed")
    assert closing and "[ERROR]" in closing[0] and "'far'" in closing[0], node.log[-3000:]
    state = fleet_status(fleet.url)
    assert "is not allowed" in state["items"]["far"]["error"], state["items"]
    assert "far" in scrapy_fleet(fleet.url, "status").stdout
