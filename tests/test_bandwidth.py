"""RAVEL_BANDWIDTH_LIMIT's token bucket and pacer, in-process with a fake clock, and real
crawls that show the limit applied, without timing them (the achieved rate is measured by
``python -m benchmarks.bandwidth``, not here)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from scrapy.settings import Settings

from ravelscraper.downloader.bandwidth import MIN_BURST, Pacer, TokenBucket, bucket_for
from tests.fakearchive import md5_of
from tests.support.crawl import RAVEL, RAVEL_MP3S, scrapy_crawl, stored_files
from tests.support.stores import ftp_server


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reads_within_the_burst_wait_nothing_and_debt_waits_its_refill_time():
    clock = Clock()
    bucket = TokenBucket(1_000_000, clock)  # burst: 50,000 bytes (0.05 s)
    assert bucket.burst == 50_000
    assert bucket.take(50_000) == 0.0
    assert bucket.take(100_000) == pytest.approx(0.1)  # 100 kB in debt at 1 MB/s
    clock.now += 0.1
    assert bucket.take(0) == pytest.approx(0.0, abs=1e-9)  # refilled to zero


def test_the_long_run_rate_is_the_limit_whatever_the_chunk_sizes():
    clock = Clock()
    bucket = TokenBucket(1_000_000, clock)
    received = 0
    for chunk in [65536, 1000, 16384, 200_000, 7] * 40:  # about 11 MB
        received += chunk
        clock.now += bucket.take(chunk)  # a reader that obeys every pause
    elapsed = clock.now - 100.0
    assert received / elapsed == pytest.approx(1_000_000, rel=0.01)


def test_an_idle_spell_does_not_bank_more_than_the_burst():
    clock = Clock()
    bucket = TokenBucket(2_000_000, clock)
    clock.now += 3600
    assert bucket.take(bucket.burst) == 0.0
    assert bucket.take(200_000) == pytest.approx(0.1)


def test_a_small_limit_keeps_a_minimum_burst_and_zero_means_no_bucket():
    assert TokenBucket(1000).burst == MIN_BURST
    assert bucket_for(Settings({"RAVEL_BANDWIDTH_LIMIT": 0})) is None
    assert bucket_for(Settings({"RAVEL_BANDWIDTH_LIMIT": "500000"})).rate == 500_000
    with pytest.raises(ValueError):
        TokenBucket(0)


class Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")


def test_the_pacer_pauses_in_debt_and_resumes_unless_another_reason_holds(monkeypatch):
    later: list = []
    fake_reactor = SimpleNamespace(callLater=lambda wait, f: later.append((wait, f)))
    monkeypatch.setattr("twisted.internet.reactor", fake_reactor, raising=False)
    clock = Clock()
    transport = Transport()
    held = [False]
    pacer = Pacer(
        TokenBucket(100_000, clock), SimpleNamespace(transport=transport), lambda: held[0]
    )

    pacer.read(10_000)  # within the burst
    assert transport.calls == [] and later == []
    pacer.read(26_384)  # 20,000 bytes in debt: 0.2 s
    assert transport.calls == ["pause"]
    ((wait, release),) = later
    assert wait == pytest.approx(0.2)
    pacer.read(1000)  # already paused: no second pause
    assert transport.calls == ["pause"] and len(later) == 1

    held[0] = True  # the writer's backlog also holds it
    release()
    assert transport.calls == ["pause"]
    held[0] = False
    pacer.read(100_000)
    later[-1][1]()
    assert transport.calls == ["pause", "pause", "resume"]


@pytest.mark.slow
def test_a_crawl_under_the_limit_pauses_its_reads_and_verifies_every_file(archive, tmp_path):
    crawl = scrapy_crawl(
        "-a", f"url={archive.details_url(RAVEL)}", store=tmp_path, RAVEL_BANDWIDTH_LIMIT=2_000_000
    )
    assert crawl.returncode == 0, crawl.log
    assert crawl.stat("ravel/bandwidth_pauses") > 0  # the limit held the transports
    stored = stored_files(tmp_path)
    assert sorted(stored) == [f"{RAVEL}/{name}" for name in RAVEL_MP3S]
    for path, body in stored.items():
        assert hashlib.md5(body).hexdigest() == md5_of(RAVEL, path.split("/", 1)[1])


@pytest.mark.slow
def test_in_memory_bodies_of_an_ftp_store_are_limited_too(archive, tmp_path):
    home = tmp_path / "ftp-home"
    home.mkdir()
    with ftp_server(home, "mirror", "Ftp-Pa55word") as address:
        store = f"ftp://mirror:Ftp-Pa55word@{address}/mirror"
        crawl = scrapy_crawl(
            "-a", f"url={archive.details_url(RAVEL)}", store=store, RAVEL_BANDWIDTH_LIMIT=2_000_000
        )
    assert crawl.returncode == 0, crawl.log
    assert crawl.stat("ravel/bandwidth_pauses") > 0
    for path, body in stored_files(home / "mirror").items():
        assert hashlib.md5(body).hexdigest() == md5_of(RAVEL, path.split("/", 1)[1])
