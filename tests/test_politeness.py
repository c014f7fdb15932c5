"""Politeness measured where it matters: at the server."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.fakearchive import max_simultaneous
from tests.support.crawl import scrapy_crawl, stored_files


def file_requests(archive, host: str) -> list[dict]:
    return [
        e
        for e in archive.stats()["log"]
        if e["host"] == host
        and e["method"] == "GET"
        and "/robots.txt" not in e["path"]
        and not e["path"].startswith(("/details/", "/metadata/"))
    ]


def crawl_bulk(archive, store, **settings):
    return scrapy_crawl("-a", "item=bulk-40", store=store, RAVEL_ORIGIN=archive.archive, **settings)


def crawl_paced(archive, store, **settings):
    """Two files at a time, each 0.3 s after the previous one (no jitter)."""
    return crawl_bulk(
        archive,
        store,
        CONCURRENT_REQUESTS_PER_DOMAIN=2,
        DOWNLOAD_DELAY=0.3,
        DOWNLOAD_DELAY_JITTER=0,
        **settings,
    )


@pytest.mark.slow
def test_the_per_domain_cap_holds_at_zero_delay(archive, tmp_path):
    # 64 KiB files at 256 KB/s: each transfer lasts ~0.25 s, so they would overlap freely.
    archive.configure({"bandwidth": 256_000})
    crawl = crawl_bulk(
        archive,
        tmp_path,
        CONCURRENT_REQUESTS_PER_DOMAIN=3,
        DOWNLOAD_DELAY=0,
    )
    assert crawl.returncode == 0, crawl.log
    assert len(stored_files(tmp_path)) == 40
    stats = archive.stats()
    transfers = file_requests(archive, "127.0.0.2")
    assert len(transfers) == 40
    assert stats["127.0.0.2"]["max_active"] == 3
    assert max_simultaneous(transfers) == 3
    # archive.org and its storage node share the budget: a 302 and a transfer never make 4.
    both = file_requests(archive, "127.0.0.1") + transfers
    assert max_simultaneous(both) == 3


@pytest.mark.slow
def test_each_file_costs_one_delay_and_the_redirect_none(archive, tmp_path):
    crawl = crawl_paced(archive, tmp_path, RAVEL_STORAGE_DIRECT=0)  # every file: its 302
    assert crawl.returncode == 0, crawl.log
    redirects = sorted(e["start"] for e in file_requests(archive, "127.0.0.1"))
    assert len(redirects) == 40
    gaps = [b - a for a, b in itertools.pairwise(redirects)]
    assert min(gaps) >= 0.25  # the delay, with a little scheduling slack
    transfers = file_requests(archive, "127.0.0.2")
    assert max_simultaneous(transfers + file_requests(archive, "127.0.0.1")) <= 2
    # The hop to the storage node follows its 302 at once, not after the next pause.
    redirect_end = {
        e["path"].rsplit("/", 1)[1]: e["end"] for e in file_requests(archive, "127.0.0.1")
    }
    hop_waits = sorted(e["start"] - redirect_end[e["path"].rsplit("/", 1)[1]] for e in transfers)
    assert hop_waits[len(hop_waits) // 2] < 0.15, hop_waits
    # 40 files at one 0.3 s pause each: about 12 s; two pauses a file would take 24 s.
    span = max(e["end"] for e in transfers) - redirects[0]
    assert span < 20


@pytest.mark.slow
def test_progress_lines_while_downloading(archive, tmp_path):
    archive.configure({"bandwidth": 128_000})
    crawl = crawl_bulk(
        archive,
        tmp_path,
        CONCURRENT_REQUESTS_PER_DOMAIN=4,
        RAVEL_PROGRESS_INTERVAL=0.5,
    )
    assert crawl.returncode == 0, crawl.log
    progress = re.findall(
        r"\[progress\] (\d+)/40 files, ([\d.]+)/([\d.]+) MB, ([\d.]+) MB/s, ETA (\S+)", crawl.log
    )
    assert len(progress) >= 2
    done = [int(p[0]) for p in progress]
    assert done == sorted(done) and done[-1] < 40
    assert "[main finished] 40 downloaded" in crawl.log


@pytest.mark.slow
def test_autothrottle_is_an_opt_in_that_keeps_the_cap(archive, tmp_path):
    archive.configure({"latency": 0.05})
    crawl = crawl_bulk(
        archive,
        tmp_path,
        AUTOTHROTTLE_ENABLED=True,
        AUTOTHROTTLE_START_DELAY=0.05,
        AUTOTHROTTLE_MAX_DELAY=0.5,
        DOWNLOAD_DELAY=0,
        CONCURRENT_REQUESTS_PER_DOMAIN=2,
    )
    assert crawl.returncode == 0, crawl.log
    assert len(stored_files(tmp_path)) == 40
    transfers = file_requests(archive, "127.0.0.2") + file_requests(archive, "127.0.0.1")
    assert max_simultaneous(transfers) <= 2
    assert "scrapy.extensions.throttle.AutoThrottle" in crawl.log


@pytest.mark.slow
def test_files_fetched_straight_from_the_storage_node_keep_the_delay_and_the_cap(archive, tmp_path):
    # RAVEL_STORAGE_DIRECT (the default): the first file's 302, then 39 direct requests.
    crawl = crawl_paced(archive, tmp_path)
    assert crawl.returncode == 0, crawl.log
    assert len(stored_files(tmp_path)) == 40
    front = file_requests(archive, "127.0.0.1")
    transfers = file_requests(archive, "127.0.0.2")
    assert len(front) == 1 and len(transfers) == 40
    # Each file starts (its 302, or its direct request) one pause after the previous one.
    starts: dict[str, float] = {}
    for entry in front + transfers:
        name = entry["path"].rsplit("/", 1)[1]
        starts[name] = min(starts.get(name, entry["start"]), entry["start"])
    first = sorted(starts.values())
    gaps = sorted(b - a for a, b in itertools.pairwise(first))
    # The delay is kept by the client, the server sees a request once its headers are in (a
    # new connection later than a kept one): single gaps are noisy, their sum and median not.
    assert len(gaps) == 39 and gaps[len(gaps) // 2] >= 0.29, gaps
    assert first[-1] - first[0] >= 39 * 0.3 * 0.95, gaps
    assert max_simultaneous(front + transfers) <= 2
