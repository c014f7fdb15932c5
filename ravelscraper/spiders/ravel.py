"""The spider: lists archive.org items' files and yields each as an ``AudioFile``.

One item (``-a url=``/``-a item=``), or many: a collection or a search paged through
archive.org's scrape API, or an item list. With many items, a problem with one item
(unknown, no matching files, access-restricted, unlistable) fails that item only and the
crawl goes on (it exits 1 at the end); an item the search reports unchanged since a run that
stored all its files is skipped without a request.

Owns the requests that list one item and their order, the callbacks and errbacks (their
names are what the fleet serializes: keep them), the fallback to the details page, and when
the crawl stops. Its parts: the ``-a`` arguments are ``ravelscraper.spiders.arguments``; the walk
over many items (search pages, item lists, the unchanged skip, an item's failure) is
``ravelscraper.spiders.walk``; what one item yields (the choice of files, each name judged once,
the item's bookkeeping, the ``[item]`` line) is ``ravelscraper.spiders.listing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, NoReturn

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from ravelscraper.archive.metadata import BadInput, ItemLocation
from ravelscraper.downloader import TransferCancelled
from ravelscraper.downloadermiddlewares.retry import HostUnreachable
from ravelscraper.items import AudioFile
from ravelscraper.spiders.arguments import ARGUMENTS, SpiderArguments, scrapyd_arguments
from ravelscraper.spiders.choice import ListingRefused
from ravelscraper.spiders.listing import ItemListing
from ravelscraper.spiders.walk import ManyItems
from ravelscraper.stop import fatal

# The callbacks of the small requests that list an item (see PoliteDownloader's pace).
LISTING_CALLBACKS = frozenset(
    {"parse_details", "parse_metadata", "parse_page_links", "parse_search_page"}
)


def stopping(failure: Failure) -> bool:
    """A request dropped because the crawl is stopping: its cause is already logged."""
    return bool(failure.check(HostUnreachable, TransferCancelled))


class RavelSpider(scrapy.Spider):
    """Finds the files of archive.org items and hands them to FilesPipeline.

    Arguments (``-a``, see ``ravelscraper.spiders.arguments``): ``url`` or ``item``, or
    ``collection``, ``search`` or ``items`` (``since`` narrows a collection or a search);
    ``formats`` and/or ``glob``, then ``exclude``.

    For one item, ``/metadata`` and the details page are fetched together. ``/metadata``
    decides; the details page's links are used only when ``/metadata`` is unavailable (a
    network or HTTP failure), never when it answers something unreadable. For many items,
    only ``/metadata`` is fetched (the details page stays the fallback).

    The requests that list one item of many carry ``fingerprint`` in their ``cb_kwargs``
    (what the search said of the item, ``""`` when unknown); a request without it lists the
    crawl's one item, whose problems stop the crawl.
    """

    name = "ravel"
    listing_callbacks = LISTING_CALLBACKS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**scrapyd_arguments(kwargs))
        # Checked when the crawl starts (one ERROR line, not a traceback from here).
        self.arguments = SpiderArguments.given(kwargs)
        for name in ARGUMENTS:  # Scrapy's way: the -a arguments are attributes
            setattr(self, name, getattr(self.arguments, name))
        self.many = ManyItems(self)  # collections, searches, item lists
        self.failed_items = self.many.failed_items  # the first few, for the summary
        self.selection = self.arguments.selection
        self.page_names: dict[ItemLocation, list[str]] = {}  # details pages read on this node
        self.listing = ItemListing(self)  # what each listed item yields
        # Set by the fleet (ravelscraper.distributed): turns a file entry back into its item.
        self.file_entries: Callable[[Response], Iterator[AudioFile]] | None = None

    def check_arguments(self) -> None:
        """Raises BadInput for an unknown or an empty ``-a`` argument."""
        self.arguments.check()

    def location(self) -> ItemLocation:
        return self.arguments.location(self.settings["RAVEL_ORIGIN"])

    async def start(self) -> AsyncIterator[scrapy.Request]:
        # An item list is streamed: without a fleet (whose queue is in Redis), each request
        # waits until the engine can take it, so the scheduler never holds the whole list.
        paced = self.arguments.items is not None and not self.settings.get("REDIS_URL")
        try:
            self.check_arguments()
            if self.arguments.many:
                requests: Iterable[scrapy.Request] = self.many.first_requests()
            else:
                requests = self.item_requests(self.location())
            for request in requests:
                if paced:
                    await self.engine_ready()
                yield request
        except BadInput as exc:
            self.fail("bad_input", str(exc))

    async def engine_ready(self) -> None:
        """Wait while the engine can take no more requests (``needs_backout``, public)."""
        engine = self.crawler.engine
        while engine is not None and engine.running and engine.needs_backout():
            await asyncio.sleep(0.05)

    # --- many items: the walk is ravelscraper.spiders.walk's; the callbacks stay here -------------

    def parse_search_page(
        self, response: Response, query: str, collection: str
    ) -> Iterator[scrapy.Request]:
        """A page of the search: its items' /metadata requests, then the next page."""
        yield from self.many.search_page(response, query, collection)

    def search_page_failed(self, failure: Failure) -> None:
        if not stopping(failure):
            self.many.search_page_failed(failure)

    # --- one item ------------------------------------------------------------------------

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
        self.page_names[item] = self.listing.page_links(response, item)

    def details_failed(self, failure: Failure) -> None:
        if stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        self.page_names[item] = []
        self.logger.warning(
            f"details page {item.details_url} failed ({failure.getErrorMessage()!r}); "
            "/metadata lists the files"
        )

    def parse_page_links(
        self, response: Response, item: ItemLocation, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        """The details page fetched again because /metadata was unavailable."""
        yield from self.from_page(item, self.listing.page_links(response, item), fingerprint)

    def page_links_failed(self, failure: Failure) -> Iterator[AudioFile]:
        if stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        message = (
            f"cannot list the files of {item.identifier!r}: {item.metadata_url} is unavailable "
            f"and the details page failed too ({failure.getErrorMessage()!r})"
        )
        fingerprint = failure.request.cb_kwargs.get("fingerprint")
        yield self.many.refused(item, fingerprint, ListingRefused("metadata_failed", message))

    # --- /metadata: the authoritative file list ----------------------------------------

    def parse_metadata(
        self, response: Response, item: ItemLocation, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        try:
            files = self.listing.from_metadata(item, response.body)
        except ListingRefused as exc:
            yield self.many.refused(item, fingerprint, exc)
            return
        yield from self.announce(files, verified=True, fingerprint=fingerprint)

    def metadata_failed(self, failure: Failure) -> Iterator[AudioFile | scrapy.Request]:
        """/metadata unavailable (network or HTTP failure): fall back to the page's links."""
        if stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        fingerprint = failure.request.cb_kwargs.get("fingerprint")
        self.logger.warning(
            f"{item.metadata_url} unavailable ({failure.getErrorMessage()!r}): taking the "
            "details page's links; checksums can't be verified"
        )
        if item in self.page_names:
            yield from self.from_page(item, self.page_names[item], fingerprint)
            return
        cb_kwargs: dict[str, Any] = {"item": item}
        if fingerprint is not None:
            cb_kwargs["fingerprint"] = fingerprint
        yield scrapy.Request(  # the page was read elsewhere (a fleet), not yet, or not at all
            item.details_url,
            callback=self.parse_page_links,
            errback=self.page_links_failed,
            cb_kwargs=cb_kwargs,
            dont_filter=True,
        )

    def from_page(
        self, item: ItemLocation, page_names: list[str], fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        try:
            files = self.listing.from_page(item, page_names)
        except ListingRefused as exc:
            yield self.many.refused(item, fingerprint, exc)
            return
        yield from self.announce(files, verified=False, fingerprint=fingerprint)

    def announce(
        self, files: list[AudioFile], verified: bool, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        """Judged, stamped and counted: ``ItemListing.announce``."""
        yield from self.listing.announce(files, verified, fingerprint)

    def parse_file_entry(self, response: Response) -> Iterator[AudioFile]:
        """A file entry from the fleet's Redis queue, read and checked by the fleet's hook."""
        if self.file_entries is None:
            self.fail("not_a_fleet", "a file entry reached a crawl that is not a fleet node")
        yield from self.file_entries(response)

    def fail(self, reason: str, message: str) -> NoReturn:
        """Stop the crawl on input the user must fix: one ERROR line, a non-zero exit."""
        raise fatal(self.crawler, reason, message)
