"""The add-on that turns a crawl into a fleet node when ``REDIS_URL`` is set.

``scrapy crawl ravel -s REDIS_URL=redis://queue-host:6379/0`` (or the ``REDIS_URL``
environment variable) is all a node needs. Without it this add-on changes nothing and
nothing imports redis. Scrapy calls ``update_settings`` after the command line's settings
are applied, so ``-s`` works as well as ``settings.py``.
"""

from __future__ import annotations

import os
from typing import Any

from ravelscraper.distributed.connection import REDIS_PARAMS

PACKAGE = "ravelscraper.distributed"
ENTRY_SLOT = "ravel-entries"  # same as serializer.ENTRY_SLOT, without importing Scrapy bits


class Distributed:
    """``ADDONS = {"ravelscraper.distributed.addon.Distributed": 0}``."""

    def update_settings(self, settings: Any) -> None:
        url = settings.get("REDIS_URL") or os.environ.get("REDIS_URL", "")
        if not url.strip():
            return
        if not settings.get("REDIS_URL"):
            settings.set("REDIS_URL", url, priority="addon")
        for name, value in {
            "SCHEDULER": f"{PACKAGE}.scheduler.RavelScheduler",
            # Read by the scheduler, which refuses any other value: JSON, checked; never pickle.
            "SCHEDULER_SERIALIZER": f"{PACKAGE}.serializer",
            "SCHEDULER_PERSIST": True,  # a node closing must not flush the fleet's queue
            "REDIS_PARAMS": REDIS_PARAMS,
        }.items():
            settings.set(name, value, priority="addon")
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
