"""``scrapy crawl`` with an exit status scripts and service managers can trust.

Scrapy exits 0 whenever the crawl ran, even if every file failed. This command exits 1
unless the crawl finished, no file or item failed, no fatal error was reported
(``ravel/error``) and no exception escaped the spider (Scrapy's ``spider_exceptions/count``:
a callback, an errback or the start requests raised; whatever the callback was doing is
lost, so the run failed, said in one ERROR line at the end), so cron jobs can tell the
difference.

A fleet node (``REDIS_URL``) also exits 1 when it closed a run with failed files or jobs, or
when the fleet's data in Redis was lost; a waiting node (``RAVEL_WAIT_FOR_WORK``) stopped
by a signal while it held no work, with nothing failed, exits 0: a normal stop.

Before anything else, it checks that the installed Scrapy still has every private name
ravelscraper relies on (:func:`ravelscraper.scrapy_compat.missing_names`): if one is gone,
one ERROR line names it and the pinned versions, and the command exits 1 before any crawl.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from scrapy import signals
from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.crawler import Crawler
from scrapy.exceptions import UsageError
from scrapy.extensions.feedexport import FeedExporter

from ravelscraper.checks import settings_problem
from ravelscraper.extensions import redact
from ravelscraper.logtags import SPIDER_ERROR
from ravelscraper.scrapy_compat import PINNED, installed_versions, missing_names
from ravelscraper.stores import store_uri_problem

logger = logging.getLogger(__name__)


def scrapy_problem() -> str | None:
    """One line if the installed Scrapy lacks a private name ravelscraper relies on."""
    missing = missing_names()
    if not missing:
        return None
    pinned = ", ".join(f"{name}=={number}" for name, number in PINNED.items())
    installed = ", ".join(f"{name} {number}" for name, number in installed_versions().items())
    return (
        f"this Scrapy lacks what ravelscraper relies on: {', '.join(missing)}. "
        f"ravelscraper needs the pinned versions ({pinned}; installed: {installed})"
    )


def spider_exceptions(stats: Any) -> int:
    """How many exceptions escaped the spider's callbacks, errbacks and start requests."""
    return int(stats.get_value("spider_exceptions/count", 0) or 0)


def report_spider_exceptions(sender: Crawler, **kwargs: Any) -> None:
    """At the end of the crawl: one ERROR line if an exception escaped the spider."""
    count = spider_exceptions(sender.stats)
    if count:
        logger.error(
            f"{SPIDER_ERROR} {count} exception(s) escaped the spider (the tracebacks are "
            "above); what they interrupted was not done: the run failed"
        )


def warn_if_feeds_unused(sender: Crawler, **kwargs: Any) -> None:
    """Scrapy's own crawl command warns so when -o/-O can't be honoured; this one too."""
    if sender.settings.getdict("FEEDS") and sender.get_extension(FeedExporter) is None:
        logger.warning(
            "The FeedExporter extension is not enabled, so no item will be "
            "exported to the configured feeds (FEEDS, -o, -O)."
        )


class Command(ScrapyCrawl):
    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        redact.install()  # before Scrapy's first log line, which comes next

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give one spider: scrapy crawl ravel")
        assert self.crawler_process and self.settings is not None
        # Before any component reads them: a bad value is one line, not a traceback.
        problem = (
            scrapy_problem()
            or settings_problem(self.settings)
            or store_uri_problem(str(self.settings["FILES_STORE"] or ""))
        )
        if problem is not None:
            logger.error(problem)
            self.exitcode = 1
            return
        crawler = self.crawler_process.create_crawler(args[0])
        crawler.signals.connect(warn_if_feeds_unused, signal=signals.engine_started)
        crawler.signals.connect(report_spider_exceptions, signal=signals.engine_stopped)
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        stats = crawler.stats
        failed = any(
            stats.get_value(key, 0)
            for key in (
                "ravel/files_failed",
                "ravel/items_failed",
                "ravel/jobs_failed",
                "ravel/fleet_failed",
            )
        )
        finished = stats.get_value("finish_reason") == "finished" or bool(
            stats.get_value("ravel/fleet_clean_stop")
        )
        fatal = stats.get_value("ravel/error") is not None  # set only by ravelscraper.stop
        failed = failed or spider_exceptions(stats) > 0
        if self.crawler_process.bootstrap_failed or failed or fatal or not finished:
            self.exitcode = 1
