"""Progress a person can follow, and the figures behind it.

Owns the per-file lines and ``ravel/*`` file stats of the files pipeline (:class:`TransferLog`:
``[download start]``, ``[download finished]``, ``[download failed]``, the ``[unverified]``
summary) and the crawl's own lines (:class:`Progress`: ``[main start]``, ``[progress]``
every few seconds, ``[main finished]``, and the ``[failed items]``/``[failed files]``
summary: the first few and the count; the ``-O`` manifest has every file listed).

With many items (``ravel/items_total`` set by the spider), ``[progress]`` starts with the
items: done (every file of the item ended: stored, up to date or failed), unchanged
(skipped), failed (not listed), out of the total archive.org or the item list gave.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from time import monotonic
from typing import Any, Self

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.utils.asyncio import create_looping_call

from ravelscraper.archive.names import shown
from ravelscraper.items import AudioFile
from ravelscraper.logtags import (
    DOWNLOAD_FAILED,
    DOWNLOAD_FINISHED,
    DOWNLOAD_START,
    FAILED_FILES,
    FAILED_ITEMS,
    MAIN_FINISHED,
    MAIN_START,
    PROGRESS,
    UNVERIFIED,
)

logger = logging.getLogger(__name__)
NAMED_FAILURES = 5  # failed items and files named in the summary


def mb(size: float) -> str:
    return f"{size / 1_000_000:.1f}"


def size_text(size: int) -> str:
    """A size in bytes as a person reads it: ``"6.7 MB"``."""
    return f"{size / 1_000_000:.1f} MB"


def rate(size: float, seconds: float) -> float:
    """Bytes per second."""
    return size / max(seconds, 1e-9)


def eta(remaining: float, speed: float) -> str:
    return (
        str(timedelta(seconds=round(remaining / speed)))
        if speed > 0 and remaining > 0
        else "unknown"
    )


class LineBudget:
    """How many files a second get INFO lines: a token bucket of ``rate`` files a second,
    ``2 * rate`` deep (a crawl's first files all show); ``rate`` 0: every file."""

    def __init__(self, rate: float):
        self.rate = rate
        self.depth = max(1.0, 2 * rate)
        self.tokens = self.depth
        self.last = monotonic()

    def take(self) -> bool:
        """True if this file's lines are INFO (one token taken), False if over the rate."""
        if self.rate <= 0:
            return True
        now = monotonic()
        self.tokens = min(self.depth, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class TransferLog:
    """Two lines per file transfer (while files are few a second: ``RAVEL_FILE_LINES``), and
    the ``ravel/*`` stats ``Progress`` reads.

    Built by the files pipeline (so the stats are kept whether or not the ``Progress``
    extension runs); a transfer's start is seen on Scrapy's ``headers_received`` signal.
    Past ``RAVEL_FILE_LINES`` files a second, a file's start and finish lines are DEBUG (said
    once, at INFO): at hundreds of files a second, a line each costs more than the file's
    transfer and scrolls by unread; ``[progress]`` counts them, and failures stay ERROR.
    """

    def __init__(self, crawler: Crawler):
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.budget = LineBudget(crawler.settings.getfloat("RAVEL_FILE_LINES"))
        self.demoted = False  # the one INFO line about DEBUG file lines was logged
        # name -> (when its body started, its lines' level)
        self.started: dict[str, tuple[float, int]] = {}
        self.unverified: list[str] = []  # names stored without a checksum match
        crawler.signals.connect(self.transfer_started, signal=signals.headers_received)

    def level(self) -> int:
        """INFO while the budget allows, else DEBUG (said once at INFO)."""
        if self.budget.take():
            return logging.INFO
        if not self.demoted:
            self.demoted = True
            logger.info(
                f"{PROGRESS} over {self.budget.rate:g} files a second: their start and "
                "finish lines are DEBUG while that lasts (-s RAVEL_FILE_LINES=0 keeps them "
                "at INFO); [progress] counts every file, and each failure is still logged"
            )
        return logging.DEBUG

    def transfer_started(
        self, headers: Any, body_length: int, request: Request, spider: Spider
    ) -> None:
        name = request.meta.get("ravel_name")
        if name is None or b"Location" in headers:
            return  # not a file, or the 302 before it
        level = self.level()
        self.started[name] = (monotonic(), level)
        if not logger.isEnabledFor(level):
            return
        # Twisted's UNKNOWN_LENGTH (no Content-Length: chunked or close-delimited) is a str.
        known = isinstance(body_length, int) and body_length >= 0
        size = size_text(body_length) if known else "size unknown"
        logger.log(level, f"{DOWNLOAD_START} {shown(name)} ({size})")

    def uptodate(self, item: AudioFile) -> None:
        self.stats.inc_value("ravel/files_uptodate")
        self.stats.inc_value("ravel/bytes_uptodate", item.size or 0)

    def stored(self, item: AudioFile, size: int, verified: bool) -> None:
        """A file stored: verified against its listing, or not (``[unverified]``)."""
        now = monotonic()
        started, level = self.started.pop(item.name, None) or (now, self.level())
        self.stats.inc_value("ravel/files_downloaded")
        self.stats.inc_value("ravel/bytes_downloaded", size)
        if not verified:
            self.unverified.append(item.name)
            self.stats.inc_value("ravel/files_unverified")
        if logger.isEnabledFor(level):
            logger.log(
                level,
                f"{DOWNLOAD_FINISHED} {shown(item.name)} ({size_text(size)}, "
                f"{now - started:.1f} s)" + ("" if verified else ", unverified"),
            )

    def failed(self, name: str, reason: str) -> None:
        self.started.pop(name, None)
        self.stats.inc_value("ravel/files_failed")
        logger.error(f"{DOWNLOAD_FAILED} {shown(name)}: {shown(reason)}")

    def cancelled(self) -> None:
        """A file not started: the crawl stopped first (counted, not logged one by one)."""
        self.stats.inc_value("ravel/files_cancelled")

    def log_unverified(self) -> None:
        """At the end of the crawl: the one WARNING for the files stored unverified."""
        if not self.unverified:
            return
        names = ", ".join(shown(n) for n in self.unverified[:5])
        more = f" and {len(self.unverified) - 5} more" if len(self.unverified) > 5 else ""
        logger.warning(
            f"{UNVERIFIED} {len(self.unverified)} files stored without a checksum match "
            f"(no md5 listed, or regenerated by archive.org; see the manifest): {names}{more}"
        )


class Progress:
    """Logs ``[progress]`` every ``RAVEL_PROGRESS_INTERVAL`` seconds and a final summary.

    It reads the ``ravel/*`` stats the spider and the files pipeline keep.
    """

    def __init__(self, crawler: Crawler, interval: float):
        self.crawler = crawler
        self.stats = crawler.stats
        self.interval = interval
        self.started = monotonic()
        self.loop = None
        self.pending: dict[str, int] = {}  # identifier -> files ended, until all have
        self.failed_files: list[str] = []  # the first few, as <identifier>/<name>

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        extension = cls(crawler, crawler.settings.getfloat("RAVEL_PROGRESS_INTERVAL"))
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(extension.file_ended, signal=signals.item_scraped)
        crawler.signals.connect(extension.file_ended, signal=signals.item_dropped)
        crawler.signals.connect(extension.file_ended, signal=signals.item_error)
        return extension

    def file_ended(self, item: Any, **kwargs: Any) -> None:
        """A file out of the pipeline: its item is done once all its files are."""
        if not isinstance(item, AudioFile) or item.failed_item:  # items_failed counts those
            return
        # item_dropped passes ``exception``, item_error ``failure``: the file did not end well.
        failed = bool(item.error) or "exception" in kwargs or "failure" in kwargs
        if failed and len(self.failed_files) < NAMED_FAILURES:
            self.failed_files.append(shown(f"{item.identifier}/{item.name}"))
        if item.item_files <= 0:
            return
        ended = self.pending.pop(item.identifier, 0) + 1
        if ended >= item.item_files:
            self.stats.inc_value("ravel/items_done")
        else:
            self.pending[item.identifier] = ended

    def stat(self, key: str) -> int:
        return self.stats.get_value(f"ravel/{key}", 0)

    def spider_opened(self, spider: Spider) -> None:
        settings = self.crawler.settings
        logger.info(
            f"{MAIN_START} store {settings['FILES_STORE']}, "
            f"{settings.getint('CONCURRENT_REQUESTS_PER_DOMAIN')} files at a time, "
            f"delay {settings.getfloat('DOWNLOAD_DELAY'):.1f} s "
            f"± {settings.getfloat('DOWNLOAD_DELAY_JITTER'):.0%}"
        )
        self.started = monotonic()
        if self.interval > 0:
            self.loop = create_looping_call(self.log_progress)
            self.loop.start(self.interval, now=False)

    def log_progress(self) -> None:
        if self.stats.get_value("ravel/fleet_files_total") is not None:
            self.log_fleet_progress()
            return
        total = self.stat("files_total")
        done = self.own_files_done()
        if (not total or done >= total) and not self.items_remain():
            return
        bytes_total = self.stat("bytes_total")
        downloaded = self.stat("bytes_downloaded")
        bytes_done = downloaded + self.stat("bytes_uptodate")
        speed = rate(downloaded, monotonic() - self.started)
        logger.info(
            f"{PROGRESS} {self.items_text()}{done}/{total} files, "
            f"{mb(bytes_done)}/{mb(bytes_total)} MB, "
            f"{speed / 1_000_000:.2f} MB/s, ETA {eta(bytes_total - bytes_done, speed)}"
        )

    def items_text(self) -> str:
        """``"items 12/2000 (1 failed, 3 unchanged), "`` with many items, else ``""``."""
        total = self.stats.get_value("ravel/items_total")
        if total is None:
            return ""
        failed, unchanged = self.stat("items_failed"), self.stat("items_unchanged")
        done = self.items_done()
        notes = [f"{failed} failed" if failed else ""]
        notes.append(f"{unchanged} unchanged" if unchanged else "")
        note = ", ".join(n for n in notes if n)
        return f"items {done}/{total}" + (f" ({note})" if note else "") + ", "

    def items_remain(self) -> bool:
        """Many items, not all of them done: progress to show even with no file under way."""
        total = self.stats.get_value("ravel/items_total")
        return total is not None and self.items_done() < total

    def items_done(self) -> int:
        return (
            self.stat("items_done")
            + self.stat("items_failed")
            + self.stat("items_unchanged")
            + self.stat("collections_skipped")
        )

    def own_files_done(self) -> int:
        return (
            self.stat("files_downloaded") + self.stat("files_uptodate") + self.stat("files_failed")
        )

    def log_fleet_progress(self) -> None:
        """A fleet node: the whole fleet's files and bytes (the run's ledger, refreshed at
        each heartbeat by the fleet's extension), then this node's share and rate."""
        total, done = self.stat("fleet_files_total"), self.stat("fleet_files_done")
        if not total or done >= total:
            return
        bytes_total, bytes_done = self.stat("fleet_bytes_total"), self.stat("fleet_bytes_done")
        downloaded = self.stat("bytes_downloaded")
        speed = rate(downloaded, monotonic() - self.started)
        failed = self.stat("fleet_files_failed")
        logger.info(
            f"{PROGRESS} fleet {done}/{total} files"
            + (f" ({failed} failed)" if failed else "")
            + f", {mb(bytes_done)}/{mb(bytes_total)} MB; this node {self.own_files_done()} "
            f"files, {mb(downloaded + self.stat('bytes_uptodate'))} MB, "
            f"{speed / 1_000_000:.2f} MB/s"
        )

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        elapsed = monotonic() - self.started
        downloaded, failed = self.stat("files_downloaded"), self.stat("files_failed")
        bytes_downloaded = self.stat("bytes_downloaded")
        level = logging.ERROR if failed else logging.INFO
        logger.log(
            level,
            f"{MAIN_FINISHED} {downloaded} downloaded ({mb(bytes_downloaded)} MB in {elapsed:.1f} "
            f"s, {rate(bytes_downloaded, elapsed) / 1_000_000:.2f} MB/s{self.resume_text()}), "
            f"{self.stat('files_uptodate')} already up to date, "
            + (
                f"{unverified} unverified, "
                if (unverified := self.stat("files_unverified"))
                else ""
            )
            + f"{failed} failed"
            + (f", {cancelled} not started" if (cancelled := self.stat("files_cancelled")) else "")
            + ("" if reason == "finished" else f"; stopped: {reason}"),
        )
        self.log_failures(spider)

    def resume_text(self) -> str:
        """``"; 1.2 MB resumed, 0.3 MB fetched again"``: what cut-off transfers cost."""
        resumed, again = self.stat("bytes_resumed"), self.stat("bytes_refetched")
        if not resumed and not again:
            return ""
        return f"; {mb(resumed)} MB resumed, {mb(again)} MB fetched again"

    def log_failures(self, spider: Spider) -> None:
        """The summary of what failed: the first few items and files, and how many."""
        items = self.stat("items_failed")
        if items:
            named = getattr(spider, "failed_items", [])[:NAMED_FAILURES]
            logger.warning(f"{FAILED_ITEMS} {items}: {names_text(named, items)}")
        files = self.stat("files_failed")
        if files:
            logger.warning(f"{FAILED_FILES} {files}: {names_text(self.failed_files, files)}")


def names_text(names: list[str], count: int) -> str:
    """``"a, b and 3 more"``: the names kept, and how many others failed."""
    more = count - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "") + " (see the log)"
