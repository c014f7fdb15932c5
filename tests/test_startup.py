"""A lighter start: components the project never uses are not even imported; start-up objects
are frozen out of the garbage collector's way."""

from __future__ import annotations

import gc
import inspect
import re
import subprocess
import sys

import pytest

from tests.fakearchive import file_bytes
from tests.support.crawl import ROOT, crawl_command, crawl_env, stored_files

# Imported only by settings.UNUSED_COMPONENTS, left out of Scrapy's *_BASE settings.
UNUSED = {
    "aiohttp": "RemoteControl",
    "tldextract": "CookiesMiddleware",
    "twisted.conch.telnet": "TelnetConsole",
    "scrapy.extensions.memdebug": "MemoryDebugger",
    "scrapy.downloadermiddlewares.httpcache": "HttpCacheMiddleware",
}
# Never imported by a crawl to a local folder without REDIS_URL.
NOT_NEEDED = {
    "boto3": "the S3 store",
    "botocore": "the S3 store",
    "redis": "a fleet",
    "scrapy_redis": "a fleet",
}


@pytest.mark.slow
def test_a_crawl_never_imports_unused_components_and_freezes_its_start_up(archive, tmp_path):
    store, manifest = tmp_path / "store", tmp_path / "files.jsonl"
    command = crawl_command(
        "-a", "item=d-small", "-O", str(manifest), store=store, RAVEL_ORIGIN=archive.archive
    )
    archive.configure({"items": {"d-small": {"count": 2, "size": 20_000}}})
    command[1:1] = ["-X", "importtime"]
    done = subprocess.run(
        command, cwd=ROOT, env=crawl_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = set(re.findall(r"^import time:.*\|\s+(\S+)$", done.stderr, re.M))
    assert "scrapy.extensions.feedexport" in imported  # -O still works: the sanity check
    assert {name for name in UNUSED if name in imported} == set()
    assert {name for name in NOT_NEEDED if name in imported} == set()
    assert "'Twisted':" in done.stderr and "'Platform':" not in done.stderr  # no `uname -p`
    frozen = re.search(r"'ravel/gc_frozen_objects': (\d+)", done.stderr)
    assert frozen and int(frozen.group(1)) > 10_000
    files = stored_files(store)
    assert len(files) == 2 and all(
        body == file_bytes("d-small", path.split("/", 1)[1], 20_000) for path, body in files.items()
    )
    assert len(manifest.read_text().splitlines()) == 2


def test_the_cheap_frame_lookups_give_what_inspect_gives() -> None:
    from ravelscraper.scrapy_compat import _frames_looked_up_cheaply, _frames_without_source

    def both() -> tuple[list[inspect.FrameInfo], list[inspect.FrameInfo]]:
        return inspect.stack(0), _frames_without_source()

    full, cheap = both()
    assert [(f.frame, f.filename, f.lineno, f.function, f.code_context) for f in full] == [
        (f.frame, f.filename, f.lineno, f.function, f.code_context) for f in cheap
    ]
    stack, getmodule = inspect.stack, inspect.getmodule
    with _frames_looked_up_cheaply():
        caller = inspect.stack()[0]
        assert caller.function == "test_the_cheap_frame_lookups_give_what_inspect_gives"
        assert inspect.getmodule(caller.frame) is sys.modules[__name__] is getmodule(caller.frame)
        assert inspect.getmodule(inspect) is inspect  # not a frame: inspect's own answer
    assert (inspect.stack, inspect.getmodule) == (stack, getmodule)  # put back


def test_the_engine_start_freezes_without_a_full_collection(monkeypatch) -> None:
    import logging

    from scrapy.utils.test import get_crawler

    from ravelscraper.extensions.startup import FreezeStartupObjects

    crawler = get_crawler(settings_dict={"RAVEL_BANDWIDTH_LIMIT": 1e6})
    crawler.stats.open_spider()
    monkeypatch.setattr(logging.root, "level", logging.root.level)  # engine_started sets it
    freeze = FreezeStartupObjects.from_crawler(crawler)
    full_collections = gc.get_stats()[2]["collections"]
    try:
        freeze.engine_started()
        assert gc.get_stats()[2]["collections"] == full_collections
        assert gc.get_freeze_count() > 10_000
        freeze.spider_closed()
        assert crawler.stats.get_value("ravel/gc_frozen_objects") == gc.get_freeze_count()
    finally:
        gc.unfreeze()


def test_no_record_is_built_below_the_log_level(monkeypatch) -> None:
    """Scrapy leaves the root logger at NOTSET: a debug() built (and masked) a record only for
    the handler to drop it; once the level is on the logger, no record is built."""
    import logging

    from ravelscraper.extensions.startup import skip_unshown_records

    built: list[str] = []
    previous = logging.getLogRecordFactory()

    def counting(*args, **kwargs):
        record = previous(*args, **kwargs)
        built.append(record.levelname)
        return record

    monkeypatch.setattr(logging.root, "level", logging.NOTSET)
    monkeypatch.setattr(logging.root, "handlers", [logging.NullHandler()])
    logging.setLogRecordFactory(counting)
    try:
        log = logging.getLogger("scrapy.core.engine")
        log.debug("Crawled (200)")
        assert built == ["DEBUG"]  # Scrapy's default: built, then dropped by the handler
        skip_unshown_records("INFO")
        assert logging.root.level == logging.INFO
        log.debug("Crawled (200)")
        log.info("[download finished]")
        assert built == ["DEBUG", "INFO"]  # the second debug() built nothing
        skip_unshown_records("DEBUG")  # a level already set is left alone
        assert logging.root.level == logging.INFO
    finally:
        logging.setLogRecordFactory(previous)
        logging.Logger.manager._clear_cache()


def test_connections_read_in_large_chunks_when_the_allocator_allows(monkeypatch) -> None:
    from scrapy.utils.test import get_crawler
    from twisted.internet import tcp

    from ravelscraper.extensions.startup import READ_SIZE, FreezeStartupObjects

    monkeypatch.setattr(tcp.Connection, "bufferSize", 65536)
    FreezeStartupObjects.from_crawler(get_crawler())
    # glibc (Linux): its allocator serves 1 MiB recv() buffers from the heap, so reads grow
    assert tcp.Connection.bufferSize == READ_SIZE


def test_under_a_bandwidth_limit_reads_keep_twisteds_size(monkeypatch) -> None:
    from scrapy.utils.test import get_crawler
    from twisted.internet import tcp

    from ravelscraper.extensions.startup import FreezeStartupObjects

    monkeypatch.setattr(tcp.Connection, "bufferSize", 65536)
    FreezeStartupObjects.from_crawler(get_crawler(settings_dict={"RAVEL_BANDWIDTH_LIMIT": 1e6}))
    # a large read would pass a file's last megabyte unpaced, past the limit
    assert tcp.Connection.bufferSize == 65536


@pytest.mark.parametrize("purging", [False, True])
def test_cancelled_timers_are_dropped_as_the_crawl_goes_not_when_the_first_one_was_due(
    purging: bool,
) -> None:
    """Under the asyncio reactor, each request's two cancelled timeouts (180 s, 240 s) stay
    until a Twisted timer comes due; PurgeCancelledTimers makes one due every second."""
    import asyncio
    import gc
    import weakref

    from scrapy import signals
    from scrapy.utils.test import get_crawler
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    from ravelscraper.extensions.startup import PurgeCancelledTimers

    loop = asyncio.new_event_loop()
    reactor = AsyncioSelectorReactor(loop)  # not installed: this test's own
    crawler = get_crawler()
    purge = PurgeCancelledTimers(crawler, clock=reactor, interval=0.05)
    if purging:
        crawler.signals.send_catch_log(signals.engine_started)
    timers = [reactor.callLater(180, lambda: None) for _ in range(100)]
    for timer in timers:
        timer.cancel()
    kept = [weakref.ref(timer) for timer in timers]
    del timers, timer
    try:
        loop.run_until_complete(asyncio.sleep(0.3))  # the purging timer comes due
        gc.collect()
        alive = sum(ref() is not None for ref in kept)
        assert alive == (0 if purging else 100)
        crawler.signals.send_catch_log(signals.engine_stopped)
        assert not purge.loop.running
    finally:
        loop.close()
