"""The files one item yields: from an archive.org answer to judged, stamped ``AudioFile``s.

Owns, for one spider: turning a ``/metadata`` answer or a details page's links into the
chosen files (``ravelscraper.spiders.choice``) with their warnings logged; judging each name
once, where it enters (``ravelscraper.archive.names``: a name that can't be stored gets
``error`` set, and the pipeline reports it failed); stamping each file with its item's
bookkeeping (``item_fingerprint``, ``item_files``, ``selection``, read by
``ravelscraper.pipelines.records``); and
the ``[item]`` line and the ``ravel/items_listed``, ``files_total``, ``bytes_total`` stats.

A listing that yields nothing raises ``ListingRefused``; the spider decides whether that
stops the crawl (its one item) or fails the item alone (one of many).
"""

from __future__ import annotations

import logging
from typing import Protocol

from scrapy.crawler import Crawler
from scrapy.http import Response

from ravelscraper.archive.metadata import BadInput, ItemLocation, Selection
from ravelscraper.archive.names import NameClaims, refused_name
from ravelscraper.items import AudioFile
from ravelscraper.logtags import ITEM, METADATA
from ravelscraper.spiders.choice import choose_linked, choose_listed, linked_names, read_metadata


class ListingSpider(Protocol):
    """What an item's listing needs of its spider (``RavelSpider`` provides it)."""

    crawler: Crawler
    selection: Selection

    @property
    def logger(self) -> logging.LoggerAdapter: ...


class ItemListing:
    """What the spider yields of each item it lists."""

    def __init__(self, spider: ListingSpider) -> None:
        self.spider = spider
        self.name_claims = NameClaims()  # the paths of the files listed in this crawl

    def from_metadata(self, item: ItemLocation, body: bytes) -> list[AudioFile]:
        """The chosen files of a ``/metadata`` answer; raises ListingRefused."""
        logger = self.spider.logger
        metadata = read_metadata(item, body)
        for warning in metadata.warnings:
            logger.warning(f"{METADATA} {item.identifier}: {warning}")
        chosen = choose_listed(item, metadata, self.spider.selection)
        if chosen.warning:  # access-restricted files: never requested, said once
            logger.warning(chosen.warning)
        return [AudioFile.listed(item, f, metadata) for f in chosen.files]

    def from_page(self, item: ItemLocation, page_names: list[str]) -> list[AudioFile]:
        """The chosen files among a details page's links; raises ListingRefused."""
        files = choose_linked(item, page_names, self.spider.selection)
        return [AudioFile.listed(item, f) for f in files]

    def page_links(self, response: Response, item: ItemLocation) -> list[str]:
        """The file names a details page links; a page that can't be read links none."""
        try:
            return linked_names(response, item)
        except BadInput as exc:
            self.spider.logger.warning(str(exc))
            return []

    def announce(
        self, files: list[AudioFile], verified: bool, fingerprint: str | None = None
    ) -> list[AudioFile]:
        """The files, judged and stamped with their item's bookkeeping, counted and said."""
        selection = self.spider.selection.describe()
        for file in files:  # judged here, once: the pipeline fails a file with an error
            if not file.error:
                file.error = refused_name(self.name_claims, file.identifier, file.name)
            file.item_fingerprint = fingerprint or None
            file.item_files = len(files)
            file.selection = selection
        stats = self.spider.crawler.stats
        assert stats is not None
        stats.inc_value("ravel/items_listed")
        stats.inc_value("ravel/files_total", len(files))
        stats.inc_value("ravel/bytes_total", sum(f.size or 0 for f in files))
        self.spider.logger.info(
            f"{ITEM} {files[0].identifier}: {len(files)} files"
            + ("" if verified else " (no checksums)")
        )
        return files
