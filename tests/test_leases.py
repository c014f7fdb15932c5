"""A fleet node's leases (ravelscraper.distributed.leases), in-process: what became of each
entry, and how each state is settled in Redis (a real redis-server, no crawl).

The engine is a stand-in: ``running``, ``downloader.stopping``, and the two things
scrapy_compat reads of it (whether it is closing, the requests in progress) patched in.
Giving an entry up after RAVEL_MAX_ATTEMPTS is the reclaim script's, tested in
tests/test_redis_schema.py.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import redis
from scrapy import Request
from scrapy.http import Response
from scrapy.utils.test import get_crawler
from twisted.python.failure import Failure

from ravelscraper.distributed import leases as leases_module
from ravelscraper.distributed.entries import CHUNK_META, ENTRY_URL, chunks_of
from ravelscraper.distributed.leases import Lease, Leases, node_stopping
from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.ledger import EntryFiles, ItemRecord
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.items import AudioFile

URL = "http://127.0.0.1:1/download/item/a.mp3"
MD5 = "0" * 32


def engine(running: bool = True, stopping: bool = False, closing: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        running=running,
        downloader=SimpleNamespace(stopping=stopping),
        closing=closing,
        in_progress=set(),
    )


@pytest.fixture(autouse=True)
def stand_in_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases_module, "engine_closing", lambda engine: engine.closing)
    monkeypatch.setattr(leases_module, "in_progress", lambda engine: engine.in_progress)


def node(data: JobData | None = None) -> Leases:
    crawler = get_crawler()
    crawler.engine = engine()
    return Leases(crawler, SimpleNamespace(data=data, node="n1"))  # type: ignore[arg-type]


def audio(name: str = "a.mp3", **fields: object) -> AudioFile:
    return AudioFile(identifier="item", name=name, url=URL, **fields)  # type: ignore[arg-type]


def answer(request: Request) -> Response:
    return Response(request.url, request=request)


def file_request(identifier: str = "item", *names: str) -> Request:
    """A popped file entry's request, holding the files ``names`` (``a.mp3`` by default)."""
    files = [
        AudioFile(identifier, n, f"http://127.0.0.1:1/download/{identifier}/{n}", size=3)
        for n in names or ("a.mp3",)
    ]
    (chunk,) = chunks_of(files)
    return Request(ENTRY_URL, meta={CHUNK_META: chunk}, dont_filter=True)


def outcome(leases: Leases, entry_id: str = "1") -> tuple[str, str, str, int, bool] | None:
    """The outcome of the one file of a lease's entry, as a tuple (None: none yet)."""
    found = list(leases.by_entry[entry_id].outcomes.values())
    if not found:
        return None
    (done,) = found
    return (done.path, done.outcome, done.reason, done.size, done.recordable)


# --- node_stopping --------------------------------------------------------------------------


def test_a_node_is_stopping_unless_its_engine_runs_and_nothing_stops_it():
    crawler = get_crawler()
    crawler.engine = engine()
    assert not node_stopping(crawler)
    for stopped in (engine(running=False), engine(stopping=True), engine(closing=True)):
        crawler.engine = stopped
        assert node_stopping(crawler)


# --- what became of each lease --------------------------------------------------------------


def test_a_lease_is_found_by_its_request_and_marked_only_there():
    leases = node()
    page, other = Request("http://127.0.0.1:1/metadata/a"), Request("http://127.0.0.1:1/x")
    leases.take("1", page, is_file=False)
    assert len(leases) == 1 and leases.lease_for(page) is leases.by_entry["1"]
    assert leases.lease_for(other) is None and leases.lease_for(None) is None
    leases.page_done(other)
    leases.unfinished(other)
    leases.entry_rejected(other, "bad")  # not a lease of this node: nothing happens
    assert leases.by_entry["1"] == Lease("1", page, is_file=False)
    leases.page_done(page)
    leases.unfinished(page)
    leases.entry_rejected(page, "bad")
    lease = leases.by_entry["1"]
    assert (lease.completed, lease.unfinished, lease.rejected) == (True, True, "bad")


@pytest.mark.parametrize("status", ["downloaded", "uptodate", "unverified"])
@pytest.mark.parametrize("md5", [MD5, None])
def test_a_stored_file_is_verified_with_its_listed_size(status, md5):
    leases = node()
    request = file_request()
    leases.take("1", request, is_file=True)
    assert leases.in_hand() == 1
    leases.item_scraped(audio(size=7, md5=md5, files=[{"status": status}]), answer(request), None)
    # Only a file checked against a listed checksum counts toward its item's record.
    recordable = status != "unverified" and md5 is not None
    assert outcome(leases) == ("item/a.mp3", "verified", "", 7, recordable)
    assert leases.in_hand() == 0


@pytest.mark.parametrize(
    ("item", "kwargs", "reason"),
    [
        (audio(files=[{"status": "failed", "reason": "md5 mismatch"}]), None, "md5 mismatch"),
        (audio(error="refused the name"), None, "refused the name"),
        (audio(), None, "not stored (see the log of node n1)"),
        (audio(files=[{"status": "downloaded"}]), {"failure": Failure(OSError("disk"))}, None),
        (audio(), {"exception": ValueError("late")}, "ValueError: late"),
        (audio(), {}, "dropped"),
    ],
)
def test_a_file_not_stored_fails_with_the_first_reason_known(item, kwargs, reason):
    leases = node()
    request = file_request()
    leases.take("1", request, is_file=True)
    if kwargs is None:
        leases.item_scraped(item, answer(request), None)
    else:
        leases.item_not_stored(item, answer(request), None, **kwargs)
    found = outcome(leases)
    assert found is not None
    path, state, why, size, recordable = found
    assert (path, state, size, recordable) == ("item/a.mp3", "failed", 0, False)
    assert why == (reason or "OSError: disk")  # an error after storing still fails it


def test_a_file_cut_short_by_a_stopping_node_is_unfinished_not_failed():
    leases = node()
    leases.crawler.engine = engine(stopping=True)
    request = file_request()
    leases.take("1", request, is_file=True)
    leases.item_scraped(
        audio(files=[{"status": "failed", "reason": "cancelled"}]), answer(request), None
    )
    assert leases.by_entry["1"].unfinished and outcome(leases) is None
    # Stored before the node stopped: that counts, stopping or not.
    leases.item_scraped(audio(size=1, files=[{"status": "downloaded"}]), answer(request), None)
    assert outcome(leases) == ("item/a.mp3", "verified", "", 1, False)


def test_only_a_file_lease_settles_and_only_with_a_file():
    leases = node()
    page, file = Request("http://127.0.0.1:1/metadata/item"), file_request()
    leases.take("page", page, is_file=False)
    leases.take("file", file, is_file=True)
    leases.item_scraped(audio(files=[{"status": "downloaded"}]), answer(page), None)
    leases.item_scraped({"name": "a.mp3"}, answer(file), None)  # not an AudioFile
    leases.item_scraped(audio(files=[{"status": "downloaded"}]), answer(file_request()), None)
    leases.item_scraped(audio(files=[{"status": "downloaded"}]), None, None)
    assert outcome(leases, "page") is None and outcome(leases, "file") is None
    assert leases.in_hand() == 2


# --- settling them in Redis -----------------------------------------------------------------


@pytest.fixture
def data(client: redis.Redis, keys: JobKeys) -> JobData:
    return JobData(client, keys, "n1")


def leased(data: JobData, leases: Leases, name: str, is_file: bool, owner: str = "") -> Request:
    """A request this node popped from the queue (its entry leased in Redis): a file entry
    holds ``<name>/a.mp3``, listed in the ledger."""
    if is_file:
        request = file_request(name)
        chunk = request.meta[CHUNK_META]
        data.ledger.list_item(name, [EntryFiles(chunk.encode(), 1, 3)])
    else:
        data.push(name.encode(), 0, "", owner)
        request = Request(f"http://127.0.0.1:1/{name}")
    popped = data.pop(1000)
    assert popped is not None
    leases.take(popped[0], request, is_file=is_file)
    return request


def entry_of(leases: Leases, request: Request) -> str:
    lease = leases.lease_for(request)
    assert lease is not None
    return lease.entry_id


def names_of(leases: Leases) -> dict[str, str]:
    """Entry id by name (a file entry's identifier, a page's URL)."""
    return {
        r.meta[CHUNK_META].identifier if CHUNK_META in r.meta else r.url.rsplit("/", 1)[1]: (
            entry_of(leases, r)
        )
        for r in leases.by_request
    }


def test_each_state_is_settled_its_way(data: JobData):
    keys, client = data.keys, data.client
    leases = node(data)
    rejected = leased(data, leases, "rejected", is_file=True)
    unfinished = leased(data, leases, "unfinished", is_file=True)
    stored = leased(data, leases, "stored", is_file=True)
    leased(data, leases, "empty", is_file=True)
    leased(data, leases, "page", is_file=False)
    busy = leased(data, leases, "busy", is_file=False)
    ids = names_of(leases)
    leases.entry_rejected(rejected, "not JSON")
    leases.unfinished(unfinished)
    done = audio(size=3, files=[{"status": "downloaded"}])
    done.identifier = "stored"
    leases.item_scraped(done, answer(stored), None)
    leases.crawler.engine.in_progress = {busy}
    leases.acknowledge_finished()
    assert client.hget(keys.rejected, ids["rejected"]) == b"not JSON"
    assert client.zscore(keys.requests, ids["unfinished"]) is not None  # handed back
    assert data.ledger.failures()[0] == [
        ("empty/a.mp3", "file entry produced no file"),
        ("rejected/a.mp3", "rejected: not JSON"),
    ]
    tally = data.strings(keys.tally)
    assert (tally["verified:stored"], tally["failed"], tally["listed"]) == ("1", "2", "4")
    # the stored file, the empty entry (its file failed) and the page
    assert client.hget(keys.counters, "acked") == b"3"
    assert list(leases.by_entry) == [ids["busy"]]  # still in progress: kept
    assert client.hkeys(keys.inflight) == [ids["busy"].encode()]
    leases.crawler.engine.in_progress = set()
    leases.page_done(busy)
    leases.acknowledge_finished()
    assert not leases.by_entry and not leases.by_request and client.hlen(keys.inflight) == 0


def test_a_stopping_node_keeps_what_was_cut_short_and_hands_it_back(data: JobData):
    keys, client = data.keys, data.client
    leases = node(data)
    leases.crawler.engine = engine(running=False)
    unfinished = leased(data, leases, "unfinished", is_file=True)
    empty = leased(data, leases, "empty", is_file=True)
    cut_short = leased(data, leases, "cut-short", is_file=False)
    done = leased(data, leases, "done", is_file=False)
    rejected = leased(data, leases, "rejected", is_file=True)
    leases.unfinished(unfinished)
    leases.page_done(done)
    leases.entry_rejected(rejected, "bad")
    rejected_id = entry_of(leases, rejected)
    leases.acknowledge_finished()
    assert client.hget(keys.counters, "acked") == b"1"  # only the page whose output is queued
    assert client.hexists(keys.rejected, rejected_id)
    kept = {entry_of(leases, r) for r in (unfinished, empty, cut_short)}
    assert set(leases.by_entry) == kept and data.queued() == 0
    assert leases.hand_back() == 3
    assert len(leases) == 0 and data.queued() == 3 and client.hlen(keys.inflight) == 0


def test_a_stopping_node_settles_the_files_it_did_and_hands_the_others_back(data: JobData):
    keys, client = data.keys, data.client
    leases = node(data)
    request = file_request("item", "a.mp3", "b.mp3", "c.mp3")
    data.ledger.list_item("item", [EntryFiles(request.meta[CHUNK_META].encode(), 3, 9)])
    entry_id, _ = data.pop(1000)
    leases.take(entry_id, request, is_file=True)
    leases.item_scraped(audio(size=3, files=[{"status": "downloaded"}]), answer(request), None)
    leases.crawler.engine = engine(running=False)
    leases.acknowledge_finished()
    assert leases.in_hand() == 2 and data.queued() == 0  # kept for hand_back
    assert leases.hand_back() == 1 and not leases.by_entry
    assert data.strings(keys.tally)["verified"] == "1" and data.snapshot()["pending"] == 2
    assert client.zscore(keys.requests, entry_id) is not None
    left = request.meta[CHUNK_META].encode(request.meta[CHUNK_META].rows[1:])
    assert client.hget(keys.payloads, entry_id) == left  # b.mp3 and c.mp3 only


def test_hand_back_leaves_a_rejected_entry_out(data: JobData):
    leases = node(data)
    leased(data, leases, "a", is_file=True)
    leases.entry_rejected(leased(data, leases, "b", is_file=True), "bad")
    assert leases.hand_back() == 1 and data.queued() == 1 and not leases.by_request


def test_the_last_verified_file_of_an_item_records_it(data: JobData):
    record = ItemRecord("item", "0123456789abcdef", "formats=mp3", ("a.mp3",))
    leases = node(data)
    recorded: list[ItemRecord] = []
    leases.record_item = recorded.append  # writing the record needs a running reactor
    request = file_request()
    chunk = request.meta[CHUNK_META]
    data.ledger.list_item("item", [EntryFiles(chunk.encode(), 1, 3)], record=record.encode())
    entry_id, _ = data.pop(1000)
    leases.take(entry_id, request, is_file=True)
    leases.item_scraped(
        audio(size=3, md5=MD5, files=[{"status": "downloaded"}]), answer(request), None
    )
    leases.acknowledge_finished()
    assert recorded == [record] and not leases.by_entry


def test_a_lease_lost_meanwhile_is_dropped_with_one_warning(data: JobData, caplog):
    leases = node(data)
    page = leased(data, leases, "page", is_file=False)
    data.client.hdel(data.keys.inflight, entry_of(leases, page))  # reclaimed by another node
    with caplog.at_level(logging.WARNING):
        leases.acknowledge_finished()
    assert not leases.by_entry
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "was lost" in warning and "RAVEL_NODE_TTL" in warning


def test_held_since_breaks_whenever_the_node_may_have_held_no_entry(data: JobData):
    """The scheduler skips opening the run while a lease was held without a break since it
    saw the run open (a run closes only once no entry is leased)."""
    leases = node(data)
    epoch = leases.epoch
    assert not leases.held_since(epoch)  # nothing held: the run may close any time
    first = leased(data, leases, "a", is_file=False)
    second = leased(data, leases, "b", is_file=False)
    assert leases.held_since(epoch)
    leases.page_done(first)
    leases.crawler.engine.in_progress = {second}
    leases.acknowledge_finished()
    assert list(leases.by_request) == [second] and leases.held_since(epoch)  # "b" still held
    leases.crawler.engine.in_progress = set()
    leases.page_done(second)
    leases.acknowledge_finished()
    assert not leases.by_entry and not leases.held_since(epoch)
    leased(data, leases, "c", is_file=False)
    assert not leases.held_since(epoch)  # held again, but not since then
    epoch = leases.epoch
    assert leases.held_since(epoch)
    leases.lost()  # presumed dead: its leases may be another node's
    assert not leases.held_since(epoch)
    epoch = leases.epoch
    assert leases.hand_back() == 1 and not leases.held_since(epoch)
