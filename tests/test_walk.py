"""ravelscraper.spiders.walk's ManyItems, in-process: the first requests of a crawl of many,
the item list, the checks on search pages, and an item that fails alone (the search pages
themselves are in tests/test_search.py)."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from scrapy.exceptions import CloseSpider
from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import BadInput, ItemLocation
from ravelscraper.archive.search import FoundItem, cursor_identifier, page_cursor
from ravelscraper.spiders.choice import ListingRefused
from ravelscraper.spiders.ravel import RavelSpider
from ravelscraper.spiders.walk import FAILED_ITEMS_KEPT

ORIGIN = "http://127.0.0.1:1"


def spider(**arguments: str) -> RavelSpider:
    crawler = get_crawler(RavelSpider, {"RAVEL_ORIGIN": ORIGIN, "RAVEL_SEARCH_PAGE_SIZE": 100})
    return RavelSpider.from_crawler(crawler, **arguments)


def item(identifier: str) -> ItemLocation:
    return ItemLocation.on(ORIGIN, identifier)


# --- an item that fails alone ---------------------------------------------------------------


def test_every_failed_item_is_counted_and_the_first_few_named(caplog):
    crawl = spider(items="-")
    told: list[tuple[str, str]] = []
    crawl.many.on_item_failed = lambda identifier, reason: told.append((identifier, reason))
    names = [f"item{n}" for n in range(FAILED_ITEMS_KEPT + 2)]
    with caplog.at_level(logging.ERROR):
        for name in names:
            crawl.many.item_failed(item(name), f"gone {name}")
    assert crawl.crawler.stats.get_value("ravel/items_failed") == FAILED_ITEMS_KEPT + 2
    assert crawl.failed_items == names[:FAILED_ITEMS_KEPT]  # the spider's summary list
    assert told == [(name, f"gone {name}") for name in names]  # the hook hears of each
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"[item failed] {name}: gone {name}" for name in names]


def test_the_item_failed_line_is_one_line_whatever_the_reason(caplog):
    crawl = spider(items="-")
    with caplog.at_level(logging.ERROR):
        crawl.many.item_failed(item("x"), "two\nlines\x1b[31m")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "\n" not in line and "\x1b" not in line and line.startswith("[item failed] x: ")


def test_without_the_hook_an_item_fails_all_the_same():
    crawl = spider(items="-")
    assert crawl.many.on_item_failed is None
    crawl.many.item_failed(item("x"), "gone")
    assert crawl.failed_items == ["x"]


def test_a_refused_listing_fails_an_item_of_many_and_stops_a_crawl_of_one():
    crawl = spider(items="-")
    refusal = ListingRefused("unknown_item", "unknown item 'x'")
    crawl.many.refused(item("x"), "", refusal)  # one of many: "" or a fingerprint
    crawl.many.refused(item("y"), "0123456789abcdef", refusal)
    assert crawl.failed_items == ["x", "y"]
    assert crawl.crawler.stats.get_value("ravel/error") is None
    with pytest.raises(CloseSpider):
        crawl.many.refused(item("z"), None, refusal)  # the crawl's one item
    assert "unknown item 'x'" in crawl.crawler.stats.get_value("ravel/error")
    assert crawl.failed_items == ["x", "y"]


# --- the first requests ---------------------------------------------------------------------


def test_an_item_list_gives_one_metadata_request_per_item(tmp_path: Path):
    listed = tmp_path / "items.txt"
    listed.write_text(f"b\n# a comment\na\n{ORIGIN}/details/c\nb\n")
    crawl = spider(items=str(listed), item="a")
    requests = crawl.many.first_requests()
    # The -a item= first, then the list in its order, each once.
    assert [r.url for r in requests] == [f"{ORIGIN}/metadata/{n}" for n in ("a", "b", "c")]
    assert all(r.cb_kwargs["fingerprint"] == "" for r in requests)  # one of many each
    assert crawl.crawler.stats.get_value("ravel/items_total") == 3


def test_a_search_starts_at_its_first_page_plus_the_one_item_named():
    crawl = spider(collection="c", item="a")
    first, also = crawl.many.first_requests()
    assert page_cursor(first.url) is None and first.cb_kwargs == {
        "query": "collection:c",
        "collection": "c",
    }
    assert first.callback == crawl.parse_search_page
    assert also.url == f"{ORIGIN}/metadata/a" and also.cb_kwargs["fingerprint"] == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read the item list"),
        ("", "names no item"),
        ("# only a comment\n\n", "names no item"),
    ],
)
def test_an_item_list_that_names_nothing_is_bad_input(tmp_path: Path, text, message):
    path = tmp_path / "items.txt"
    if text is not None:
        path.write_text(text)
    with pytest.raises(BadInput, match=message):  # streamed: said as the list is read
        list(spider(items=str(path)).many.first_requests())


# --- the checks on each search page -------------------------------------------------------


def found(identifier: str, *collections: str) -> FoundItem:
    return FoundItem(identifier=identifier, collections=collections)


def cursor_of(identifier: str) -> str:
    """archive.org's cursor after a page whose last item is ``identifier``."""
    return base64.b64encode(json.dumps([{"identifier": identifier}]).encode()).decode()


def test_a_page_that_goes_on_after_the_previous_one_passes():
    many = spider(collection="c").many
    cursor = cursor_of("b")
    assert cursor_identifier(cursor) == "b"
    many.check_page((found("c", "c"), found("d", "c")), cursor, cursor_of("d"), "q", "c")
    many.check_page((found("a", "other"),), None, None, "q", "")  # no collection to check


@pytest.mark.parametrize(
    ("items", "cursor", "next_cursor", "message"),
    [
        ((found("c"),), "b", "b", "returned a page again"),  # the same cursor again
        ((found("b"),), "b", None, "returned a page again"),  # not after the previous page
        ((found("a"),), "b", None, "returned a page again"),
        ((found("c", "other"),), None, None, "answered another query"),
    ],
)
def test_a_page_repeated_or_of_another_query_stops_the_crawl(items, cursor, next_cursor, message):
    crawl = spider(collection="c")
    cursor = cursor and cursor_of(cursor)
    next_cursor = next_cursor and cursor_of(next_cursor)
    with pytest.raises(CloseSpider):
        crawl.many.check_page(items, cursor, next_cursor, "collection:c", "c")
    assert message in crawl.crawler.stats.get_value("ravel/error")
