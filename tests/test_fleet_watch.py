"""The reader of a job for people (ravelscraper.distributed.watch) and the nodes' history it
reads, against a real redis-server; ``/metrics`` parsed with prometheus-client's own parser.

Fast: one server for the module, a fresh database per test, no crawl, no HTTP.
"""

from __future__ import annotations

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scrapy.exceptions import UsageError

from ravelscraper.commands.fleet import check_bind
from ravelscraper.distributed.entries import chunks_of
from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.ledger import EntryFiles
from ravelscraper.distributed.schema.queue import HISTORY_MAXLEN, JobData, NodeSample
from ravelscraper.distributed.watch import History, status_data, watch_data
from ravelscraper.distributed.web import Snapshot
from ravelscraper.items import AudioFile

HOSTILE = '<img src=x onerror=alert(1)>"\\\n'


def a_run(client: redis.Redis, keys: JobKeys) -> tuple[JobData, JobData]:
    """Two nodes on a run of item "a" (3 files): one verified, one failed, one held."""
    one, two = JobData(client, keys, "one"), JobData(client, keys, HOSTILE)
    one.ledger.open_run()
    files = [
        AudioFile("a", f"{n}.mp3", f"http://127.0.0.1:1/download/a/{n}.mp3", size=100)
        for n in "xyz"
    ]
    entries = [EntryFiles(chunks_of([f])[0].encode(), 1, 100) for f in files]
    one.ledger.list_item("a", entries)
    x, y = one.pop(1000)[0], one.pop(1000)[0]
    one.ledger.complete(x, "a/x.mp3", "verified", size=100)
    one.ledger.complete(y, "a/y.mp3", "failed", "md5 differs")
    two.pop(1000)
    return one, two


def test_a_heartbeat_with_counters_appends_them_to_the_bounded_history(client, keys):
    data = JobData(client, keys, "one")
    assert data.heartbeat(60_000)  # without counters (a node joining): no history
    assert not client.exists(keys.history)
    assert not data.heartbeat(60_000, NodeSample(files=3, failed=1, bytes=300))
    ((_, fields),) = client.xrange(keys.history)
    assert fields == {b"node": b"one", b"files": b"3", b"failed": b"1", b"bytes": b"300"}
    assert 0 < client.pttl(keys.history) <= 3_600_000
    assert client.type(keys.history) == b"stream" and keys.types()[keys.history] == "stream"
    assert 1_000 <= HISTORY_MAXLEN <= 100_000


def test_the_history_is_read_once_then_only_what_is_new(client, keys):
    data = JobData(client, keys, "one")
    history = History(keys)
    for n in range(5):
        data.heartbeat(60_000, NodeSample(n, 0, n * 1000))
    now = data.redis_now_ms()
    assert [s.bytes for s in history.refresh(client, now)] == [0, 1000, 2000, 3000, 4000]
    data.heartbeat(60_000, NodeSample(5, 0, 5000))
    assert [s.bytes for s in history.refresh(client, now)][-2:] == [4000, 5000]
    assert len(history.samples) == 6  # nothing read twice
    client.delete(keys.history)  # `scrapy fleet reset`
    assert history.refresh(client, now) == []


def test_watch_data_shows_nodes_alive_and_gone_what_they_hold_and_the_rate(client, keys):
    one, two = a_run(client, keys)
    one.heartbeat(60_000)
    two.heartbeat(60_000)
    now = one.redis_now_ms()
    for n in range(3):  # as heartbeats write them, a second apart
        for node, size in (("one", 50), (HOSTILE, 10)):
            fields = {"node": node, "files": n, "failed": 0, "bytes": n * size}
            client.xadd(keys.history, fields, id=f"{now - 3000 + n * 1000}-{len(node)}")
    client.zadd(keys.nodes, {"one": 1, "forever": "+inf"})  # expired: gone; by hand: alive
    data = watch_data(JobData(client, keys), History(keys))
    assert data["files"] == {"listed": 3, "verified": 1, "failed": 1, "pending": 1}
    rows = {row["node"]: row for row in data["node_rows"]}
    assert rows["one"]["alive"] is False and rows[HOSTILE]["alive"] is True
    assert (data["nodes_alive"], data["nodes_gone"]) == (2, 1) and rows["forever"]["files"] == 0
    assert rows[HOSTILE]["holds"] == 1 and rows[HOSTILE]["holding"] == ["a/z.mp3"]
    assert rows["one"]["files"] == 2 and rows["one"]["bytes"] == 100
    assert rows["one"]["bytes_per_s"] == 0 and rows[HOSTILE]["bytes_per_s"] == 10  # gone: 0
    assert rows["one"]["last_heartbeat_s_ago"] is not None
    assert data["bytes_per_s"] == 10
    assert data["failures"] == {"count": 1, "first": [["a/y.mp3", "md5 differs"]]}
    chart = data["throughput"]
    assert chart["bucket_s"] == 1 and chart["span_s"] == 120  # the last two minutes at least
    assert round(sum(chart["bytes_per_s"])) == 120  # the two nodes' 100 + 20 bytes, 1 s buckets
    assert 59 <= max(chart["bytes_per_s"]) <= 60  # 50 + 10 B/s, spread between the samples
    assert len(data["throughput"]["bytes_per_s"]) == 120
    assert data["listing"] == {"bound": None, "held_back": False}


def test_rejected_entries_failed_jobs_and_a_listing_bound_are_shown(client, keys):
    one, _ = a_run(client, keys)
    one.ledger.item_failed("b", "no such item")
    client.hset(keys.rejected, mapping={f"e{n}": f"bad {n}" for n in range(30)})
    # What back-pressure records when a pop finds listing held back, with an item waiting.
    assert one.push(b"meta-c", 1, "fc", "item:c", listing=True)
    client.hset(keys.run, mapping={"listing_held": "1", "max_pending": "1"})
    data = watch_data(JobData(client, keys), History(keys))
    assert data["rejected_entries"]["count"] == 30 and len(data["rejected_entries"]["first"]) == 10
    assert data["failed_jobs"] == {"count": 1, "first": [["b", "no such item"]]}
    assert data["listing"] == {"bound": 1, "held_back": True}
    client.hset(keys.run, "listing_held", "0")  # the nodes' last pop took a listing entry
    assert not watch_data(JobData(client, keys), History(keys))["listing"]["held_back"]


def test_status_data_is_the_reader_of_fleet_status(client, keys):
    a_run(client, keys)
    data = status_data(JobData(client, keys))
    assert data["items"]["a"] == {
        "listed": 3,
        "verified": 1,
        "failed": 1,
        "pending": 1,
        "error": "",
    }
    assert data["item_counts"] == {"listed": 1, "done": 0, "failed": 0, "pending": 1}


def test_metrics_parse_with_prometheus_clients_parser(client, keys):
    one, two = a_run(client, keys)
    one.heartbeat(60_000, NodeSample(2, 1, 100))
    two.heartbeat(60_000, NodeSample(0, 0, 0))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(watch_data(JobData(client, keys), History(keys))))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert values[("ravel_files", (("state", "pending"),))] == 1
    assert values[("ravel_files", (("state", "verified"),))] == 1
    assert values[("ravel_items", (("state", "listed"),))] == 1
    assert values[("ravel_nodes", (("state", "alive"),))] == 2
    assert values[("ravel_node_files_total", (("node", "one"),))] == 2
    assert values[("ravel_node_bytes_total", (("node", HOSTILE),))] == 0  # escaped, parsed back
    assert families["ravel_node_files"].type == "counter"


def test_serve_binds_an_ip_address_and_warns_once_off_loopback(capsys):
    check_bind("127.0.0.1", 0)
    check_bind("::1", 8080)
    assert capsys.readouterr().err == ""
    check_bind("0.0.0.0", 8080)
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 1 and warned[0].startswith("WARNING: serving on 0.0.0.0, not loopback")
    for bind, port in (("localhost", 80), ("127.0.0.1", 70000)):
        with pytest.raises(UsageError):
            check_bind(bind, port)
