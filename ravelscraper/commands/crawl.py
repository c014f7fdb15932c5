"""``scrapy crawl`` with an exit status scripts can trust.

Scrapy exits 0 whenever the crawl ran, even if every file failed. This command exits 1
unless the crawl finished and no file failed, so cron jobs can tell the difference.
"""

from __future__ import annotations

import argparse

from scrapy.commands.crawl import Command as ScrapyCrawl
from scrapy.exceptions import UsageError


class Command(ScrapyCrawl):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give one spider: scrapy crawl ravel")
        assert self.crawler_process
        crawler = self._create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        stats = crawler.stats
        failed = stats.get_value("ravel/files_failed", 0)
        finished = stats.get_value("finish_reason") == "finished"
        if self.crawler_process.bootstrap_failed or failed or not finished:
            self.exitcode = 1
