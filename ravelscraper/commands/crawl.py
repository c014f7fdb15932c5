"""``scrapy crawl`` with an exit status scripts and service managers can trust.

Scrapy exits 0 whenever the crawl ran, even if every file failed. This command exits 1
unless the crawl finished and no file failed, so cron jobs can tell the difference.

A fleet node (``REDIS_URL``) also exits 1 when it closed a run with failed files or jobs, or
when the fleet's data in Redis was lost; a waiting node (``RAVEL_WAIT_FOR_WORK``) stopped
by a signal while it held no work, with nothing failed, exits 0: a normal stop.
"""

from __future__ import annotations

import argparse
import logging

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.exceptions import UsageError

from ravelscraper import redact
from ravelscraper.checks import settings_problem
from ravelscraper.stores import store_uri_problem

logger = logging.getLogger(__name__)


class Command(ScrapyCrawl):
    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        redact.install()  # before Scrapy's first log line, which comes next

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give one spider: scrapy crawl ravel")
        assert self.crawler_process and self.settings is not None
        # Before any component reads them: a bad value is one line, not a traceback.
        problem = settings_problem(self.settings) or store_uri_problem(
            str(self.settings["FILES_STORE"] or "")
        )
        if problem is not None:
            logger.error(problem)
            self.exitcode = 1
            return
        crawler = self._create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        stats = crawler.stats
        failed = any(
            stats.get_value(key, 0)
            for key in ("ravel/files_failed", "ravel/jobs_failed", "ravel/fleet_failed")
        )
        finished = stats.get_value("finish_reason") == "finished" or bool(
            stats.get_value("ravel/fleet_clean_stop")
        )
        if self.crawler_process.bootstrap_failed or failed or not finished:
            self.exitcode = 1
