"""The spider: lists archive.org items' files and yields each as an ``AudioFile``.

One item (``-a url=``/``-a item=``), or many: a collection or a search paged through
archive.org's scrape API (``ravelscraper.search``), or an item list. With many items, a
problem with one item (unknown, no matching files, access-restricted, unlistable) fails that
item only: one ``[item failed]`` ERROR line, the stat ``ravel/items_failed``, and the crawl
goes on (it exits 1 at the end). An item the search reports unchanged since a run that
stored all its files (``ravelscraper.records``) is skipped without a request.

Owns the listing requests and their order, the callbacks that parse and yield, what is
logged and when the crawl stops, and the judging of each listed name (``ravelscraper.names``):
a file whose name can't be stored is yielded with ``error`` set, and the pipeline reports it
failed. Its ``-a`` arguments are ``ravelscraper.arguments``; the choice of files from what
archive.org answers is ``ravelscraper.choice``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any, NoReturn

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
from ravelscraper.names import NameClaims, refused_name, shown
from ravelscraper.records import ItemRecords
from ravelscraper.retry import HostUnreachable
from ravelscraper.search import (
    FoundItem,
    SearchFailed,
    cursor_identifier,
    page_cursor,
    parse_page,
    read_item_list,
    scrape_url,
)
from ravelscraper.stop import fatal

# The callbacks of the small requests that list an item (see PoliteDownloader's pace).
LISTING_CALLBACKS = frozenset(
    {"parse_details", "parse_metadata", "parse_page_links", "parse_search_page"}
)
FAILED_ITEMS_KEPT = 5  # failed items named in the summary; the stat counts them all


class RavelSpider(scrapy.Spider):
    """Finds the files of one archive.org item and hands them to FilesPipeline.

    Arguments (``-a``): ``url`` (a details page) or ``item`` (an identifier on
    ``RAVEL_ORIGIN``, by default ThePianoMusicOfMauriceRavel), or ``collection`` (an
    identifier), ``search`` (an archive.org query) or ``items`` (a file of identifiers or
    details URLs, ``-`` for standard input); ``formats`` (archive.org format names,
    comma-separated) and/or ``glob`` (file-name patterns, comma-separated) to choose other
    files than the mp3s.

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

    def __init__(
        self,
        url: str | None = None,
        item: str | None = None,
        formats: str | None = None,
        glob: str | None = None,
        collection: str | None = None,
        search: str | None = None,
        items: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**scrapyd_arguments(kwargs))
        # Checked when the crawl starts (one ERROR line, not a traceback from here).
        self.arguments = SpiderArguments.given(
            url,
            item,
            formats,
            glob,
            others=kwargs,
            collection=collection,
            search=search,
            items=items,
        )
        self.url, self.item = url, item  # Scrapy's way: the -a arguments are attributes
        self.collection, self.search, self.items = collection, search, items
        self.failed_items: list[str] = []  # the first few, for the summary
        self.records: Any = None  # ravelscraper.records.ItemRecords, for a search
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
            self.check_arguments()
            if self.arguments.many:
                requests = self.many_requests()
            else:
                requests = self.item_requests(self.location())
        except BadInput as exc:
            self.fail("bad_input", str(exc))
        for request in requests:
            yield request

    # --- many items: a search paged by its cursor, or an item list ------------------------

    def many_requests(self) -> list[scrapy.Request]:
        """The first search page, or the /metadata request of each listed item; raises
        BadInput for bad arguments or an unreadable item list."""
        query = self.arguments.query()
        if query is not None:
            self.records = ItemRecords.from_settings(self.settings)
            return [self.search_request(query, None)]
        assert self.arguments.items is not None
        items = self.item_list(self.arguments.items)
        self.crawler.stats.set_value("ravel/items_total", len(items))
        self.logger.info(f"[items] {len(items)} items in the item list")
        return [self.listed_item_request(item, "") for item in items]

    def item_list(self, path: str) -> list[ItemLocation]:
        """The items of ``-a items=<path>`` (``-`` for standard input); raises BadInput."""
        source = "standard input" if path == "-" else f"the item list {path!r}"
        origin = self.settings["RAVEL_ORIGIN"]
        try:
            stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            items = list(read_item_list(stream, origin, source))
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if not items:
            raise BadInput(f"{source} names no item (one identifier or details URL per line)")
        return items

    def search_request(self, query: str, cursor: str | None) -> scrapy.Request:
        """One page of the search: each page's answer yields the next (one at a time)."""
        size = self.settings.getint("RAVEL_SEARCH_PAGE_SIZE")
        return scrapy.Request(
            scrape_url(self.settings["RAVEL_ORIGIN"], query, size, cursor),
            callback=self.parse_search_page,
            errback=self.search_page_failed,
            cb_kwargs={"query": query, "collection": self.arguments.collection or ""},
        )

    def parse_search_page(
        self, response: Response, query: str, collection: str
    ) -> Iterator[scrapy.Request]:
        """A page of the search: its items' /metadata requests, then the next page."""
        stats = self.crawler.stats
        try:
            page = parse_page(response.body)
        except SearchFailed as exc:
            self.fail("search_failed", f"search {query!r}: {exc}")
        for warning in page.warnings:
            self.logger.warning(f"[search] {warning}")
        cursor = page_cursor(response.url)
        if cursor is None:  # the first page
            if page.total is not None:
                stats.set_value("ravel/items_total", page.total)
            if not page.items and page.cursor is None:
                hint = f"; is {collection!r} a collection?" if collection else ""
                self.fail("no_items", f"no items match the search {query!r}{hint}")
        self.check_page(page.items, cursor, page.cursor, query, collection)
        for found in page.items:
            request = self.found_item_request(found)
            if request is not None:
                yield request
        if page.cursor is not None:
            yield self.search_request(query, page.cursor)
        else:
            self.logger.info(
                f"[search] {query!r}: every page read ({stats.get_value('ravel/items_found', 0)}"
                " items found)"
            )

    def check_page(
        self,
        items: tuple[FoundItem, ...],
        cursor: str | None,
        next_cursor: str | None,
        query: str,
        collection: str,
    ) -> None:
        """Stops the crawl when archive.org answers the same page again or another query's
        items (both happened: jjjake/internetarchive#797); never mirror the wrong items."""
        previous = cursor_identifier(cursor) if cursor else None
        repeated = next_cursor is not None and next_cursor == cursor
        if repeated or (previous is not None and items and items[0].identifier <= previous):
            self.fail("search_failed", f"search {query!r}: archive.org returned a page again")
        for found in items:
            if collection and found.collections and collection not in found.collections:
                self.fail(
                    "search_failed",
                    f"search {query!r}: archive.org answered another query ({found.identifier!r}"
                    f" is not in the collection {collection!r}); nothing more is listed",
                )

    def found_item_request(self, found: FoundItem) -> scrapy.Request | None:
        """The /metadata request of an item the search found, or None when it is skipped:
        a sub-collection, or an item unchanged since a run that stored all its files."""
        stats = self.crawler.stats
        stats.inc_value("ravel/items_found")
        if found.is_collection:
            stats.inc_value("ravel/collections_skipped")
            self.logger.info(f"[item skipped] {found.identifier}: a collection, not followed")
            return None
        selection = self.selection.describe()
        fingerprint = found.fingerprint
        records = self.records
        if fingerprint and records and records.unchanged(found.identifier, fingerprint, selection):
            stats.inc_value("ravel/items_unchanged")
            self.logger.info(
                f"[item unchanged] {found.identifier}: archive.org reports no change "
                "since its files were stored and verified"
            )
            return None
        origin = self.settings["RAVEL_ORIGIN"]
        return self.listed_item_request(ItemLocation.on(origin, found.identifier), fingerprint)

    def listed_item_request(self, item: ItemLocation, fingerprint: str | None) -> scrapy.Request:
        """One item of many: its /metadata only (one request per item)."""
        request = self.metadata_request(item)
        request.cb_kwargs["fingerprint"] = fingerprint or ""
        return request

    def search_page_failed(self, failure: Failure) -> None:
        if self.stopping(failure):
            return
        query = failure.request.cb_kwargs["query"]
        self.fail(
            "search_failed",
            f"search {query!r}: {failure.request.url} failed ({failure.getErrorMessage()!r})",
        )

    def item_failed(self, item: ItemLocation, reason: str) -> None:
        """One item of many can't be listed: said once, counted, the crawl goes on."""
        self.crawler.stats.inc_value("ravel/items_failed")
        if len(self.failed_items) < FAILED_ITEMS_KEPT:
            self.failed_items.append(item.identifier)
        self.logger.error(f"[item failed] {item.identifier}: {shown(reason)}")

    def refused(self, item: ItemLocation, fingerprint: str | None, exc: ListingRefused) -> None:
        """A listing refused: the crawl's end for its one item, else that item's failure."""
        if fingerprint is None:
            self.fail(exc.reason, str(exc))
        self.item_failed(item, str(exc))

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

    def parse_page_links(
        self, response: Response, item: ItemLocation, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        """The details page fetched again because /metadata was unavailable."""
        yield from self.from_page(item, self.page_links(response, item), fingerprint)

    def page_links_failed(self, failure: Failure) -> None:
        if self.stopping(failure):
            return
        item = failure.request.cb_kwargs["item"]
        message = (
            f"cannot list the files of {item.identifier!r}: {item.metadata_url} is unavailable "
            f"and the details page failed too ({failure.getErrorMessage()!r})"
        )
        fingerprint = failure.request.cb_kwargs.get("fingerprint")
        self.refused(item, fingerprint, ListingRefused("metadata_failed", message))

    # --- /metadata: the authoritative file list ----------------------------------------

    def parse_metadata(
        self, response: Response, item: ItemLocation, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        try:
            metadata = read_metadata(item, response.body)
            for warning in metadata.warnings:
                self.logger.warning(f"[metadata] {item.identifier}: {warning}")
            chosen = choose_listed(item, metadata, self.selection)
        except ListingRefused as exc:
            self.refused(item, fingerprint, exc)
            return
        if chosen.warning:  # access-restricted files: never requested, said once
            self.logger.warning(chosen.warning)
        files = [AudioFile.listed(item, f, metadata) for f in chosen.files]
        yield from self.announce(files, verified=True, fingerprint=fingerprint)

    def metadata_failed(self, failure: Failure) -> Iterator[AudioFile | scrapy.Request]:
        """/metadata unavailable (network or HTTP failure): fall back to the page's links."""
        if self.stopping(failure):
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
            files = choose_linked(item, page_names, self.selection)
        except ListingRefused as exc:
            self.refused(item, fingerprint, exc)
            return
        listed = [AudioFile.listed(item, f) for f in files]
        yield from self.announce(listed, verified=False, fingerprint=fingerprint)

    def announce(
        self, files: list[AudioFile], verified: bool, fingerprint: str | None = None
    ) -> Iterator[AudioFile]:
        selection = self.selection.describe()
        for file in files:  # judged here, once: the pipeline fails a file with an error
            if not file.error:
                file.error = refused_name(self.name_claims, file.identifier, file.name)
            file.item_fingerprint = fingerprint or None
            file.item_files = len(files)
            file.selection = selection
        stats = self.crawler.stats
        stats.inc_value("ravel/items_listed")
        stats.inc_value("ravel/files_total", len(files))
        stats.inc_value("ravel/bytes_total", sum(f.size or 0 for f in files))
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
