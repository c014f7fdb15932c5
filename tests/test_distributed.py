"""A fleet of real ``scrapy crawl ravel`` processes on one real Redis, against the fake archive.

Each test takes its own Redis database. Figures (split, times, peaks) are printed: run with
``pytest -s tests/test_distributed.py`` to see them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.fakearchive import FakeArchive, max_simultaneous
from tests.support.crawl import ROOT, crawl_command, crawl_env, stored_files
from tests.support.fleet import NONE_DIES, Node, scrapy_fleet, storage_gets, wait_queued
from tests.support.loopback import free_port
from tests.support.redisserver import RedisServer

SECRET = "s3cret-Pa55word"


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_with_password():
    with RedisServer(password=SECRET, databases=2) as server:
        yield server


def assert_clean(node: Node) -> None:
    assert node.returncode == 0, node.log[-3000:]
    assert "Traceback" not in node.log
    assert "Deprecat" not in node.log
    assert node.lines("[ERROR]") == []


@pytest.mark.slow
def test_two_nodes_share_40_files_each_fetched_once_and_a_rerun_fetches_none(
    archive, fleet, tmp_path
):
    archive.configure({"bandwidth": 65536})  # 1 s per 64 KiB file: the per-node cap limits
    store = tmp_path / "store"  # one store for both nodes, as on a shared disk
    details = f"url={archive.details_url('bulk-40')}"
    started = time.time()
    first = fleet.start(
        "-a",
        details,
        store=store,
        SCHEDULER_PERSIST=False,  # refused: a node closing never flushes the fleet's queue
        PYTHONWARNINGS="error::DeprecationWarning",
        **NONE_DIES,
    )
    wait_queued(fleet, first)  # nodes start in any order, seconds apart
    second = fleet.start("-a", details, store=store, env_url=True, **NONE_DIES)
    fleet.wait()

    gets = storage_gets(archive)
    last_transfer = max(e["end"] for e in gets)
    split = (first.downloaded, second.downloaded)
    print(
        f"\n[fleet] split {split}; last transfer {last_transfer - started:.1f} s after start; "
        f"exits {[round(n.exited - last_transfer, 1) for n in fleet.nodes]} s after it"
    )
    for node in fleet.nodes:
        assert_clean(node)
        assert node.exited - last_transfer <= 15
    assert len(gets) == 40 and len({e["path"] for e in gets}) == 40  # each file once
    assert min(split) >= 10 and sum(split) == 40
    assert len(stored_files(store)) == 40
    for name in ("track01.mp3", "track40.mp3"):
        assert (store / "bulk-40" / name).read_bytes() == archive.file_bytes("bulk-40", name)
    assert first.lines("SCHEDULER_PERSIST=False")  # warned, and ignored
    assert second.lines("already queued or done by the fleet")  # joined, did not re-list
    state = fleet.queue_state()
    assert (state["queued"], state["inflight"], state["live_nodes"]) == (0, 0, 0)
    assert state["acked"] == 42  # details page, metadata, 40 files (a small item: an entry each)
    assert not fleet.redis.exists("ravel:dupefilter")  # the run is closed

    archive.reset()
    again = fleet.start("-a", details, store=store)
    fleet.wait()
    assert_clean(again)
    assert storage_gets(archive) == []
    assert "[main finished] 0 downloaded" in again.log and "40 already up to date" in again.log


@pytest.mark.slow
def test_a_node_killed_mid_download_loses_nothing(archive, fleet, tmp_path):
    # 8 files of 4 s each (not 12): the survivor still has files to fetch when it takes over.
    archive.configure({"bandwidth": 65536, "items": {"slow-8": {"count": 8, "size": 262144}}})
    store = tmp_path / "store"
    details = f"url={archive.details_url('slow-8')}"
    victim = fleet.start("-a", details, store=store)
    time.sleep(1)
    survivor = fleet.start("-a", details, store=store)
    deadline = time.monotonic() + 60
    while not victim.lines("[download start]") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)  # mid-transfer: a 256 KiB file takes 4 s
    assert victim.process.poll() is None, victim.log
    victim.process.send_signal(signal.SIGKILL)
    killed = time.time()
    victim.exited = killed
    fleet.wait()

    assert_clean(survivor)
    requeued = survivor.lines("[fleet] requeued")
    assert requeued, survivor.log
    fetched = [e["path"] for e in storage_gets(archive)]
    interrupted = [p for p in set(fetched) if fetched.count(p) > 1]
    assert interrupted  # what the victim was downloading was fetched again
    assert sorted(p.name for p in (store / "slow-8").iterdir()) == [
        f"track{n:02d}.mp3" for n in range(1, 9)
    ]
    for path in (store / "slow-8").iterdir():
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        assert md5 == archive.md5_of("slow-8", path.name)
    state = fleet.queue_state()
    assert (state["queued"], state["inflight"], state["dead"]) == (0, 0, 0)
    assert state["reclaimed"] >= 1
    print(
        f"\n[fleet] SIGKILL: {len(interrupted)} interrupted files re-fetched; survivor done "
        f"{survivor.exited - killed:.1f} s after the kill"
    )


@pytest.mark.slow
def test_a_waiting_fleet_takes_pushed_start_urls_and_rejects_hostile_entries(
    archive, fleet, tmp_path
):
    archive.configure({"items": {"alpha": {"count": 6}, "beta": {"count": 5}}})
    redis = fleet.redis
    # A host the entries point to: a listener on loopback that must never be contacted.
    trap = socket.create_server(("127.0.0.3", 0))
    trap.setblocking(False)
    foreign = f"http://127.0.0.3:{trap.getsockname()[1]}"
    # Start URLs as a user pushes them: two items, plus two a node must refuse.
    for entry in (
        json.dumps({"url": archive.details_url("alpha")}),
        "http://127.0.0.1/not-json",
        json.dumps({"url": f"{foreign}/details/elsewhere"}),
        json.dumps({"item": "beta"}),
    ):
        redis.rpush("ravel:start_urls", entry)
    # Queue entries written by someone who should not be trusted.
    good_entry = {
        "v": 1, "url": "", "method": "GET", "callback": "parse_file_entry", "errback": None,
        "headers": {}, "body": "", "meta": {}, "cb_kwargs": {}, "priority": 0,
        "dont_filter": True,
    }  # fmt: skip
    # A file entry (entries.Chunk) whose file would escape the store.
    evil_record = [2, archive.archive, "alpha", "", "", [["../../escape.mp3"]]]
    hostile = {
        "evil-pickle": pickle.dumps({"url": archive.archive}),
        "evil-class": json.dumps({**good_entry, "_class": "scrapy.http.JsonRequest"}),
        "evil-callback": json.dumps({**good_entry, "callback": "close"}),
        "evil-host": json.dumps(
            {
                **good_entry,
                "callback": "parse_details",
                "errback": "details_failed",
                "url": f"{foreign}/details/x",
                "cb_kwargs": {"item": {"origin": foreign, "identifier": "x"}},
            }
        ),
        "evil-record": json.dumps(evil_record),
    }
    for entry_id, payload in hostile.items():
        redis.zadd("ravel:requests", {entry_id: 0})
        redis.hset("ravel:payloads", entry_id, payload)

    store = tmp_path / "store"
    # The entries are pushed before the nodes start: a short wait for more is enough.
    waiting = {"RAVEL_WAIT_FOR_WORK": 1.5, "RAVEL_ORIGIN": archive.archive}
    fleet.start(store=store, **waiting)
    fleet.start(store=store, env_url=True, **waiting)
    fleet.wait()

    logs = "".join(n.log for n in fleet.nodes)
    for node in fleet.nodes:
        assert node.returncode == 0, node.log[-3000:]
        assert "Traceback" not in node.log
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*.mp3")) == [
        *(f"alpha/track{n:02d}.mp3" for n in range(1, 7)),
        *(f"beta/track{n:02d}.mp3" for n in range(1, 6)),
    ]
    assert not (tmp_path / "escape.mp3").exists()
    rejected = [line for line in logs.splitlines() if "[fleet] rejected" in line]
    print("\n" + "\n".join(rejected))
    assert len(rejected) == 7  # each bad entry once, on one node, in one line
    for reason in (
        "'evil-pickle': pickled data",
        "'evil-class': unexpected fields ['_class']",
        "'evil-callback': callback 'close' is not allowed",
        f"'evil-host': host of '{foreign}/details/x' is not allowed",
        "rejected a file entry: it has a '..' path component",
        "'http://127.0.0.1/not-json': not a details page",
        f"origin {foreign!r} is not allowed",
    ):
        assert reason in logs
    with trap, pytest.raises(BlockingIOError):
        trap.accept()  # no node ever connected to the foreign host
    assert redis.hlen("ravel:rejected") == 7  # the bad file record too
    assert redis.llen("ravel:start_urls") == 0


@pytest.mark.slow
def test_the_fleet_cap_holds_at_the_server(archive, fleet, tmp_path):
    archive.configure({"bandwidth": 131072, "items": {"capped": {"count": 24}}})
    details = f"url={archive.details_url('capped')}"
    for node in range(3):
        fleet.start(
            "-a",
            details,
            store=tmp_path / f"store{node}",  # per-node local stores
            CONCURRENT_REQUESTS_PER_DOMAIN=4,  # 12 at once without the fleet cap
            RAVEL_FLEET_MAX_TRANSFERS=3,
        )
    fleet.wait()

    stats = archive.stats()
    peak = stats["combined"]["max_active"]
    split = [n.downloaded for n in fleet.nodes]
    print(f"\n[fleet] cap 3, 3 nodes x 4: server peak {peak}, split {split}")
    for node in fleet.nodes:
        assert_clean(node)
    assert sum(split) == 24 and min(split) >= 1
    assert peak == 3  # reached, never exceeded
    assert max_simultaneous(stats["log"]) <= 3


def crawl_on_redis(archive: FakeArchive, tmp_path: Path, url: str) -> tuple[int, str, list[str]]:
    """A crawl of bulk-40 with ``REDIS_URL=url``: its exit code, its log and its ERROR and
    CRITICAL lines."""
    done = subprocess.run(
        crawl_command("-a", f"url={archive.details_url('bulk-40')}", store=tmp_path),
        cwd=ROOT,
        env=crawl_env(REDIS_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = done.stdout + done.stderr
    problems = [line for line in log.splitlines() if line.startswith(("[ERROR]", "[CRITICAL]"))]
    return done.returncode, log, problems


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("down", "cannot reach Redis at redis://127.0.0.1:"),
        ("bad-db", "REDIS_URL database must be a number"),
        ("hash-in-password", "REDIS_URL is not a valid URL"),
        ("slash-in-password", "REDIS_URL is not a valid URL"),
        ("question-in-password", "REDIS_URL is not a valid URL"),
        ("bad-scheme", "REDIS_URL must start with redis://"),
        ("wrong-password", "refused the credentials in REDIS_URL"),
        ("no-password", "needs a password"),
    ],
)
def test_an_unusable_redis_is_one_line_and_a_failed_exit(
    archive, redis_with_password, tmp_path, case, expected
):
    port = redis_with_password.port
    url = {
        "down": f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
        "bad-db": f"redis://:{SECRET}@127.0.0.1:{port}/abc",
        # Unencoded '#', '/' or '?' in a password: the URL parser's message quotes a piece.
        "hash-in-password": f"redis://:{SECRET}#@127.0.0.1:{port}/0",
        "slash-in-password": f"redis://:{SECRET[:6]}/{SECRET[6:]}@127.0.0.1:{port}/0",
        "question-in-password": f"redis://u:{SECRET[:6]}?{SECRET[6:]}@127.0.0.1:{port}/0",
        "bad-scheme": f"http://:{SECRET}@127.0.0.1:{port}/0",
        "wrong-password": redis_with_password.url(0, password=SECRET[::-1]),
        "no-password": f"redis://127.0.0.1:{port}/0",
    }[case]
    returncode, log, problems = crawl_on_redis(archive, tmp_path, url)
    assert returncode == 1, log
    assert len(problems) == 1 and expected in problems[0], log
    assert "Traceback" not in log
    for secret in (SECRET, SECRET[::-1], SECRET[:6], SECRET[6:]):
        assert secret not in log
    assert archive.stats()["log"] == []  # nothing was fetched


@pytest.mark.slow
def test_status_and_reset_commands(fleet):
    redis = fleet.redis
    redis.zadd("ravel:requests", {"00000000000001": 0})
    redis.hset("ravel:payloads", "00000000000001", "{}")
    redis.zadd("ravel:nodes", {"elsewhere:1:abc": time.time() * 1000 + 60_000})
    redis.zadd("ravel:nodes", {"expired:2:def": time.time() * 1000 - 60_000})

    def command(*args: str) -> subprocess.CompletedProcess:
        return scrapy_fleet(fleet.url, *args)

    status = command("status")
    assert status.returncode == 0, status.stderr
    assert "queue: 1 entries waiting" in status.stdout
    assert "live nodes: 1 (elsewhere:1:abc)" in status.stdout  # an expired node is not live
    refused = command("reset")
    assert refused.returncode == 1 and "still running" in refused.stderr
    assert redis.exists("ravel:requests")
    forced = command("reset", "--force")
    assert forced.returncode == 0, forced.stderr
    assert redis.keys("ravel:*") == []


@pytest.mark.slow
def test_fleet_commands_never_print_a_traceback(fleet):
    """Values written by hand, a key of the wrong type, a reader that goes away."""

    fleet.redis.hset("ravel:run", mapping={"opened": "²", "closed": "x"})
    odd = scrapy_fleet(fleet.url, "status")
    assert odd.returncode == 0 and "Traceback" not in odd.stderr, odd.stderr
    piped = subprocess.run(  # a reader that has gone before anything is written
        f"{sys.executable} -m scrapy fleet status --json | true",
        shell=True,
        cwd=ROOT,
        env=crawl_env(REDIS_URL=fleet.url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    fleet.redis.delete("ravel:run")
    fleet.redis.set("ravel:run", "not a hash")
    wrong = scrapy_fleet(fleet.url, "status")
    assert wrong.returncode == 1, wrong.stdout
    assert "Traceback" not in wrong.stderr
    assert wrong.stderr.startswith("error: Redis refused the command: WRONGTYPE"), wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_s3_store_serves_a_fleet_with_md5_checks(archive, fleet, tmp_path):
    import boto3  # requirements.txt: Scrapy's S3 store needs botocore
    from moto.server import ThreadedMotoServer  # requirements-dev.txt

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        aws = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION_NAME": "us-east-1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="fleet-mirror")
        archive.configure({"bandwidth": 131072, "items": {"s3-item": {"count": 8}}})
        details = f"url={archive.details_url('s3-item')}"
        store = "s3://fleet-mirror/mirror/"
        for _ in range(2):
            fleet.start("-a", details, store=store, **aws)
        fleet.wait()
        for node in fleet.nodes:
            assert_clean(node)
        assert sum(n.downloaded for n in fleet.nodes) == 8
        objects = s3.list_objects_v2(Bucket="fleet-mirror")["Contents"]
        assert len(objects) == 8
        for entry in objects:
            name = entry["Key"].rsplit("/", 1)[1]
            assert entry["Key"] == f"mirror/s3-item/{name}"
            assert entry["ETag"].strip('"') == archive.md5_of("s3-item", name)

        # A re-run finds everything up to date; a damaged object is fetched again.
        s3.put_object(Bucket="fleet-mirror", Key="mirror/s3-item/track03.mp3", Body=b"damaged")
        archive.reset()
        again = fleet.start("-a", details, store=store, **aws)
        fleet.wait()
        assert_clean(again)
        assert [e["path"].rsplit("/", 1)[1] for e in storage_gets(archive)] == ["track03.mp3"]
        assert "7 already up to date" in again.log
        body = s3.get_object(Bucket="fleet-mirror", Key="mirror/s3-item/track03.mp3")["Body"]
        assert body.read() == archive.file_bytes("s3-item", "track03.mp3")
    finally:
        moto.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("acl-evalsha", "NoPermissionError: this user has no permissions to run the 'evalsha'"),
        ("acl-scripting", "no permissions to run the 'evalsha'"),
        ("oom", "OutOfMemoryError: command not allowed when used memory > 'maxmemory'"),
    ],
)
def test_redis_refusing_the_nodes_commands_at_start_is_one_line_and_exit_1(
    archive, tmp_path, case, expected
):
    """Issue 18 (8): an ACL without EVALSHA/EVAL, or Redis out of memory, when a node joins:
    4 to 6 tracebacks, now one ERROR line."""
    with RedisServer(databases=1) as server, server.client() as admin:
        url = server.url(0)
        if case.startswith("acl"):
            denied = "-evalsha" if case == "acl-evalsha" else "-@scripting"
            admin.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"],
                              channels=["*"], commands=["+@all", denied])  # fmt: skip
            url = f"redis://limited:pw@127.0.0.1:{server.port}/0"
        else:
            admin.config_set("maxmemory", 1)  # every write that needs memory is refused
        returncode, log, problems = crawl_on_redis(archive, tmp_path, url)
    assert returncode == 1, log[-3000:]
    assert len(problems) == 1 and expected in problems[0], log[-3000:]
    assert "Traceback" not in log and "pw@" not in log
    assert archive.stats()["log"] == []  # nothing was fetched


@pytest.mark.slow
def test_status_escapes_what_redis_holds_and_shows_malformed_counters(fleet):
    """Issue 18 (9): identifiers and node names from Redis reached the terminal raw (a screen
    clear, colours, a forged ERROR line); counters written by hand were shown as numbers."""
    hostile = "\x1b[2Jclear\n[ERROR]\tforged\x07"
    redis = fleet.redis
    redis.hset("ravel:items", hostile, "listed")
    redis.hset("ravel:tally", mapping={f"listed:{hostile}": 2, "listed": "-3", "verified": "1e3"})
    redis.hset("ravel:counters", "acked", "0x10")
    redis.zadd("ravel:nodes", {"\x1b[31mred-node": time.time() * 1000 + 60_000})

    text = scrapy_fleet(fleet.url, "status")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "\x1b" not in out and "\x07" not in out, out
    assert not any(line.startswith("[ERROR]") for line in out.splitlines()), out
    assert "\\x1b[2Jclear\\n[ERROR]" in out and "\\x1b[31mred-node" in out
    all_items = next(line for line in out.splitlines() if "all items" in line)
    assert all_items.split()[2:] == ["?", "?", "0", "?"], all_items  # listed verified failed
    assert "-3" not in all_items and "1000" not in all_items
    malformed = next(line for line in out.splitlines() if line.startswith("malformed counters"))
    for shown in ("ravel:tally listed='-3'", "ravel:tally verified='1e3'", "acked='0x10'"):
        assert shown in malformed, malformed

    state = json.loads(scrapy_fleet(fleet.url, "status", "--json").stdout)
    assert state["files"] == {"listed": None, "verified": None, "failed": 0, "pending": None}
    assert state["acked"] is None
    assert set(state["malformed"]) == {
        "ravel:tally listed",
        "ravel:tally verified",
        "ravel:counters acked",
    }
    assert state["items"][hostile]["listed"] == 2  # JSON escapes it; the value is intact


@pytest.mark.parametrize(
    ("failure", "a_read_ends_it"),
    [
        (redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), False),
        (redis.exceptions.NoPermissionError("no permissions to run the 'evalsha' command"), False),
        (redis.ConnectionError("Connection refused"), True),  # a restart: any answer ends it
    ],
)
def test_only_a_write_ends_an_outage_of_refused_commands(monkeypatch, failure, a_read_ends_it):
    """Issue 18 (5), the rule: while Redis refuses writes, reads that work don't reset the
    grace period (RAVEL_REDIS_GRACE); a write that works does."""
    from scrapy.utils.test import get_crawler

    from ravelscraper.distributed import fleet as fleet_module
    from ravelscraper.spiders.ravel import RavelSpider

    clock = [100.0]
    monkeypatch.setattr(fleet_module, "monotonic", lambda: clock[0])
    crawler = get_crawler(RavelSpider, {"RAVEL_REDIS_GRACE": 10})
    given_up: list[str] = []  # no crawl to stop here: the messages it would stop with
    monkeypatch.setattr(fleet_module.Fleet, "give_up", lambda _, message: given_up.append(message))
    fleet = fleet_module.Fleet(crawler)

    assert fleet.redis_failed(failure) is False  # within the grace: carry on
    clock[0] += 6
    fleet.recovered()  # a read worked
    assert (fleet.down_since is None) is a_read_ends_it
    clock[0] += 6
    assert fleet.redis_failed(failure) is (not a_read_ends_it)  # 12 s of failing writes
    if a_read_ends_it:
        return
    assert len(given_up) == 1 and type(failure).__name__ in given_up[0]
    again = fleet_module.Fleet(crawler)
    assert again.redis_failed(failure) is False
    clock[0] += 6
    again.recovered(wrote=True)  # a write worked: the outage is over
    assert again.down_since is None
    clock[0] += 6
    assert again.redis_failed(failure) is False  # a new outage, a new grace period
