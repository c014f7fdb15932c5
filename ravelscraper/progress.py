"""Progress a person can follow: a start line, a line every few seconds, and a summary."""

from __future__ import annotations

import logging
from datetime import timedelta
from time import monotonic
from typing import Self

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.utils.asyncio import create_looping_call

logger = logging.getLogger(__name__)


def mb(size: float) -> str:
    return f"{size / 1_000_000:.1f}"


def rate(size: float, seconds: float) -> float:
    """Bytes per second."""
    return size / max(seconds, 1e-9)


def eta(remaining: float, speed: float) -> str:
    return (
        str(timedelta(seconds=round(remaining / speed)))
        if speed > 0 and remaining > 0
        else "unknown"
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

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        extension = cls(crawler, crawler.settings.getfloat("RAVEL_PROGRESS_INTERVAL"))
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def stat(self, key: str) -> int:
        return self.stats.get_value(f"ravel/{key}", 0)

    def spider_opened(self, spider: Spider) -> None:
        settings = self.crawler.settings
        logger.info(
            f"[main start] store {settings['FILES_STORE']}, "
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
        if not total or done >= total:
            return
        bytes_total = self.stat("bytes_total")
        downloaded = self.stat("bytes_downloaded")
        bytes_done = downloaded + self.stat("bytes_uptodate")
        speed = rate(downloaded, monotonic() - self.started)
        logger.info(
            f"[progress] {done}/{total} files, {mb(bytes_done)}/{mb(bytes_total)} MB, "
            f"{speed / 1_000_000:.2f} MB/s, ETA {eta(bytes_total - bytes_done, speed)}"
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
            f"[progress] fleet {done}/{total} files"
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
        megabytes = self.stat("bytes_downloaded")
        level = logging.ERROR if failed else logging.INFO
        logger.log(
            level,
            f"[main finished] {downloaded} downloaded ({mb(megabytes)} MB in {elapsed:.1f} s, "
            f"{rate(megabytes, elapsed) / 1_000_000:.2f} MB/s), "
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
