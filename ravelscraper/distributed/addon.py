"""The add-on that turns a crawl into a fleet node when ``REDIS_URL`` is set.

``scrapy crawl ravel -s REDIS_URL=redis://queue-host:6379/0`` (or the ``REDIS_URL``
environment variable) is all a node needs. Without it this add-on changes nothing and
nothing imports redis. Scrapy calls ``update_settings`` after the command line's settings
are applied, so ``-s`` works as well as ``settings.py``.

``SCHEDULER_PERSIST``, ``SCHEDULER_FLUSH_ON_START`` and ``SCHEDULER_SERIALIZER`` are not set
here: the fleet's scheduler always persists and always uses its checked JSON, and warns only
when the user set one of them to something else.
"""

from __future__ import annotations

from typing import Any

from ravelscraper.distributed.connection import ENTRY_SLOT, REDIS_PARAMS, redis_url

PACKAGE = "ravelscraper.distributed"


class Distributed:
    """``ADDONS = {"ravelscraper.distributed.addon.Distributed": 0}``."""

    def update_settings(self, settings: Any) -> None:
        url = redis_url(settings)
        if not url.strip():
            return
        if not settings.get("REDIS_URL"):
            settings.set("REDIS_URL", url, priority="addon")
        settings.set("SCHEDULER", f"{PACKAGE}.scheduler.RavelScheduler", priority="addon")
        settings.set("REDIS_PARAMS", REDIS_PARAMS, priority="addon")
        self.add_component(settings, "SPIDER_MIDDLEWARES", f"{PACKAGE}.entries.FileEntries", 10)
        self.add_component(settings, "EXTENSIONS", f"{PACKAGE}.extension.FleetCoordinator", 600)
        if settings.getint("RAVEL_FLEET_MAX_TRANSFERS") > 0:
            self.add_component(
                settings, "DOWNLOADER_MIDDLEWARES", f"{PACKAGE}.fleetcap.FleetTransferCap", 950
            )
        slots = dict(settings.getdict("DOWNLOAD_SLOTS"))
        # File entries are data: URLs: no delay, and as many at once as the node leases.
        slots.setdefault(ENTRY_SLOT, {"concurrency": 64, "delay": 0})
        settings.set("DOWNLOAD_SLOTS", slots, priority=settings.getpriority("DOWNLOAD_SLOTS") or 0)

    @staticmethod
    def add_component(settings: Any, name: str, path: str, order: int) -> None:
        components = dict(settings.getdict(name))
        components.setdefault(path, order)
        settings.set(name, components, priority=settings.getpriority(name) or 0)
