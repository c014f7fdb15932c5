"""Which hosts a crawl may talk to: the one rule for file redirects (and the fleet's origins)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest


def host_patterns(value: str | Iterable[str]) -> tuple[str, ...]:
    """``RAVEL_STORAGE_HOSTS`` (comma-separated, or a list) as lower-case patterns."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(p.strip().lower() for p in items if p and p.strip())


def host_allowed(host: str | None, patterns: Iterable[str]) -> bool:
    """True if ``host`` is named by a pattern: ``name`` exactly, or ``.domain``: the domain
    itself and any of its subdomains. Host names compare case-insensitively."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("."):
            if host == pattern[1:] or host.endswith(pattern):
                return True
        elif host == pattern:
            return True
    return False


class FileRedirectGuard:
    """Downloader middleware: a file's redirect is followed only to its origin's host or to a
    storage host (``RAVEL_STORAGE_HOSTS``); elsewhere the file fails before any connection."""

    def __init__(self, storage_hosts: tuple[str, ...]):
        self.storage_hosts = storage_hosts

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(host_patterns(crawler.settings["RAVEL_STORAGE_HOSTS"]))

    def process_request(self, request: Request) -> None:
        redirects = request.meta.get("redirect_urls")
        if not redirects or "ravel_name" not in request.meta:
            return  # not a file, or not redirected
        origin = urlsplit(redirects[0]).hostname
        host = urlsplit(request.url).hostname
        if host == origin or host_allowed(host, self.storage_hosts):
            return
        allowed = ", ".join(self.storage_hosts) or "none"
        raise IgnoreRequest(
            f"refused a redirect to {host!r}: not the origin {origin!r} nor a storage host "
            f"(RAVEL_STORAGE_HOSTS: {allowed})"
        )
