"""Stopping a crawl for good: one ERROR line, the reason in ``ravel/error``, a non-zero exit.

Every unit that must end the crawl (a bad item, a broken store, an unreachable archive.org, a
lost Redis) goes through here, so the line, the stat and the exit status always agree. The
crawl command exits 1 whenever the finish reason is not ``finished``.
"""

from __future__ import annotations

import logging

from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import deferred_from_coro

logger = logging.getLogger(__name__)


def report_fatal(crawler: Crawler, message: str) -> None:
    """Log ``message`` as the crawl's one ERROR line and keep it as ``ravel/error``."""
    logger.error(message)
    assert crawler.stats is not None
    crawler.stats.set_value("ravel/error", message)


def fatal(crawler: Crawler, reason: str, message: str) -> CloseSpider:
    """For code that can raise (callbacks, ``open_spider``): ``raise fatal(...)``."""
    report_fatal(crawler, message)
    return CloseSpider(reason)


def stop_crawl(crawler: Crawler, reason: str, message: str) -> None:
    """For code that can't raise into the engine: close the spider with ``reason``."""
    report_fatal(crawler, message)
    assert crawler.engine is not None
    deferred_from_coro(crawler.engine.close_spider_async(reason=reason))
