"""What the fleet needs of its spider beyond Scrapy's ``Spider``: :class:`FleetSpider`.

``RavelSpider`` provides it. :func:`as_fleet_spider` checks a crawl's spider against it once
(:attr:`Fleet.spider <ravelscraper.distributed.fleet.Fleet.spider>`), so the fleet's modules
call these methods typed, and a spider without them is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NoReturn, Protocol, runtime_checkable

from scrapy import Request, Spider
from scrapy.http import Response

from ravelscraper.archive.metadata import ItemLocation
from ravelscraper.items import AudioFile
from ravelscraper.spiders.walk import ManyItems


@runtime_checkable
class FleetSpider(Protocol):
    def check_arguments(self) -> None:
        """Raise ``BadInput`` for spider arguments the jobs cannot use."""

    def item_requests(self, item: ItemLocation) -> list[Request]:
        """The requests that list one item's files (a start URL's job)."""

    many: ManyItems  # a search's pages (a collection's job), and the items that fail alone
    # The hook that reads a file entry (set by the fleet: ``JobListing.hook_spider``).
    file_entries: Callable[[Response], Iterator[AudioFile]] | None

    def parse_file_entry(self, response: Response) -> Iterator[AudioFile]:
        """The callback of a file entry: the file's item, rebuilt and checked."""

    def fail(self, reason: str, message: str) -> NoReturn:
        """Stop the job: one ERROR line, then ``CloseSpider(reason)``."""


def as_fleet_spider(spider: Spider | None) -> FleetSpider:
    """``spider``, checked to be a :class:`FleetSpider`; TypeError (one line) if it is not."""
    if not isinstance(spider, FleetSpider):
        raise TypeError(
            f"the fleet needs a spider with check_arguments, item_requests, many, "
            f"parse_file_entry and fail (like RavelSpider); {type(spider).__name__} has not all "
            "of them"
        )
    return spider
