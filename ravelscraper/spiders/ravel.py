"""The spider: lists one archive.org item's files and yields each as an ``AudioFile``.

Owns the listing requests and their order, the callbacks that parse and yield, what is
logged and when the crawl stops, and the judging of each listed name (``ravelscraper.names``):
a file whose name can't be stored is yielded with ``error`` set, and the pipeline reports it
failed. Its ``-a`` arguments are ``ravelscraper.arguments``; the choice of files from what
archive.org answers is ``ravelscraper.choice``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from ravelscraper.archive import BadInput, ItemLocation
from ravelscraper.arguments import SpiderArguments, scrapyd_arguments
from ravelscraper.choice import (
    ListingRefused,
    choose_linked,
    choose_listed,
    linked_names,
    read_metadata,
)
from ravelscraper.distributed.entries import file_entry_items
from ravelscraper.downloader import TransferCancelled
from ravelscraper.items import AudioFile
from ravelscraper.names import NameClaims, refused_name
from ravelscraper.retry import HostUnreachable
from ravelscraper.stop import fatal

# The callbacks of the small requests that list an item (see PoliteDownloader's pace).
LISTING_CALLBACKS = frozenset({"parse_details", "parse_metadata", "parse_page_links"})


class RavelSpider(scrapy.Spider):
    """Finds the files of one archive.org item and hands them to FilesPipeline.

    Arguments (``-a``): ``url`` (a details page) or ``item`` (an identifier on
    ``RAVEL_ORIGIN``, by default ThePianoMusicOfMauriceRavel);
    ``formats`` (archive.org format names, comma-separated) and/or ``glob``
    (file-name patterns, comma-separated) to choose other files than the mp3s.

    ``/metadata`` and the details page are fetched together. ``/metadata`` decides; the
    details page's links are used only when ``/metadata`` is unavailable (a network or HTTP
    failure), never when it answers something unreadable.
    """

    name = "ravel"
    listing_callbacks = LISTING_CALLBACKS

    def __init__(
        self,
        url: str | None = None,
        item: str | None = None,
        formats: str | None = None,
        glob: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**scrapyd_arguments(kwargs))
        # Checked when the crawl starts (one ERROR line, not a traceback from here).
        self.arguments = SpiderArguments.given(url, item, formats, glob, others=kwargs)
        self.url, self.item = url, item  # Scrapy's way: the -a arguments are attributes
        self.selection = self.arguments.selection
        self.page_names: dict[ItemLocation, list[str]] = {}  # details pages read on this node
        self.name_claims = NameClaims()  # the paths of the files listed in this crawl

    def check_arguments(self) -> None:
        """Raises BadInput for an unknown or an empty ``-a`` argument."""
        self.arguments.check()

    def location(self) -> ItemLocation:
        return self.arguments.location(self.settings["RAVEL_ORIGIN"])

    async def start(self) -> AsyncIterator[scrapy.Request]:
        try:
            item = self.location()
        except BadInput as exc:
            self.fail("bad_input", str(exc))
        for request in self.item_requests(item):
            yield request

    def item_requests(self, item: ItemLocation) -> list[scrapy.Request]:
        """The requests that list one item's files; the fleet queues the same ones.

        ``/metadata`` and the details page are fetched concurrently, ``/metadata`` first.
        """
        return [self.metadata_request(item), self.details_request(item)]

    def metadata_request(self, item: ItemLocation) -> scrapy.Request:
        return scrapy.Request(
            item.metadata_url,
            callback=self.parse_metadata,
            errback=self.metadata_failed,
            cb_kwargs={"item": item},
            priority=1,
        )

    def details_request(self, item: ItemLocation) -> scrapy.Request:
        return scrapy.Request(
            item.details_url,
            callback=self.parse_details,
            errback=self.details_failed,
            cb_kwargs={"item": item},
        )

    # --- the details page: a courtesy, and the fallback when /metadata is unavailable ---

    def parse_details(self, response: Response, item: ItemLocation) -> None:
        self.page_names[item] = self.page_links(response, item)

    def details_failed(self, failure: Failure) -> None:
        if self.stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        self.page_names[item] = []
        self.logger.warning(
            f"details page {item.details_url} failed ({failure.getErrorMessage()!r}); "
            "/metadata lists the files"
        )

    def page_links(self, response: Response, item: ItemLocation) -> list[str]:
        """The file names a details page links; a page that can't be read links none."""
        try:
            return linked_names(response, item)
        except BadInput as exc:
            self.logger.warning(str(exc))
            return []

    def parse_page_links(self, response: Response, item: ItemLocation) -> Iterator[AudioFile]:
        """The details page fetched again because /metadata was unavailable."""
        yield from self.from_page(item, self.page_links(response, item))

    def page_links_failed(self, failure: Failure) -> None:
        if self.stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        self.fail(
            "metadata_failed",
            f"cannot list the files of {item.identifier!r}: {item.metadata_url} is unavailable "
            f"and the details page failed too ({failure.getErrorMessage()!r})",
        )

    # --- /metadata: the authoritative file list ----------------------------------------

    def parse_metadata(self, response: Response, item: ItemLocation) -> Iterator[AudioFile]:
        try:
            metadata = read_metadata(item, response.body)
            for warning in metadata.warnings:
                self.logger.warning(f"[metadata] {item.identifier}: {warning}")
            chosen = choose_listed(item, metadata, self.selection)
        except ListingRefused as exc:
            self.fail(exc.reason, str(exc))
        if chosen.warning:  # access-restricted files: never requested, said once
            self.logger.warning(chosen.warning)
        files = [AudioFile.listed(item, f, metadata) for f in chosen.files]
        yield from self.announce(files, verified=True)

    def metadata_failed(self, failure: Failure) -> Iterator[AudioFile | scrapy.Request]:
        """/metadata unavailable (network or HTTP failure): fall back to the page's links."""
        if self.stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        self.logger.warning(
            f"{item.metadata_url} unavailable ({failure.getErrorMessage()!r}): taking the "
            "details page's links; checksums can't be verified"
        )
        if item in self.page_names:
            yield from self.from_page(item, self.page_names[item])
            return
        yield scrapy.Request(  # the page was read elsewhere (a fleet) or not yet
            item.details_url,
            callback=self.parse_page_links,
            errback=self.page_links_failed,
            cb_kwargs={"item": item},
            dont_filter=True,
        )

    def from_page(self, item: ItemLocation, page_names: list[str]) -> Iterator[AudioFile]:
        try:
            files = choose_linked(item, page_names, self.selection)
        except ListingRefused as exc:
            self.fail(exc.reason, str(exc))
        yield from self.announce([AudioFile.listed(item, f) for f in files], verified=False)

    def announce(self, files: list[AudioFile], verified: bool) -> Iterator[AudioFile]:
        for file in files:  # judged here, once: the pipeline fails a file with an error
            if not file.error:
                file.error = refused_name(self.name_claims, file.identifier, file.name)
        stats = self.crawler.stats
        stats.set_value("ravel/files_total", len(files))
        stats.set_value("ravel/bytes_total", sum(f.size or 0 for f in files))
        self.logger.info(
            f"[item] {files[0].identifier}: {len(files)} files"
            + ("" if verified else " (no checksums)")
        )
        yield from files

    def parse_file_entry(self, response: Response) -> Iterator[AudioFile]:
        """A file entry from the fleet's Redis queue (see ravelscraper.distributed), checked."""
        yield from file_entry_items(response, self)

    @staticmethod
    def stopping(failure: Failure) -> bool:
        """A request dropped because the crawl is stopping: its cause is already logged."""
        return bool(failure.check(HostUnreachable, TransferCancelled))

    def fail(self, reason: str, message: str) -> NoReturn:
        """Stop the crawl on input the user must fix: one ERROR line, a non-zero exit."""
        raise fatal(self.crawler, reason, message)
