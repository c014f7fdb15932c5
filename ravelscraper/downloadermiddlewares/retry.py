"""Retries that back off: exponentially, and never sooner than the server's Retry-After.

Offline, fail fast: until some host has answered in this crawl, a request that can't connect
at all (DNS failure, connection refused, no route) is retried once, then the crawl stops with
one ERROR line naming the host and the cause. Once anything has answered, the same errors
are transient and get the usual retries.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Self
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    IgnoreRequest,
)
from scrapy.http import Response
from twisted.internet import error as tx_error

from ravelscraper.logtags import RETRY
from ravelscraper.stop import stop_crawl

logger = logging.getLogger(__name__)


def retry_after_seconds(value: bytes | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isascii() and text.isdigit():  # not str.isdigit alone: "²" is a digit to it
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# Tries of a request that can't connect before the crawl is declared offline.
OFFLINE_TRIES = 2


class HostUnreachable(IgnoreRequest):
    """A request dropped because archive.org could not be reached when the crawl started."""


def unreachable_cause(exception: Exception) -> str | None:
    """What a failure to connect at all says, in words; None for any other error."""
    if isinstance(exception, CannotResolveHostError | tx_error.DNSLookupError):
        return "its name does not resolve (DNS lookup failed)"
    if isinstance(exception, DownloadConnectionRefusedError | tx_error.ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(exception, tx_error.NoRouteError):
        return "there is no route to it (network unreachable)"
    if isinstance(exception, tx_error.ConnectError):
        return f"cannot connect ({type(exception).__name__})"
    return None


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, never its user or password."""
    parts = urlsplit(url)
    host = repr(str(parts.hostname))[1:-1]  # escaped: a redirect can name any host
    return f"{host}:{parts.port}" if parts.port else host


def is_robots(request: Request) -> bool:
    return bool(request.meta.get("dont_obey_robotstxt")) and urlsplit(request.url).path == (
        "/robots.txt"
    )


class BackoffRetryMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware, waiting before each retry.

    The wait before retry *n* (from 0) is ``RAVEL_RETRY_BACKOFF_BASE * 2**n``, at most
    ``RAVEL_RETRY_BACKOFF_MAX``, and at least the response's Retry-After (capped at the
    same maximum, so a hostile header cannot stall a crawl for days).
    """

    answered = False  # has any host answered in this crawl?
    offline: str | None = None  # the ERROR line, once the crawl is declared offline

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        middleware = super().from_crawler(crawler)
        middleware.backoff_base = crawler.settings.getfloat("RAVEL_RETRY_BACKOFF_BASE")
        middleware.backoff_max = crawler.settings.getfloat("RAVEL_RETRY_BACKOFF_MAX")
        return middleware

    def backoff(self, request: Request, response: Response | None) -> float:
        attempt = request.meta.get("retry_times", 0)
        delay = self.backoff_base * 2**attempt
        if response is not None:
            delay = max(delay, retry_after_seconds(response.headers.get("Retry-After")) or 0)
        return min(delay, self.backoff_max)

    def process_request(self, request: Request) -> None:
        if self.offline is not None:
            raise HostUnreachable(self.offline)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        self.answered = True
        result = super().process_response(request, response)
        if isinstance(result, Request):
            await self.wait(request, response, f"HTTP {response.status}")
        return result

    async def process_exception(
        self, request: Request, exception: Exception
    ) -> Request | Response | None:
        if self.offline is not None:
            raise HostUnreachable(self.offline)
        cause = None if self.answered else unreachable_cause(exception)
        if cause and request.meta.get("retry_times", 0) + 1 >= OFFLINE_TRIES:
            self.declare_offline(request, cause)
        robots = is_robots(request)
        if robots:  # Scrapy's robots.txt middleware would log a traceback: one line instead
            request.meta.setdefault("give_up_log_level", logging.DEBUG)
        result = super().process_exception(request, exception)
        if isinstance(result, Request):
            await self.wait(request, None, type(exception).__name__)
        elif result is None and robots:
            logger.warning(
                f"robots.txt of {host_of(request.url)} unavailable "
                f"({type(exception).__name__}); going on without it"
            )
            raise IgnoreRequest(f"robots.txt unavailable: {exception}")
        return result

    async def wait(self, request: Request, response: Response | None, reason: str) -> None:
        delay = self.backoff(request, response)
        self.crawler.stats.inc_value("ravel/retry_wait_seconds", delay)
        logger.warning(f"{RETRY} {request.url}: {reason}, retrying in {delay:.1f} s")
        await asyncio.sleep(delay)

    def declare_offline(self, request: Request, cause: str) -> None:
        """Nothing has answered and this host can't be reached: stop the crawl, one line."""
        self.offline = (
            f"cannot reach {host_of(request.url)}: {cause}. Check the network connection, "
            "or the proxy (HTTPS_PROXY, HTTP_PROXY) if you use one"
        )
        stop_crawl(self.crawler, "archive_unreachable", self.offline)
        raise HostUnreachable(self.offline)
