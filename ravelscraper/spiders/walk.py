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

import logging
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn, Protocol

import scrapy
from scrapy.crawler import Crawler
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy.statscollectors import StatsCollector
from twisted.python.failure import Failure

from ravelscraper.archive.metadata import BadInput, ItemLocation, Selection
from ravelscraper.archive.names import shown
from ravelscraper.archive.search import (
    FoundItem,
    SearchFailed,
    cursor_identifier,
    list_lines,
    page_cursor,
    parse_page,
    query_since,
    read_item_list,
    scrape_url,
)
from ravelscraper.items import AudioFile
from ravelscraper.logtags import ITEM_FAILED, ITEM_SKIPPED, ITEM_UNCHANGED, ITEMS, SEARCH
from ravelscraper.pipelines.records import ItemRecords
from ravelscraper.spiders.arguments import SpiderArguments
from ravelscraper.spiders.choice import ListingRefused
from ravelscraper.stores import item_record_store


class WalkingSpider(Protocol):
    """What the walk over many items needs of its spider (``RavelSpider`` provides it)."""

    crawler: Crawler
    settings: BaseSettings
    arguments: SpiderArguments
    selection: Selection

    @property
    def logger(self) -> logging.LoggerAdapter: ...

    def metadata_request(self, item: ItemLocation) -> scrapy.Request: ...

    def parse_search_page(
        self, response: Response, query: str, collection: str
    ) -> Iterator[scrapy.Request]: ...

    def search_page_failed(self, failure: Failure) -> None: ...

    def fail(self, reason: str, message: str) -> NoReturn: ...


FAILED_ITEMS_KEPT = 5  # failed items named in the summary; the stat counts them all


def regular_file(path: str) -> bool:
    """Whether ``path`` is a regular file (read twice: checked, then taken), not a pipe."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # read once: its error is said then


class ManyItems:
    """The walk over the items of a collection, a search or an item list, for one spider."""

    def __init__(self, spider: WalkingSpider) -> None:
        self.spider = spider
        self.failed_items: list[str] = []  # the first few, for the summary
        self.records: Any = (
            None  # ravelscraper.pipelines.records.ItemRecords, made at the first search page
        )
        # Told of each item that fails alone (identifier, reason): the fleet's ledger.
        self.on_item_failed: Callable[[str, str], None] | None = None
        # The cursors of the search pages read on this node ("" for the first page): a page
        # asked for again is a search that loops, never a page the dupefilter drops quietly.
        self.pages_read: set[str] = set()

    @property
    def stats(self) -> StatsCollector:
        stats = self.spider.crawler.stats
        assert stats is not None
        return stats

    def origin(self) -> str:
        return str(self.spider.settings["RAVEL_ORIGIN"])

    def first_requests(self) -> Iterator[scrapy.Request]:
        """The first search page, or the /metadata request of each listed item; raises
        BadInput for bad arguments or an unreadable item list, as it is iterated.

        An item list is streamed: a file is first read through once, to check every line
        and count the items (nothing is fetched from a list with a bad line), then again
        as the crawl takes its items; standard input (or a pipe, a device) is read once, as
        the crawl goes (a bad line then stops the crawl where it is). Lines are read with a bound
        (``ravelscraper.archive.search.list_lines``).
        """
        arguments = self.spider.arguments
        query = arguments.query()
        # -a url= or -a item= too: that item is one of the many (it fails alone).
        also = [arguments.location(self.origin())] if arguments.one_item else []
        if query is not None:
            first = self.search_request(query, None, arguments.collection or "")
            yield first
            yield from (self.listed_item_request(item, "") for item in also)
            return
        assert arguments.items is not None
        path = arguments.items
        once = path == "-" or not regular_file(path)  # stdin, a pipe: read once
        if not once:
            listed = extra = 0
            for item in self.item_list(path):
                listed += 1
                extra += item not in also
            if not listed:
                raise BadInput(self.no_item(path))
            self.stats.set_value("ravel/items_total", len(also) + extra)
            self.spider.logger.info(f"{ITEMS} {len(also) + extra} items in the item list")
        yield from (self.listed_item_request(item, "") for item in also)
        listed = extra = 0
        for item in self.item_list(path):
            listed += 1
            if item not in also:
                extra += 1
                yield self.listed_item_request(item, "")
        if once:
            if not listed:
                raise BadInput(self.no_item(path))
            self.stats.set_value("ravel/items_total", len(also) + extra)
            source = "standard input" if path == "-" else "the item list"
            self.spider.logger.info(f"{ITEMS} {len(also) + extra} items read from {source}")
        elif len(also) + extra != self.stats.get_value("ravel/items_total"):
            raise BadInput(f"the item list {path!r} changed while the crawl read it")

    def no_item(self, path: str) -> str:
        source = "standard input" if path == "-" else f"the item list {path!r}"
        return f"{source} names no item (one identifier or details URL per line)"

    def item_list(self, path: str) -> Iterator[ItemLocation]:
        """The items of ``-a items=<path>`` (``-`` for standard input), read as they are
        iterated; raises BadInput."""
        source = "standard input" if path == "-" else f"the item list {path!r}"
        try:
            stream: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
        try:
            yield from read_item_list(list_lines(stream, source), self.origin(), source)
        except OSError as exc:
            raise BadInput(f"cannot read {source}: {exc.strerror or exc}") from None
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    # --- the search, one page at a time ----------------------------------------------------

    def search_request(self, query: str, cursor: str | None, collection: str) -> scrapy.Request:
        """One page of the search (``collection``: the identifier of ``-a collection=``, else
        ""): each page's answer yields the next (one at a time)."""
        size = self.spider.settings.getint("RAVEL_SEARCH_PAGE_SIZE")
        # A next page asked for again must reach check_page (and fail the crawl), not be
        # dropped by the dupefilter as if the search had ended. The first page stays
        # filtered: fleet nodes given the same search page it once.
        return scrapy.Request(
            scrape_url(self.origin(), query, size, cursor),
            callback=self.spider.parse_search_page,
            errback=self.spider.search_page_failed,
            cb_kwargs={"query": query, "collection": collection.strip()},
            dont_filter=cursor is not None,
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
            self.spider.logger.warning(f"{SEARCH} {warning}")
        cursor = page_cursor(response.url)
        if cursor is None:  # the first page
            if page.total is not None:
                self.stats.set_value("ravel/items_total", page.total)
            if not page.items and page.cursor is None:
                since = query_since(query)
                if since is not None:  # a nightly -a since= run: nothing changed is normal
                    self.spider.logger.info(
                        f"{SEARCH} {query!r}: no item was updated since {since}"
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
                f"{SEARCH} {query!r}: every page read ({found_count} items found)"
            )
            self.check_total(query, found_count)

    def check_total(self, query: str, found: int) -> None:
        """At the end of the search: one WARNING if it gave fewer items than archive.org
        announced on its first page (its index moved while it was paged, or it dropped
        hits). A fleet node saw only its own pages' items: not checked there."""
        total = self.stats.get_value("ravel/items_total")
        if total is None or found >= total or self.spider.settings.get("REDIS_URL"):
            return
        self.spider.logger.warning(
            f"{SEARCH} {query!r}: archive.org announced {total} items but the search gave "
            f"{found}; the {total - found} others were not listed"
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
        items (both happened: jjjake/internetarchive#797); never mirror the wrong items.

        A page is repeated when its items or its next cursor go back (cursors name the last
        identifier of their page, and the pages come in identifier order: this holds on
        every node of a fleet), or when its cursor or its next one was read on this node.
        """
        previous = cursor_identifier(cursor) if cursor else None
        following = cursor_identifier(next_cursor) if next_cursor else None
        read = self.pages_read
        repeated = (
            (cursor or "") in read
            or (next_cursor is not None and (next_cursor == cursor or next_cursor in read))
            or (previous is not None and items and items[0].identifier <= previous)
            or (previous is not None and following is not None and following <= previous)
        )
        if repeated:
            self.spider.fail(
                "search_failed",
                f"search {query!r}: archive.org repeated a page of the search (it returned a "
                "page again); the search was not read to its end",
            )
        read.add(cursor or "")
        for found in items:
            if collection and not found.collections:
                # Asked for, never missing on archive.org: an answer that doesn't say the
                # item is in the collection is not trusted with it (nor the rest of it).
                self.spider.fail(
                    "search_failed",
                    f"search {query!r}: archive.org's answer does not say which collection "
                    f"{found.identifier!r} is in, so it can't be told to be in {collection!r}; "
                    "nothing more is listed",
                )
            if collection and collection not in found.collections:
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
            logger.info(f"{ITEM_SKIPPED} {found.identifier}: a collection, not followed")
            return None
        selection = self.spider.selection.describe()
        fingerprint = found.fingerprint
        if self.records is None:  # on a fleet node too, whoever started the search
            self.records = ItemRecords.from_settings(
                self.spider.settings, make_store=item_record_store
            )
        records = self.records
        if fingerprint and records.unchanged(found.identifier, fingerprint, selection):
            stats.inc_value("ravel/items_unchanged")
            logger.info(
                f"{ITEM_UNCHANGED} {found.identifier}: archive.org reports no change "
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
        self.spider.logger.error(f"{ITEM_FAILED} {item.identifier}: {shown(reason)}")
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
