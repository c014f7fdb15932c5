"""A spider for the tests that a spider exception fails the run: ``ravel`` whose callback
raises for the items named in ``RAVEL_TEST_RAISE_IN`` (comma-separated identifiers).

Run it as ``scrapy crawl ravel-raising -s SPIDER_MODULES=tests.support.raising``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from scrapy.http import Response

from ravelscraper.archive.metadata import ItemLocation
from ravelscraper.items import AudioFile
from ravelscraper.spiders.ravel import RavelSpider


class RaisingSpider(RavelSpider):
    name = "ravel-raising"

    def parse_metadata(
        self, response: Response, item: ItemLocation, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        if item.identifier in os.environ.get("RAVEL_TEST_RAISE_IN", "").split(","):
            raise RuntimeError(f"a bug while listing {item.identifier}")
        yield from super().parse_metadata(response, item, fingerprint)
