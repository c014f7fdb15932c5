"""The dry run's summary (``-s RAVEL_DRY_RUN=1``): what a real run would download.

Owns :class:`DryRunPlan`, an extension that is on only in a dry run. It reads each file as
the files pipeline leaves it (status ``planned`` or ``uptodate`` in its ``files``, or an
``error``) and logs, when the crawl closes, one ``[dry run]`` line per item with something to
download (the first ``SHOWN_ITEMS``, then "and K more items") and a total: files, bytes and
items to download, files up to date, and that nothing was downloaded. The pipeline decides
each file's status; this extension only sums them up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Self

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

from ravelscraper.archive.names import shown
from ravelscraper.extensions.progress import size_text
from ravelscraper.items import AudioFile
from ravelscraper.logtags import DRY_RUN

logger = logging.getLogger(__name__)

SHOWN_ITEMS = 20  # items listed one per line; the others are counted


@dataclass
class ItemPlan:
    """What a real run would do with one item's files (or, as ``total``, all items')."""

    files: int = 0  # to download
    size: int = 0  # bytes to download (as listed)
    uptodate: int = 0
    failed: int = 0
    seen: int = 0  # files of the item through the pipeline

    def fold(self, other: ItemPlan) -> None:
        self.files += other.files
        self.size += other.size
        self.uptodate += other.uptodate
        self.failed += other.failed


class DryRunPlan:
    """Sums up a dry run per item and in total (see the module's docstring).

    Memory stays flat in the number of items: an item is kept only while its files come
    through the pipeline, then folded into the totals (and kept for the summary if it is one
    of the first ``SHOWN_ITEMS`` with something to download).
    """

    def __init__(self) -> None:
        self.open: dict[str, ItemPlan] = {}  # items whose files are still coming
        self.shown: list[tuple[str, ItemPlan]] = []
        self.total = ItemPlan()
        self.items = 0
        self.items_to_fetch = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("RAVEL_DRY_RUN"):
            raise NotConfigured  # silently: with a message, Scrapy logs a WARNING
        plan = cls()
        crawler.signals.connect(plan.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(plan.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(plan.spider_closed, signal=signals.spider_closed)
        return plan

    def spider_opened(self, spider: Spider) -> None:
        logger.info(f"{DRY_RUN} listing only: nothing will be downloaded or stored")

    def item_scraped(self, item: Any, **kwargs: Any) -> None:
        if not isinstance(item, AudioFile) or item.failed_item:
            return
        self.add(item)

    def add(self, item: AudioFile) -> None:
        plan = self.open.setdefault(item.identifier, ItemPlan())
        statuses = {f.get("status") for f in item.files}
        if "planned" in statuses:
            plan.files += 1
            plan.size += item.size or 0
        elif "uptodate" in statuses:
            plan.uptodate += 1
        else:
            plan.failed += 1
        plan.seen += 1
        if 0 < item.item_files <= plan.seen:  # all its files seen (0: not known)
            self.close_item(item.identifier)

    def close_item(self, identifier: str) -> None:
        plan = self.open.pop(identifier)
        self.total.fold(plan)
        self.items += 1
        if plan.files:
            self.items_to_fetch += 1
            if len(self.shown) < SHOWN_ITEMS:
                self.shown.append((identifier, plan))

    def lines(self) -> list[str]:
        """The summary, one string per log line."""
        for identifier in list(self.open):  # items whose files did not all come through
            self.close_item(identifier)
        lines = [
            f"{DRY_RUN} {shown(identifier)}: {plan.files} files to download "
            f"({size_text(plan.size)}), {plan.uptodate} up to date"
            + (f", {plan.failed} failed" if plan.failed else "")
            for identifier, plan in self.shown
        ]
        if self.items_to_fetch > len(self.shown):
            lines.append(
                f"{DRY_RUN} and {self.items_to_fetch - len(self.shown)} more items to download"
            )
        total = self.total
        lines.append(
            f"{DRY_RUN} total: {total.files} files to download ({size_text(total.size)}) from "
            f"{self.items_to_fetch} of {self.items} items, {total.uptodate} files up to date"
            + (f", {total.failed} failed" if total.failed else "")
        )
        lines.append(f"{DRY_RUN} nothing was downloaded")
        return lines

    def spider_closed(self, spider: Spider, reason: str) -> None:
        for line in self.lines():
            logger.info(line)
