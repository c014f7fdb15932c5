"""Each Lua script and command of the fleet's Redis schema, against a real redis-server.

Fast: one server for the module, a fresh database per test, no crawl.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
from scrapy.statscollectors import StatsCollector
from scrapy.utils.test import get_crawler

from ravelscraper.distributed.schema.keys import BadPrefix, JobKeys, job_prefix
from ravelscraper.distributed.schema.ledger import EntryFiles, ItemRecord, Outcome
from ravelscraper.distributed.schema.places import TransferPlaces
from ravelscraper.distributed.schema.queue import JobData, NodeSample


def node(client: redis.Redis, keys: JobKeys, name: str = "n1") -> JobData:
    return JobData(client, keys, name)


def entry(identifier: str, *files: tuple[str, int]) -> EntryFiles:
    """A file entry of ``(name, size)`` files of one item (entries.Chunk's payload)."""
    rows = [[name, str(size)] for name, size in files]
    payload = json.dumps([2, "http://127.0.0.1:1", identifier, "", "", rows]).encode()
    return EntryFiles(payload, len(rows), sum(size for _, size in files))


def verified(path: str, size: int = 1, recordable: bool = True) -> Outcome:
    return Outcome(path, "verified", "", size, recordable)


def test_keys_are_under_the_prefix_and_typed(keys):
    assert keys.prefix == "job" and keys.start_urls == "job:start_urls"
    assert keys.rejected == "job:rejected"  # documented in the README
    assert all(k.startswith("job:") for k in keys.all())
    assert keys.types()["job:requests"] == "zset" and keys.types()["job:names"] == "hash"
    assert job_prefix("%(spider)s", "ravel") == "ravel"
    for bad in ("ravel%", "two words", ""):
        with pytest.raises(BadPrefix):
            job_prefix(bad, "ravel")


def test_push_checks_the_fingerprint_and_keeps_priority_then_fifo(client, keys):
    data = node(client, keys)
    assert data.push(b"low", 0, "fp1", "item:a")
    assert not data.push(b"again", 0, "fp1")  # seen in this run
    assert data.push(b"high", 5, "")  # dont_filter: no fingerprint
    assert data.push(b"low2", 0, "")
    assert data.queued() == 3
    assert client.hget(keys.owners, client.zrange(keys.requests, -1, -1)[0]) is None
    popped = [data.pop(1000) for _ in range(3)]
    assert [p[1] for p in popped if p] == [b"high", b"low", b"low2"]
    assert data.pop(1000) is None
    assert client.hlen(keys.inflight) == 3 and int(client.get(keys.activity)) > 0


def test_pop_does_not_send_a_payload_larger_than_the_limit(client, keys):
    data = node(client, keys)
    data.push(b"x" * 100, 0)
    entry_id, size = data.pop(10)
    assert size == 100 and client.hexists(keys.inflight, entry_id)


def test_ack_forgets_only_the_own_lease(client, keys):
    mine, other = node(client, keys, "n1"), node(client, keys, "n2")
    mine.push(b"p", 0, "fp", "item:a")
    entry_id, _ = mine.pop(1000)
    assert not other.ack(entry_id)  # not its lease
    assert mine.ack(entry_id)
    assert not mine.ack(entry_id)  # already gone
    assert client.hlen(keys.payloads) == 0 and client.hlen(keys.owners) == 0
    assert client.hget(keys.counters, "acked") == b"1"


def test_nack_hands_leases_back_with_their_priority(client, keys):
    data = node(client, keys)
    data.push(b"p", 3)
    entry_id, _ = data.pop(1000)
    assert node(client, keys, "n2").nack([entry_id]) == 0
    assert data.nack([entry_id]) == 1 and data.nack([]) == 0
    assert client.zscore(keys.requests, entry_id) == -3 and client.hlen(keys.inflight) == 0


def test_reject_records_the_reason(client, keys):
    data = node(client, keys)
    data.push(b"bad", 0, "", "file:a/x.mp3")
    entry_id, _ = data.pop(1000)
    assert data.reject(entry_id, "not JSON") == ""  # its file is not in the ledger
    assert client.hget(keys.rejected, entry_id) == b"not JSON"
    assert not client.hexists(keys.payloads, entry_id) and client.hlen(keys.owners) == 0


def test_a_rejected_entry_of_the_run_fails_its_files_or_job_once(client, keys):
    """Issue 18 (6): a rejected entry of the run's work is its files' or job's failure."""
    data = node(client, keys)
    data.ledger.list_item("a", [entry("a", ("x.mp3", 1), ("y.mp3", 2))])
    owners = ["item:far", "search:collection:c", "item:far", ""]
    for owner in owners:
        data.push(b"{}", 0, "", owner)
    outcomes = []
    for _ in ["files", *owners]:
        entry_id, _ = data.pop(1000)
        outcomes.append(data.reject(entry_id, "host of 'x' is not allowed"))
    assert outcomes == ["file", "job", "job", "", ""]  # a job fails once; no owner: forged
    assert data.ledger.failures() == (
        [
            ("a/x.mp3", "rejected: host of 'x' is not allowed"),
            ("a/y.mp3", "rejected: host of 'x' is not allowed"),
        ],
        2,
    )
    failed = dict(data.ledger.failed_items()[0])
    assert failed == {
        "far": "rejected: host of 'x' is not allowed",
        "search:collection:c": "rejected: host of 'x' is not allowed",
    }
    state = data.snapshot()
    assert (state["failed"], state["jobs_failed"], state["rejected"]) == (2, 2, 5)
    assert data.strings(keys.items)["a"] == "done"  # its last files settled the item
    assert client.hlen(keys.payloads) == 0 and client.hlen(keys.owners) == 0


def test_a_large_item_is_listed_in_one_step_in_batches(client, keys):
    data = node(client, keys)
    entries = [entry("big", (f"{n}.mp3", 1)) for n in range(450)]  # 900 fields a command
    refused = [(f"big/r{n}.mp3", "refused") for n in range(300)]
    assert data.ledger.list_item("big", entries, refused) == (1, "")
    assert data.queued() == 450 and client.hlen(keys.owners) == 450
    assert data.ledger.failures()[1] == 300 and data.ledger.pending == 450


def test_a_forged_file_entry_fails_no_file(client, keys):
    """Only an entry the listing queued (owner "files") fails the files its payload names."""
    data = node(client, keys)
    data.ledger.list_item("a", [entry("a", ("x.mp3", 1))])
    data.push(entry("a", ("x.mp3", 1)).payload, 5)  # written by hand: no owner
    forged, _ = data.pop(1000)
    assert data.reject(forged, "bad") == "" and data.snapshot()["pending"] == 1
    assert data.ledger.failures() == ([], 0)


def test_an_item_is_listed_with_its_entries_once_and_one_folder_per_case(client, keys):
    data = node(client, keys)
    chunks = [entry("a", ("x.mp3", 10), ("y.mp3", 5)), entry("a", ("z.mp3", 1))]
    assert data.ledger.list_item("a", chunks, [("a/X.mp3", "refused the name: twin")]) == (1, "")
    assert data.ledger.pending == 3  # listed 4, one failed at once
    assert data.ledger.list_item("a", chunks) == (0, "")  # listed in this run: nothing again
    assert data.queued() == 2
    assert sorted(client.hvals(keys.payloads)) == sorted(c.payload for c in chunks)
    tally = data.strings(keys.tally)
    assert (tally["listed"], tally["failed"], tally["bytes_listed"]) == ("4", "1", "16")
    assert data.ledger.failures() == ([("a/X.mp3", "refused the name: twin")], 1)
    # One folder per case-folded identifier, fleet-wide, as a single node keeps.
    assert data.ledger.list_item("A", [entry("A", ("x.mp3", 1))]) == (-1, "a")
    assert data.queued() == 2 and "A" not in data.strings(keys.items)
    assert data.ledger.list_item("A", [], [("A/x.mp3", "refused")], claim=False) == (1, "")
    assert data.strings(keys.items) == {"a": "listed", "A": "done"}
    assert data.snapshot()["pending"] == 3


def test_settling_an_entry_records_its_outcomes_once_and_acks(client, keys):
    data, other = node(client, keys), node(client, keys, "n2")
    data.ledger.list_item("a", [entry("a", ("x.mp3", 10), ("y.mp3", 5))])
    entry_id, _ = data.pop(1000)
    done = [verified("a/x.mp3", 10), Outcome("a/y.mp3", "failed", "bad md5")]
    assert other.ledger.settle_entry(entry_id, "a", done) == (False, None)  # not its lease
    assert data.ledger.settle_entry(entry_id, "a", done) == (True, None)
    assert data.ledger.settle_entry(entry_id, "a", done) == (False, None)  # recorded once
    tally = data.strings(keys.tally)
    assert (tally["verified"], tally["failed"], tally["bytes_verified"]) == ("1", "1", "10")
    assert tally["verified:a"] == "1" and tally["failed:a"] == "1"
    assert data.ledger.failures() == ([("a/y.mp3", "bad md5")], 1)
    assert client.hlen(keys.payloads) == 0 and client.hget(keys.counters, "acked") == b"1"


def test_item_failed_once(client, keys):
    data = node(client, keys)
    assert data.ledger.item_failed("a", "no such item")
    assert not data.ledger.item_failed("a", "again")
    assert data.ledger.failed_items() == ([("a", "no such item")], 1)
    assert data.strings(keys.tally)["jobs_failed"] == "1"


def test_heartbeat_leave_and_live_nodes(client, keys):
    data = node(client, keys)
    assert data.heartbeat(60_000)  # new
    assert not data.heartbeat(60_000)
    client.zadd(keys.nodes, {"expired": 1})
    assert data.live_nodes() == ["n1"]  # an expired node is not live
    data.leave()
    assert data.live_nodes() == []


def test_a_node_leaving_adds_its_final_counters_to_the_history(client, keys):
    """The files a node did after its last heartbeat still reach the page's history."""
    data = node(client, keys)
    data.heartbeat(60_000, NodeSample(files=2, failed=0, bytes=20))
    stats = StatsCollector(get_crawler())
    for name, value in {"files_downloaded": 3, "files_uptodate": 1, "files_failed": 1}.items():
        stats.set_value(f"ravel/{name}", value)
    stats.set_value("ravel/bytes_downloaded", 30)
    data.leave(NodeSample.of(stats))
    assert data.live_nodes() == []
    last = client.xrevrange(keys.history, count=1)[0][1]
    assert last == {b"node": b"n1", b"files": b"5", b"failed": b"1", b"bytes": b"30"}
    assert client.xlen(keys.history) == 2 and client.pttl(keys.history) > 0


def test_reclaim_requeues_dead_nodes_leases_and_gives_up_after_max_attempts(client, keys):
    alive, dead = node(client, keys, "alive"), node(client, keys, "dead")
    alive.heartbeat(60_000)
    alive.ledger.list_item("a", [entry("a", ("x.mp3", 1))], priority=2)
    dead.push(b"page", 0, "", "item:b")
    alive.push(b"mine", 0)
    held = [dead.pop(1000)[0], dead.pop(1000)[0]]
    mine, _ = alive.pop(1000)
    client.hset(keys.inflight, "odd", "no bar")  # malformed: no live node holds it
    assert alive.reclaim(max_attempts=2) == (3, 0)
    assert client.hlen(keys.inflight) == 1 and client.hexists(keys.inflight, mine)
    assert client.zscore(keys.requests, held[0]) == -2  # priority kept
    for entry_id in held:  # the second dead holder: given up
        client.zrem(keys.requests, entry_id)
        client.hset(keys.inflight, entry_id, "dead|0")
    assert alive.reclaim(max_attempts=2) == (0, 2)
    assert alive.ledger.failures()[0][0][0] == "a/x.mp3"
    assert "given up" in alive.ledger.failures()[0][0][1]
    assert alive.strings(keys.items)["b"].startswith("failed: given up")
    assert alive.snapshot()["pending"] == 0
    assert client.hlen(keys.dead) == 2 and client.hget(keys.counters, "reclaimed") == b"3"


def test_open_run_clears_the_previous_ledger_and_finish_closes_it(client, keys):
    data = node(client, keys)
    assert data.snapshot()["run"] == 0  # no run yet
    first, token = data.ledger.open_run()
    assert first == 1 and data.ledger.open_run() == (1, token)  # open: joined, not reopened
    data.ledger.list_item("a", [entry("a", ("x.mp3", 1))])
    file_entry, _ = data.pop(1000)
    client.hdel(keys.inflight, file_entry)  # the entry lost (keys deleted by hand)
    assert data.ledger.finish_run() == (-1, 1)  # pending, but nothing left to complete it
    client.hset(keys.inflight, file_entry, "n1|0")
    data.ledger.settle_file(file_entry, "a/x.mp3", "verified")
    data.push(b"p", 0, "fp")
    assert data.ledger.finish_run() == (0, 0)  # something waits
    entry_id, _ = data.pop(1000)
    data.ack(entry_id)
    assert data.ledger.finish_run() == (1, 0)
    assert data.strings(keys.run)["state"] == "closed" and not client.exists(keys.dupefilter)
    # Every file settled: the folder names go, the tally keeps the account.
    assert not client.exists(keys.names) and not client.exists(keys.payloads)
    assert data.snapshot()["verified"] == 1 and data.strings(keys.tally)["verified:a"] == "1"
    assert data.ledger.open_run() == (2, token) and not client.exists(keys.items)


def test_the_ledger_token_is_kept_by_later_runs_and_never_repeats_after_a_flush(client, keys):
    """Issue 18 (4): after a FLUSHDB run 1 opens again; its token tells it from the lost one."""
    data, other = node(client, keys), node(client, keys, "n2")
    assert data.ledger.token() == ""  # no run
    first, token = data.ledger.open_run()
    assert len(token) == 32 and data.ledger.token() == token
    assert other.ledger.open_run() == (first, token)  # joined by another node
    client.hset(keys.run, "state", "closed")
    assert other.ledger.open_run() == (first + 1, token)  # the next run: the same ledger
    tokens = {token}
    for _ in range(20):
        client.flushdb()
        run, fresh = data.ledger.open_run()
        assert run == 1 and fresh not in tokens  # run 1 again, never its token
        tokens.add(fresh)
    client.hdel(keys.run, "ledger")  # a run opened by an older node: it gets one
    assert data.ledger.open_run()[1] not in ("", *tokens)


def test_snapshot_counts_and_repairs_nothing_it_reads(client, keys):
    data = node(client, keys)
    data.heartbeat(60_000)
    data.ledger.open_run()
    data.ledger.list_item("a", [entry("a", ("x.mp3", 7))])
    data.start_urls.push('{"item": "b"}')
    client.hset(keys.tally, "verified", "not a number")  # written by hand: counts as 0
    state = data.snapshot()
    assert (state["queued"], state["inflight"], state["start_urls"]) == (1, 0, 1)
    assert (state["listed"], state["verified"], state["pending"]) == (1, 0, 1)
    assert (state["live_nodes"], state["run"], state["run_open"]) == (1, 1, 1)
    assert state["bytes_listed"] == 7 and state["quiet_ms"] >= 0


def test_hand_written_counters_are_repaired_not_fatal(client, keys):
    data = node(client, keys)
    client.set(keys.seq, "x")
    client.hset(keys.counters, "acked", "1.5")
    data.push(b"p", 0)
    entry_id, _ = data.pop(1000)
    assert len(entry_id) == 14 and entry_id.isdigit()  # ids restart from Redis time
    assert data.ack(entry_id) and client.hget(keys.counters, "acked") == b"1"


def test_start_urls_taken_dropped_or_rejected_by_one_node(client, keys):
    data = node(client, keys)
    data.start_urls.push("x" * 50)
    data.start_urls.push('{"item": "a"}')
    data.start_urls.push('{"item": "b"}')
    assert data.start_urls.take(20) == ("big", 50)  # removed and rejected unread
    assert data.start_urls.take(20) == ("ok", b'{"item": "a"}')
    assert data.start_urls.take(20) == ("ok", b'{"item": "a"}')  # stays until dropped
    assert data.start_urls.drop(b'{"item": "a"}') and not data.start_urls.drop(b'{"item": "a"}')
    assert data.start_urls.reject(b'{"item": "b"}', "bad item")
    assert not data.start_urls.reject(b'{"item": "b"}', "bad item")  # another node did
    assert data.start_urls.take(20) is None
    reasons = sorted(data.strings(keys.rejected).values())
    assert reasons == ["bad item", "entry of 50 bytes is larger than 20"]
    assert all(k.startswith("start_url:") for k in data.strings(keys.rejected))


def test_reset_deletes_exactly_the_jobs_keys(client, keys):
    data = node(client, keys)
    data.push(b"p", 0, "fp")
    data.heartbeat(60_000)
    client.set("other", "kept")
    assert data.reset() == 6  # requests payloads seq dupefilter activity nodes
    assert client.keys("*") == [b"other"]


def test_transfer_places_are_capped_served_in_order_and_expire(client, keys):
    places = TransferPlaces(client, keys)
    assert places.acquire("a", 2, 60_000, 5000) and places.acquire("b", 2, 60_000, 5000)
    assert places.acquire("a", 2, 60_000, 5000)  # already holds one
    assert not places.acquire("c", 2, 60_000, 5000)  # waits, first in line
    assert not places.acquire("d", 2, 60_000, 5000)
    places.release("a")
    assert not places.acquire("d", 2, 60_000, 5000)  # c's turn first
    assert places.acquire("c", 2, 60_000, 5000)
    places.stop_waiting("d")
    assert places.renew(60_000, ["b", "c", "gone"]) == 3
    assert client.zcard(keys.fleetcap) == 2 and not client.zscore(keys.fleetcap, "gone")
    assert places.acquire("short", 3, 1, 5000)
    time.sleep(0.01)
    assert client.zcard(keys.fleetcap) == 3
    assert places.acquire("e", 3, 60_000, 5000)  # the 1 ms place has expired
    assert not client.zscore(keys.fleetcap, "short")


def test_an_item_is_listed_once_and_done_when_its_last_file_settles(client, keys):
    data = node(client, keys)
    record = ItemRecord("a", "0123456789abcdef", "formats=mp3", ("x.mp3", "y.mp3")).encode()
    chunks = [entry("a", ("x.mp3", 10)), entry("a", ("y.mp3", 5))]
    data.ledger.list_item("a", chunks, record=record)
    data.ledger.list_item("a", chunks, record=record)  # listed again (a page handed back)
    data.ledger.list_item("b", [entry("b", ("z.mp3", 1))])  # no fingerprint: no record
    assert data.snapshot()["items_listed"] == 2 and data.snapshot()["items_done"] == 0
    ids = [data.pop(1000)[0] for _ in range(3)]
    assert data.ledger.settle_file(ids[0], "a/x.mp3", "verified", size=10) == (True, None)
    _acked, done = data.ledger.settle_file(ids[1], "a/y.mp3", "verified", size=5)
    assert done == ItemRecord("a", "0123456789abcdef", "formats=mp3", ("x.mp3", "y.mp3"))
    assert data.ledger.settle_file(ids[1], "a/y.mp3", "verified", size=5) == (False, None)
    assert data.ledger.settle_file(ids[2], "b/z.mp3", "verified", size=1) == (True, None)
    state = data.snapshot()
    assert (state["items_listed"], state["items_done"]) == (2, 2)
    assert data.strings(keys.items) == {"a": "done", "b": "done"}
    assert not client.exists(keys.item_records)  # dropped once done


def test_an_item_with_a_failed_file_is_done_but_never_recorded(client, keys):
    data = node(client, keys)
    record = ItemRecord("a", "0123456789abcdef", "", ("x.mp3", "y.mp3")).encode()
    data.ledger.list_item("a", [entry("a", ("x.mp3", 1)), entry("a", ("y.mp3", 1))], [], record)
    first, second = data.pop(1000)[0], data.pop(1000)[0]
    assert data.ledger.settle_file(first, "a/x.mp3", "failed", "bad md5") == (True, None)
    assert data.ledger.settle_file(second, "a/y.mp3", "verified") == (True, None)
    assert data.snapshot()["items_done"] == 1 and not client.exists(keys.item_records)
    # A record that is not what a node writes is never handed to a node.
    data.ledger.list_item("c", [entry("c", ("x.mp3", 1))], [], '["", 3, "x"]')
    assert data.ledger.settle_file(data.pop(1000)[0], "c/x.mp3", "verified") == (True, None)


def test_a_failed_item_or_search_given_up_is_a_failed_job(client, keys):
    alive, dead = node(client, keys, "alive"), node(client, keys, "dead")
    alive.heartbeat(60_000)
    dead.push(b"page", 0, "", "search:collection:gen")
    dead.pop(1000)
    assert alive.reclaim(max_attempts=1) == (0, 1)
    assert alive.strings(keys.items)["search:collection:gen"].startswith("failed: given up")
    assert alive.snapshot()["jobs_failed"] == 1


def test_an_item_with_a_file_stored_unverified_is_done_but_never_recorded(client, keys):
    """The rule of issue 18 (3) in a fleet: a file stored without a checksum match counts as
    stored in the account, but its item is never recorded complete, whichever file is last."""
    for unverified_first in (True, False):
        client.flushdb()
        data = node(client, keys)
        record = ItemRecord("a", "0123456789abcdef", "", ("x.mp3", "y.mp3")).encode()
        chunks = [entry("a", ("x.mp3", 1)), entry("a", ("y.mp3", 1))]
        data.ledger.list_item("a", chunks, [], record)
        first, last = data.pop(1000)[0], data.pop(1000)[0]
        done = [verified("a/x.mp3", recordable=not unverified_first)]
        assert data.ledger.settle_entry(first, "a", done) == (True, None)
        done = [verified("a/y.mp3", recordable=unverified_first)]
        assert data.ledger.settle_entry(last, "a", done) == (True, None)
        state = data.snapshot()
        assert (state["verified"], state["failed"], state["items_done"]) == (2, 0, 1)
        assert not client.exists(keys.item_records)


def test_listing_is_held_back_while_too_many_files_are_pending(client, keys):
    """RAVEL_FLEET_MAX_PENDING: a listing entry is taken only while the pending files (and
    what the listing entries already leased may add) stay below the bound; files always."""
    data = node(client, keys)
    data.ledger.open_run()
    assert data.push(b"meta-a", 1, "fa", "item:a", listing=True)
    assert data.push(b"meta-b", 1, "fb", "item:b", listing=True)
    assert data.queued() == 2 and client.zcard(keys.listing) == 2
    first = data.pop(1000, max_pending=5)
    assert first is not None and first[1] == b"meta-a"
    # Nothing is known of an item's size yet: one leased listing entry reserves the bound.
    assert data.pop(1000, max_pending=5) is None
    # That is pacing, not files piling up: status does not call it held back.
    assert data.snapshot()["listing_held"] == 0 and data.snapshot()["max_pending"] == 5
    files = [entry("a", (n, 1)) for n in "123456"]
    data.ledger.list_item("a", files)
    assert data.ack(first[0])
    # 6 pending files >= 5: listing waits, the files (lower priority) are still taken.
    taken = [data.pop(1000, max_pending=5) for _ in range(3)]
    assert [t[1] for t in taken if t] == [f.payload for f in files[:3]]
    for (entry_id, _), n in zip(filter(None, taken), "123", strict=True):
        assert data.ledger.complete(entry_id, f"a/{n}", "verified", size=1)
    # 3 pending: below the bound, one more item is listed (pending may reach 3 + its files).
    assert data.pop(1000, max_pending=5)[1] == b"meta-b"
    assert data.push(b"meta-d", 1, "fd", "item:d", listing=True)
    # 3 pending + the leased item's 6 (the average item) reach 5: held, files still taken.
    assert data.pop(1000, max_pending=5)[1] == files[3].payload
    state = data.snapshot()
    assert state["listing_held"] == 1 and state["listing_queued"] == 1
    assert data.pop(1000, max_pending=0)[1] == b"meta-d"  # no bound: taken at once
    assert data.snapshot()["listing_held"] == 0
    # The run cannot close while a listing entry waits.
    assert data.push(b"meta-c", 1, "fc", "item:c", listing=True)
    assert data.ledger.finish_run() == (0, 0)


def test_a_listing_entry_handed_back_is_always_taken(client, keys):
    """An item whose listing was under way finishes: a listing entry given back (a node
    stopped) is requeued with the files, which back-pressure never holds."""
    data = node(client, keys)
    data.ledger.open_run()
    assert data.push(b"meta-a", 1, "fa", "item:a", listing=True)
    entry_id, _ = data.pop(1000, max_pending=1)
    data.ledger.list_item("b", [entry("b", ("1", 1), ("2", 1))])
    assert data.nack([entry_id]) == 1
    assert client.zcard(keys.listing) == 0 and client.zcard(keys.requests) == 2
    assert data.pop(1000, max_pending=1)[1] == b"meta-a"  # 2 files pending: taken anyway
    assert data.ack(entry_id)
    files, _ = data.pop(1000, max_pending=10)
    data.ledger.settle_entry(files, "b", [verified("b/1"), verified("b/2")])
    # A listing lease that ended is forgotten by the next pop that weighs a listing entry.
    assert data.push(b"meta-c", 1, "fc", "item:c", listing=True)
    assert data.pop(1000, max_pending=10)[1] == b"meta-c"
    assert client.hkeys(keys.listing_leases) != [entry_id.encode()]
