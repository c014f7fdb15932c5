"""PoliteDownloader's dispatch policy, in-process on a fake clock: no crawl, no transfer.

``next_ready`` decides which queued request of a slot starts now, and how long to wait
otherwise; ``dispatch`` starts them under the slot's cap. The transfers themselves are never
started: ``start_transfer``'s coroutine is closed unrun.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from scrapy import Request
from scrapy.core.downloader import Slot
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

import ravelscraper.downloader as downloader_module
from ravelscraper import scrapy_compat
from ravelscraper.downloader import PoliteDownloader, TransferCancelled
from ravelscraper.spiders.ravel import RavelSpider

ORIGIN = "http://127.0.0.1:1"
START = 1000.0  # the fake clock's start: far past every slot's lastseen of 0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(downloader_module, "monotonic", fake)
    return fake


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """start_transfer's coroutines, closed unrun: the transfers never start."""
    coroutines: list[object] = []

    def close(coroutine):  # the stand-in for deferred_from_coro
        coroutine.close()
        coroutines.append(coroutine)

    monkeypatch.setattr(scrapy_compat, "deferred_from_coro", close)
    return coroutines


def polite(listing_delay: float = 0.5, running: bool = True) -> PoliteDownloader:
    crawler = get_crawler(RavelSpider, {"RAVEL_LISTING_DELAY": listing_delay})
    crawler.spider = RavelSpider.from_crawler(crawler)
    crawler.engine = SimpleNamespace(running=running)  # dispatch asks only this of it
    return PoliteDownloader(crawler)


@pytest.fixture
def downloader(clock: Clock) -> Iterator[PoliteDownloader]:
    yield polite()


def file_request(name: str = "a.mp3", **meta: object) -> Request:
    return Request(f"{ORIGIN}/download/item/{name}", meta=dict(meta))


def listing_request(spider: RavelSpider) -> Request:
    return Request(f"{ORIGIN}/metadata/item", callback=spider.parse_metadata)


def queued(slot: Slot, *requests: Request) -> list[Deferred]:
    deferreds = []
    for request in requests:
        deferred: Deferred = Deferred()
        slot.queue.append((request, deferred))
        deferreds.append(deferred)
    return deferreds


# --- next_ready: files ---------------------------------------------------------------------


def test_a_file_waits_download_delay_after_the_previous_file(downloader, clock):
    slot = Slot(concurrency=2, delay=2.0, jitter=0)
    queued(slot, file_request("a.mp3"), file_request("b.mp3"))
    assert downloader.next_ready(slot) == (0, 0.0)  # the first: nothing to wait for
    assert slot.lastseen == START  # its start recorded
    clock.now = START + 1.5
    assert downloader.next_ready(slot) == (None, pytest.approx(0.5))
    assert slot.lastseen == START  # waiting records nothing
    clock.now = START + 2.0
    assert downloader.next_ready(slot) == (0, 0.0)
    assert slot.lastseen == START + 2.0


def test_the_delay_with_jitter_stays_within_its_bounds(downloader, clock):
    slot = Slot(concurrency=2, delay=2.0, jitter=0.5)  # 1 to 3 s
    queued(slot, file_request())
    waits = set()
    for _ in range(200):
        slot.lastseen = clock.now = START
        clock.now += 0.99  # under the shortest delay: never ready
        position, wait = downloader.next_ready(slot)
        assert position is None and 0.01 - 1e-9 <= wait <= 2.01 + 1e-9
        waits.add(round(wait, 3))
        clock.now = START + 3.0  # the longest delay: always ready
        assert downloader.next_ready(slot) == (0, 0.0)
    assert len(waits) > 10  # the jitter varies the wait


def test_the_first_ready_file_in_queue_order_starts(downloader, clock):
    slot = Slot(concurrency=2, delay=0.0, jitter=0)
    queued(slot, file_request("a.mp3"), file_request("b.mp3"))
    assert downloader.next_ready(slot) == (0, 0.0)
    assert downloader.next_ready(slot) == (0, 0.0)  # no delay: ready again at once


def test_a_redirect_hop_goes_first_without_a_pause(downloader, clock):
    slot = Slot(concurrency=2, delay=2.0, jitter=0)
    slot.lastseen = START  # a file just started: the next file waits 2 s
    queued(slot, file_request("a.mp3"), file_request("b.mp3", redirect_times=1))
    assert downloader.next_ready(slot) == (1, 0.0)
    assert slot.lastseen == START  # a hop is no new file: the next file's pause is unchanged
    slot.queue.pop()
    assert downloader.next_ready(slot) == (None, 2.0)


# --- next_ready: listing requests ----------------------------------------------------------


def test_listing_requests_keep_their_own_pace_beside_the_files(downloader, clock):
    spider = downloader.crawler.spider
    slot = Slot(concurrency=2, delay=2.0, jitter=0)
    slot.lastseen = START  # a file just started
    queued(slot, file_request(), listing_request(spider))
    assert downloader.next_ready(slot) == (1, 0.0)  # not behind the file's pause
    assert downloader.listing_lastseen[slot] == START and slot.lastseen == START
    clock.now = START + 0.3
    # The listing request waits 0.2 s more of its pace, the file 1.7 s: the shorter wait.
    assert downloader.next_ready(slot) == (None, pytest.approx(0.2))
    clock.now = START + 0.5
    assert downloader.next_ready(slot) == (1, 0.0)
    assert downloader.listing_lastseen[slot] == START + 0.5


def test_robots_txt_is_a_listing_request_and_a_file_is_not(downloader):
    spider = downloader.crawler.spider
    assert downloader.is_listing(Request(f"{ORIGIN}/robots.txt"))
    assert downloader.is_listing(listing_request(spider))
    assert downloader.is_listing(Request(f"{ORIGIN}/search", callback=spider.parse_search_page))
    assert not downloader.is_listing(file_request())
    assert not downloader.is_listing(Request(f"{ORIGIN}/robots.txt.mp3"))


def test_a_file_does_not_wait_behind_a_listing_request(downloader, clock):
    spider = downloader.crawler.spider
    slot = Slot(concurrency=2, delay=2.0, jitter=0)
    downloader.listing_lastseen[slot] = START  # a listing request just started
    queued(slot, listing_request(spider), file_request())
    assert downloader.next_ready(slot) == (1, 0.0)
    assert slot.lastseen == START and downloader.listing_lastseen[slot] == START


def test_the_listing_pace_is_download_delay_when_that_is_shorter(clock):
    downloader = polite(listing_delay=0.5)
    spider = downloader.crawler.spider
    slot = Slot(concurrency=2, delay=0.2, jitter=0)
    downloader.listing_lastseen[slot] = START
    queued(slot, listing_request(spider))
    clock.now = START + 0.1
    assert downloader.next_ready(slot) == (None, pytest.approx(0.1))
    clock.now = START + 0.2
    assert downloader.next_ready(slot) == (0, 0.0)


def test_the_wait_is_that_of_the_kinds_queued_only(downloader, clock):
    spider = downloader.crawler.spider
    slot = Slot(concurrency=2, delay=2.0, jitter=0)
    slot.lastseen = START
    downloader.listing_lastseen[slot] = START
    clock.now = START + 0.1
    queued(slot, file_request())  # only files: the listing pace (0.4 s left) does not count
    assert downloader.next_ready(slot) == (None, pytest.approx(1.9))
    slot.queue.clear()
    queued(slot, listing_request(spider), listing_request(spider))
    assert downloader.next_ready(slot) == (None, pytest.approx(0.4))


# --- dispatch: the cap and stopping -------------------------------------------------------


def test_dispatch_holds_the_cap_at_zero_delay(downloader, started):
    slot = Slot(concurrency=2, delay=0.0, jitter=0)
    queued(slot, *(file_request(f"{n}.mp3") for n in range(5)))
    downloader.dispatch(slot)
    assert len(slot.transferring) == 2 and len(slot.queue) == 3 and len(started) == 2
    assert {r.url[-5:] for r in slot.transferring} == {"0.mp3", "1.mp3"}  # in queue order
    downloader.dispatch(slot)  # nothing freed: nothing more starts
    assert len(slot.transferring) == 2 and len(started) == 2
    slot.transferring.pop()  # one transfer done
    downloader.dispatch(slot)
    assert len(slot.transferring) == 2 and len(slot.queue) == 2 and len(started) == 3


def test_dispatch_plans_the_next_look_after_the_pause(downloader, clock, started):
    planned: list[float] = []
    downloader.dispatch_later = lambda slot, wait: planned.append(wait)
    slot = Slot(concurrency=3, delay=2.0, jitter=0)
    queued(slot, file_request("a.mp3"), file_request("b.mp3"))
    downloader.dispatch(slot)
    assert len(started) == 1 and len(slot.queue) == 1 and planned == [2.0]
    clock.now = START + 2.0
    downloader.dispatch(slot)
    assert len(started) == 2 and not slot.queue and planned == [2.0]


@pytest.mark.parametrize("how", ["stop_transfers", "engine stopped"])
def test_a_stopping_crawl_drops_what_is_queued(clock, started, how):
    downloader = polite(running=how != "engine stopped")
    slot = Slot(concurrency=1, delay=0.0, jitter=0)
    downloader.slots["127.0.0.1"] = slot
    failures: list[Failure] = []
    for deferred in queued(slot, file_request("a.mp3"), file_request("b.mp3")):
        deferred.addErrback(failures.append)
    if how == "stop_transfers":
        downloader.stop_transfers()
    else:
        downloader.dispatch(slot)
    assert not slot.queue and not started and len(failures) == 2
    assert all(f.check(TransferCancelled) for f in failures)
