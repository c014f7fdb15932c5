"""The many-items walk: which items a crawl of many lists, and what it does when one fails.

Owns, for ``-a collection=``, ``-a search=`` and ``-a items=``: the search paged one page at
a time by its cursor (the scrape API, ``ravelscraper.archive.search``) and the checks that it is
the search asked for; the item list read from a file or standard input; the skip of an item
the search reports unchanged since a run that stored all its files
(``ravelscraper.pipelines.records``); and the bookkeeping of an item that fails alone (one
``[item failed]`` ERROR line, ``ravel/items_failed``, the first few named for the summary).

The spider keeps the callbacks (their names are what the fleet serializes) and delegates
here; every request this module builds is the spider's, with the spider's callbacks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, NoReturn

import scrapy
from scrapy.http import Response
from scrapy.statscollectors import StatsCollector
from twisted.python.failure import Failure

from ravelscraper.archive.metadata import BadInput, ItemLocation
from ravelscraper.archive.names import shown
from ravelscraper.archive.search import (
    FoundItem,
    SearchFailed,
    cursor_identifier,
    page_cursor,
    parse_page,
    query_since,
    read_item_list,
    scrape_url,
)
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.records import ItemRecords
from ravelscraper.spiders.choice import ListingRefused

if TYPE_CHECKING:
    from ravelscraper.spiders.ravel import RavelSpider

FAILED_ITEMS_KEPT = 5  # failed items named in the summary; the stat counts them all


class ManyItems:
    """The walk over the items of a collection, a search or an item list, for one spider."""

    def __init__(self, spider: RavelSpider) -> None:
        self.spider = spider
        self.failed_items: list[str] = []  # the first few, for the summary
        self.records: Any = (
            None  # ravelscraper.pipelines.records.ItemRecords, made at the first search page
        )
        # Told of each item that fails alone (identifier, reason): the fleet's ledger.
        self.on_item_failed: Callable[[str, str], None] | None = None

    @property
    def stats(self) -> StatsCollector:
        stats = self.spider.crawler.stats
        assert stats is not None
        return stats

    def origin(self) -> str:
        return str(self.spider.settings["RAVEL_ORIGIN"])

    def first_requests(self) -> list[scrapy.Request]:
        """The first search page, or the /metadata request of each listed item; raises
        BadInput for bad arguments or an unreadable item list."""
        arguments = self.spider.arguments
        query = arguments.query()
        # -a url= or -a item= too: that item is one of the many (it fails alone).
        also = [arguments.location(self.origin())] if arguments.one_item else []
        if query is not None:
            first = self.search_request(query, None, arguments.collection or "")
            return [first, *(self.listed_item_request(item, "") for item in also)]
        assert arguments.items is not None
        items = also + [i for i in self.item_list(arguments.items) if i not in also]
        self.stats.set_value("ravel/items_total", len(items))
        self.spider.logger.info(f"[items] {len(items)} items in the item list")
        return [self.listed_item_request(item, "") for item in items]

    def item_list(self, path: str) -> list[ItemLocation]:
        """The items of ``-a items=<path>`` (``-`` for standard input); raises BadInput."""
        source = "standard input" if path == "-" else f"the item list {path!r}"
        try:
            stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            items = list(read_item_list(stream, self.origin(), source))
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if not items:
            raise BadInput(f"{source} names no item (one identifier or details URL per line)")
        return items

    # --- the search, one page at a time ----------------------------------------------------

    def search_request(self, query: str, cursor: str | None, collection: str) -> scrapy.Request:
        """One page of the search (``collection``: the identifier of ``-a collection=``, else
        ""): each page's answer yields the next (one at a time)."""
        size = self.spider.settings.getint("RAVEL_SEARCH_PAGE_SIZE")
        return scrapy.Request(
            scrape_url(self.origin(), query, size, cursor),
            callback=self.spider.parse_search_page,
            errback=self.spider.search_page_failed,
            cb_kwargs={"query": query, "collection": collection.strip()},
        )

    def search_page(
        self, response: Response, query: str, collection: str
    ) -> Iterator[scrapy.Request]:
        """A page of the search: its items' /metadata requests, then the next page."""
        fail = self.spider.fail
        try:
            page = parse_page(response.body)
        except SearchFailed as exc:
            fail("search_failed", f"search {query!r}: {exc}")
        for warning in page.warnings:
            self.spider.logger.warning(f"[search] {warning}")
        cursor = page_cursor(response.url)
        if cursor is None:  # the first page
            if page.total is not None:
                self.stats.set_value("ravel/items_total", page.total)
            if not page.items and page.cursor is None:
                since = query_since(query)
                if since is not None:  # a nightly -a since= run: nothing changed is normal
                    self.spider.logger.info(
                        f"[search] {query!r}: no item was updated since {since}"
                    )
                    return
                hint = f"; is {collection!r} a collection?" if collection else ""
                fail("no_items", f"no items match the search {query!r}{hint}")
        self.check_page(page.items, cursor, page.cursor, query, collection)
        for found in page.items:
            request = self.found_item_request(found)
            if request is not None:
                yield request
        if page.cursor is not None:
            yield self.search_request(query, page.cursor, collection)
        else:
            found_count = self.stats.get_value("ravel/items_found", 0)
            self.spider.logger.info(
                f"[search] {query!r}: every page read ({found_count} items found)"
            )

    def search_page_failed(self, failure: Failure) -> NoReturn:
        """A search page that could not be fetched stops the crawl: the walk can't go on."""
        query = failure.request.cb_kwargs["query"]
        self.spider.fail(
            "search_failed",
            f"search {query!r}: {failure.request.url} failed ({failure.getErrorMessage()!r})",
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
            self.spider.fail(
                "search_failed", f"search {query!r}: archive.org returned a page again"
            )
        for found in items:
            if collection and found.collections and collection not in found.collections:
                self.spider.fail(
                    "search_failed",
                    f"search {query!r}: archive.org answered another query ({found.identifier!r}"
                    f" is not in the collection {collection!r}); nothing more is listed",
                )

    def found_item_request(self, found: FoundItem) -> scrapy.Request | None:
        """The /metadata request of an item the search found, or None when it is skipped:
        a sub-collection, or an item unchanged since a run that stored all its files."""
        stats, logger = self.stats, self.spider.logger
        stats.inc_value("ravel/items_found")
        if found.is_collection:
            stats.inc_value("ravel/collections_skipped")
            logger.info(f"[item skipped] {found.identifier}: a collection, not followed")
            return None
        selection = self.spider.selection.describe()
        fingerprint = found.fingerprint
        if self.records is None:  # on a fleet node too, whoever started the search
            self.records = ItemRecords.from_settings(self.spider.settings)
        records = self.records
        if fingerprint and records.unchanged(found.identifier, fingerprint, selection):
            stats.inc_value("ravel/items_unchanged")
            logger.info(
                f"[item unchanged] {found.identifier}: archive.org reports no change "
                "since its files were stored and verified"
            )
            return None
        item = ItemLocation.on(self.origin(), found.identifier)
        return self.listed_item_request(item, fingerprint)

    def listed_item_request(self, item: ItemLocation, fingerprint: str | None) -> scrapy.Request:
        """One item of many: its /metadata only (one request per item)."""
        request = self.spider.metadata_request(item)
        request.cb_kwargs["fingerprint"] = fingerprint or ""
        return request

    # --- an item that fails alone ----------------------------------------------------------

    def item_failed(self, item: ItemLocation, reason: str) -> AudioFile:
        """One item of many can't be listed: said once, counted, the crawl goes on; the
        returned row (the spider yields it) puts the item and the reason in the manifest."""
        self.stats.inc_value("ravel/items_failed")
        if len(self.failed_items) < FAILED_ITEMS_KEPT:
            self.failed_items.append(item.identifier)
        self.spider.logger.error(f"[item failed] {item.identifier}: {shown(reason)}")
        if self.on_item_failed is not None:
            self.on_item_failed(item.identifier, reason)
        return AudioFile.item_failed(item, reason)

    def refused(
        self, item: ItemLocation, fingerprint: str | None, exc: ListingRefused
    ) -> AudioFile:
        """A listing refused: the crawl's end for its one item (a request without
        ``fingerprint``), else that item's failure, whose manifest row is returned."""
        if fingerprint is None:
            self.spider.fail(exc.reason, str(exc))
        return self.item_failed(item, str(exc))
