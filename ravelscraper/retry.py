"""Retries that back off: exponentially, and never sooner than the server's Retry-After."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Self

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.http import Response

logger = logging.getLogger(__name__)


def retry_after_seconds(value: bytes | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class BackoffRetryMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware, waiting before each retry.

    The wait before retry *n* (from 0) is ``RAVEL_RETRY_BACKOFF_BASE * 2**n``, at most
    ``RAVEL_RETRY_BACKOFF_MAX``, and at least the response's Retry-After (capped at the
    same maximum, so a hostile header cannot stall a crawl for days).
    """

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        middleware = super().from_crawler(crawler)
        middleware.backoff_base = crawler.settings.getfloat("RAVEL_RETRY_BACKOFF_BASE", 1.0)
        middleware.backoff_max = crawler.settings.getfloat("RAVEL_RETRY_BACKOFF_MAX", 60.0)
        return middleware

    def backoff(self, request: Request, response: Response | None) -> float:
        attempt = request.meta.get("retry_times", 0)
        delay = self.backoff_base * 2**attempt
        if response is not None:
            delay = max(delay, retry_after_seconds(response.headers.get("Retry-After")) or 0)
        return min(delay, self.backoff_max)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        result = super().process_response(request, response)
        if isinstance(result, Request):
            await self.wait(request, response, f"HTTP {response.status}")
        return result

    async def process_exception(
        self, request: Request, exception: Exception
    ) -> Request | Response | None:
        result = super().process_exception(request, exception)
        if isinstance(result, Request):
            await self.wait(request, None, type(exception).__name__)
        return result

    async def wait(self, request: Request, response: Response | None, reason: str) -> None:
        delay = self.backoff(request, response)
        self.crawler.stats.inc_value("ravel/retry_wait_seconds", delay)
        logger.warning(f"[retry] {request.url}: {reason}, retrying in {delay:.1f} s")
        await asyncio.sleep(delay)
