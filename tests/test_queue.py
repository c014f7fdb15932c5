"""The fleet's request queue (ravelscraper.distributed.queue), in-process on a real redis-server:
entries leased, rejected with one line, never cleared; and ``describe``'s one-line reasons."""

from __future__ import annotations

import pytest
import redis
from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import ItemLocation
from ravelscraper.distributed import serializer
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.queue import ENTRY_META, RejectedEntry, ReliableQueue, describe
from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.distributed.serializer import MAX_ENTRY_BYTES, BadEntry
from ravelscraper.spiders.ravel import RavelSpider

ORIGIN = "http://127.0.0.1:1"


# --- describe -------------------------------------------------------------------------------


def test_our_own_value_errors_are_their_message_alone():
    assert describe(BadEntry("pickled data (not JSON): refused")) == (
        "pickled data (not JSON): refused"
    )
    assert describe(BadEntry("")) == "BadEntry"  # no message: its type


def test_anything_else_is_named_by_its_type():
    assert describe(ValueError("bad value")) == "ValueError: bad value"  # not ours
    assert describe(KeyError("url")) == "KeyError: 'url'"
    assert describe(RuntimeError()) == "RuntimeError"


def test_a_description_is_one_short_line():
    described = describe(BadEntry("a\n  b\tc\r\n" + "x" * 1000))
    assert described.startswith("a b c x") and "\n" not in described
    assert len(described) == 300
    assert len(describe(OSError("y" * 1000))) == len("OSError: ") + 300


# --- the queue ------------------------------------------------------------------------------


@pytest.fixture
def spider() -> RavelSpider:
    return RavelSpider.from_crawler(get_crawler(RavelSpider, {"RAVEL_ORIGIN": ORIGIN}))


@pytest.fixture
def queue(client: redis.Redis, spider: RavelSpider) -> ReliableQueue:
    data = JobData(client, JobKeys.for_prefix("job"), "n1")
    return ReliableQueue(spider, serializer, data=data, origins=AllowedOrigins([ORIGIN]))


def test_a_request_is_leased_with_its_entry_id_and_comes_back_whole(queue, spider):
    request = spider.metadata_request(ItemLocation.on(ORIGIN, "item"))
    assert len(queue) == 0 and queue.pop() is None
    assert queue.push(request, "fp1", "item:item")
    assert not queue.push(request, "fp1")  # seen in this run
    assert len(queue) == 1
    popped = queue.pop()
    assert popped is not None and len(queue) == 0
    assert (popped.url, popped.callback, popped.errback) == (
        request.url,
        spider.parse_metadata,
        spider.metadata_failed,
    )
    assert popped.cb_kwargs == request.cb_kwargs and popped.priority == request.priority
    entry_id = popped.meta[ENTRY_META]
    assert queue.data.client.hexists(queue.data.keys.inflight, entry_id)  # leased, not gone


def test_a_guarded_errback_is_queued_as_the_spiders_own(queue, spider):
    request = spider.metadata_request(ItemLocation.on(ORIGIN, "item"))

    def guarded(failure):  # what the scheduler wraps a popped request's errback in
        return None

    guarded.ravel_original = request.errback  # type: ignore[attr-defined]
    entry = serializer.loads(queue.encode(request.replace(errback=guarded)))
    assert entry["errback"] == "metadata_failed"


def test_a_pickled_entry_is_rejected_in_one_line_never_unpickled(queue):
    queue.data.push(b"\x80\x04K\x01.", 0)
    with pytest.raises(RejectedEntry) as rejected:
        queue.pop()
    assert rejected.value.reason == "pickled data (not JSON): refused, never unpickled"
    assert rejected.value.entry_id


def test_an_entry_of_another_origin_or_too_large_is_rejected(queue, spider):
    other = spider.metadata_request(ItemLocation.on("http://127.0.0.2:1", "item"))
    queue.data.push(serializer.dumps(other.to_dict(spider=spider)), 0)
    with pytest.raises(RejectedEntry) as rejected:
        queue.pop()
    assert "\n" not in rejected.value.reason and "127.0.0.2" in rejected.value.reason
    queue.data.push(b"x" * (MAX_ENTRY_BYTES + 1), 0)
    with pytest.raises(RejectedEntry, match=f"entry of {MAX_ENTRY_BYTES + 1} bytes is larger"):
        queue.pop()


def test_a_fleet_queue_is_never_cleared_by_a_node(queue, spider):
    queue.push(spider.metadata_request(ItemLocation.on(ORIGIN, "item")))
    with pytest.raises(RuntimeError, match="scrapy fleet reset"):
        queue.clear()
    assert len(queue) == 1
