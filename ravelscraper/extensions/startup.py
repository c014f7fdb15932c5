"""A lighter process: start-up objects frozen out of the garbage collector's way, no log
record built for a level no handler shows, the bodies read in large chunks, and cancelled
timers dropped as the crawl goes."""

from __future__ import annotations

import ctypes
import gc
import logging
from typing import Self

from scrapy import signals
from scrapy.crawler import Crawler
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime


class FreezeStartupObjects:
    """Extension: once the engine has started, ``gc.freeze()`` everything allocated so far.

    The modules, classes and settings loaded at start-up (most of the process's objects)
    then sit in the permanent generation: the collections of the crawl, and the last one
    at exit, no longer walk them (the exit was 0.3 s, 0.2 s of it that collection).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.stats = crawler.stats
        self.log_level = crawler.settings.get("LOG_LEVEL")
        # Under RAVEL_BANDWIDTH_LIMIT reads stay Twisted's 64 KiB: the limit pauses a
        # transport after a read, so each file's last read passes unpaced, and with 1 MiB
        # reads 2 files of 2 MB at 1 MB/s went 54-60 % over the limit (64 KiB: 2.6 %).
        if not crawler.settings.getfloat("RAVEL_BANDWIDTH_LIMIT"):
            read_in_large_chunks()
        crawler.signals.connect(self.engine_started, signal=signals.engine_started)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def engine_started(self) -> None:
        # The young generations' garbage is not frozen. A full collection here, before the
        # first request, took 0.045 s to find 10 objects among 77,000.
        gc.collect(1)
        gc.freeze()
        skip_unshown_records(self.log_level)

    def spider_closed(self) -> None:
        # Counted at the end: counting walks the frozen objects (5 ms before the first request).
        self.stats.set_value("ravel/gc_frozen_objects", gc.get_freeze_count())


PURGE_INTERVAL = 1.0  # seconds between the reactor's looks at its timers (see below)


class PurgeCancelledTimers:
    """Extension: a Twisted timer due every :data:`PURGE_INTERVAL` seconds, so that the
    reactor drops the timers that were cancelled.

    Each request leaves two cancelled Twisted timers (``DelayedCall``, ~150 B each): its
    download timeout (``DOWNLOAD_TIMEOUT``, 180 s) and the idle timeout of the pooled
    connection it took (240 s). The reactor drops cancelled timers when it runs the due ones
    (``runUntilCurrent``); under the asyncio reactor that happens only when a Twisted timer
    comes due, and the first one due is a cancelled timeout, 180 s later. Until then every
    request's two stayed: at 100 requests a second, 36,000 of them, and the memory they
    pinned. With a timer due every second, the reactor drops them as they come (it does
    once more than half of its timers are cancelled).
    """

    def __init__(
        self, crawler: Crawler, clock: IReactorTime | None = None, interval: float = PURGE_INTERVAL
    ) -> None:
        self.interval = interval
        self.loop = task.LoopingCall(lambda: None)
        if clock is not None:  # else the reactor
            self.loop.clock = clock
        crawler.signals.connect(self.engine_started, signal=signals.engine_started)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def engine_started(self) -> None:
        self.loop.start(self.interval, now=False)

    def engine_stopped(self) -> None:
        if self.loop.running:
            self.loop.stop()


def skip_unshown_records(level: str | int | None) -> None:
    """Put ``LOG_LEVEL`` on the loggers, so that a call no handler would show returns at once.

    Scrapy filters at its handler, and leaves the root logger at NOTSET and its ``scrapy``
    logger at DEBUG: every ``logger.debug`` (per request: "Redirecting", "Crawled",
    "Scraped from") built a record, masked by :mod:`~ravelscraper.extensions.redact`, only
    for the handler to drop it (~30 us each). The root logger, if at NOTSET, and the loggers
    without handlers of their own set below ``LOG_LEVEL`` are raised to it; a logger with
    its own handlers is left as it is. Records at ``LOG_LEVEL`` and above are handled as
    before.
    """
    value = logging.getLevelName(level) if isinstance(level, str) else level
    if not isinstance(value, int) or value <= logging.NOTSET:
        return
    if logging.root.level == logging.NOTSET:
        logging.root.setLevel(value)
    for each in logging.root.manager.loggerDict.values():
        bare = isinstance(each, logging.Logger) and not each.handlers  # no handler of its own
        if bare and logging.NOTSET < each.level < value:
            each.setLevel(value)


READ_SIZE = 1 << 20  # bytes asked of each recv() on a connection (Twisted's default: 64 KiB)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameters


def read_in_large_chunks() -> bool:
    """Read each connection's data up to :data:`READ_SIZE` bytes at a time, where the C
    allocator can be told to serve such buffers from its heap; True if so.

    Twisted asks ``recv()`` for 64 KiB: on a multi-GB download the reactor thread runs the
    HTTP parser and the part file's queueing once per 64 KiB. Reading 1 MiB at a time took
    the CPU per GB down by about a quarter (benchmarks/RESULTS.md). ``recv(n)`` allocates
    ``n`` bytes before it knows how many arrive, though, and glibc serves a 1 MiB block with
    ``mmap`` (and frees it with ``munmap``): 65 us more for each small response. Hence the
    allocator's thresholds first: blocks up to 4 MiB from its heap, kept up to 8 MiB free.
    Without glibc's ``mallopt`` nothing changes.
    """
    from twisted.internet import tcp

    try:
        mallopt = ctypes.CDLL(None).mallopt
        done = mallopt(M_MMAP_THRESHOLD, 4 * READ_SIZE) and mallopt(M_TRIM_THRESHOLD, 8 * READ_SIZE)
    except (OSError, AttributeError):
        return False
    if done:
        tcp.Connection.bufferSize = READ_SIZE
    return bool(done)
