"""The origins a crawl may fetch from: where a queue entry or a pushed start URL may point.

An entry comes from a Redis others may write to, so a node fetches only from its own origins
(``RAVEL_ORIGIN``, ``-a url``, ``RAVEL_ALLOWED_ORIGINS``) and their subdomains, on the same port.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from scrapy import Spider

from ravelscraper.downloadermiddlewares.hosts import host_allowed


class AllowedOrigins:
    """The hosts this crawl may fetch: its origins (``RAVEL_ORIGIN``, ``-a url``, extras) and
    their subdomains, on the same port."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.allowed: set[tuple[str, int]] = set()
        for origin in origins:
            if origin:
                self.add(origin)

    def add(self, origin: str) -> None:
        host_port = _host_port(origin)
        if host_port:
            self.allowed.add(host_port)

    def __contains__(self, url: str) -> bool:
        host_port = _host_port(url)
        if host_port is None:
            return False
        host, port = host_port
        # The storage hosts' rule (hosts.py): ".h" is h and its subdomains.
        return any(port == p and host_allowed(host, ("." + h,)) for h, p in self.allowed)

    @classmethod
    def for_spider(cls, spider: Spider) -> AllowedOrigins:
        """``RAVEL_ORIGIN``, the origin of ``-a url`` and ``RAVEL_ALLOWED_ORIGINS``."""
        settings = spider.settings
        extra = settings.getlist("RAVEL_ALLOWED_ORIGINS")
        return cls([settings["RAVEL_ORIGIN"], getattr(spider, "url", None) or "", *extra])

    def describe(self) -> str:
        return ", ".join(sorted(f"{h}:{p}" for h, p in self.allowed)) or "none"


def _host_port(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)
