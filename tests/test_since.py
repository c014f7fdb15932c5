"""``-a since=<YYYY-MM-DD>``: a collection's or a search's items that archive.org changed since
that date, through the scrape API's query (``oai_updatedate:[<date> TO null]``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import pytest

from ravelscraper.archive.metadata import BadInput
from ravelscraper.archive.search import check_since, query_since, since_query
from ravelscraper.spiders.arguments import SpiderArguments
from tests.fakearchive import FakeArchive
from tests.fakearchive.collections import Catalog, parse_query, scrape
from tests.support.catalog import catalog_fixtures
from tests.support.crawl import FAST_LISTING, scrapy_crawl, stored_files

# Items 2 and 4 of "upd" were changed 30 days after the others (2022-04-15 + 30 days).
CONFIG = {
    "collections": {
        "upd": {"items": 4, "files": 1, "size": 1500, "change_every": 2, "revision": 30},
    }
}


def test_since_narrows_the_query_with_an_open_ended_oai_updatedate_range():
    assert since_query("collection:upd", "2024-01-31") == (
        "(collection:upd) AND oai_updatedate:[2024-01-31 TO null]"
    )
    assert query_since(since_query('a:"b" AND c:d', "2024-01-31")) == "2024-01-31"
    assert query_since("collection:upd") is None
    args = SpiderArguments.given({"search": "creator:Ravel", "since": " 2024-01-31 "})
    assert args.query() == "(creator:Ravel) AND oai_updatedate:[2024-01-31 TO null]"
    assert SpiderArguments.given({"collection": "upd"}).query() == "collection:upd"


@pytest.mark.parametrize("bad", ["2024-13-01", "2024-02-30", "24-01-01", "yesterday", "2024-1-1"])
def test_a_bad_date_is_refused(bad):
    with pytest.raises(BadInput, match="is not a date: give YYYY-MM-DD"):
        check_since(bad)
    with pytest.raises(BadInput, match="is not a date"):
        SpiderArguments.given({"collection": "upd", "since": bad}).query()


def test_since_needs_a_collection_or_a_search():
    with pytest.raises(BadInput, match="-a since= narrows a collection or a search"):
        SpiderArguments.given({"item": "x", "since": "2024-01-01"}).check()
    with pytest.raises(BadInput, match="narrows a collection or a search"):
        SpiderArguments.given({"items": "list.txt", "since": "2024-01-01"}).check()


def test_the_fake_scrape_api_filters_by_the_range():
    catalog = Catalog({}, CONFIG)
    assert parse_query("(collection:upd) AND oai_updatedate:[2022-05-01 TO null]") == [
        ("collection", "upd"),
        ("oai_updatedate", "[2022-05-01 TO null]"),
    ]

    def found(query: str) -> list[str]:
        answer = scrape(catalog, {"q": [query], "count": ["100"]})
        return [item["identifier"] for item in answer["items"]]

    assert found("collection:upd") == [f"upd-0000{n}" for n in (1, 2, 3, 4)]
    assert found(since_query("collection:upd", "2022-05-01")) == ["upd-00002", "upd-00004"]
    assert found(since_query("collection:upd", "2022-04-15")) == found("collection:upd")
    # Each item lists its first and its newest date: any one in the range takes it.
    assert found("collection:upd AND oai_updatedate:[* TO 2022-04-14]") == []
    assert found("collection:upd AND oai_updatedate:[2022-05-01 TO 2022-05-31]") == [
        "upd-00002",
        "upd-00004",
    ]
    assert found(since_query("collection:upd", "2030-01-01")) == []


# --- end to end ---------------------------------------------------------------------------


fake, routes = catalog_fixtures(CONFIG)


def scrape_queries(archive: FakeArchive) -> list[str]:
    return [
        parse_qs(e["query"])["q"][0]
        for e in archive.stats()["log"]
        if e["path"].startswith("/services/search/v1/scrape")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["collection=upd", "search=collection:upd"])
def test_since_takes_only_the_items_updated_since_that_date(routes, tmp_path, source):
    store = tmp_path / "store"
    crawl = scrapy_crawl(
        "-a",
        source,
        "-a",
        "since=2022-05-01",
        store=store,
        RAVEL_ORIGIN=routes.archive,
        **FAST_LISTING,
    )
    assert crawl.returncode == 0, crawl.log[-3000:]
    assert sorted(stored_files(store)) == ["upd-00002/track01.mp3", "upd-00004/track01.mp3"]
    assert scrape_queries(routes) == ["(collection:upd) AND oai_updatedate:[2022-05-01 TO null]"]
    assert routes.routes()["metadata"] == 2
    assert crawl.stat("ravel/items_total") == 2


@pytest.mark.slow
def test_nothing_updated_since_is_a_quiet_success(routes, tmp_path: Path):
    crawl = scrapy_crawl(
        "-a",
        "collection=upd",
        "-a",
        "since=2030-01-01",
        store=tmp_path / "store",
        RAVEL_ORIGIN=routes.archive,
        **FAST_LISTING,
    )
    assert crawl.returncode == 0, crawl.log[-3000:]
    assert "no item was updated since 2030-01-01" in crawl.log
    assert crawl.errors == [] and "metadata" not in routes.routes()


@pytest.mark.slow
def test_a_bad_date_is_one_error_line_before_any_request(routes, tmp_path: Path):
    crawl = scrapy_crawl(
        "-a",
        "collection=upd",
        "-a",
        "since=31/01/2024",
        store=tmp_path / "store",
        RAVEL_ORIGIN=routes.archive,
        **FAST_LISTING,
    )
    assert crawl.returncode == 1
    assert len(crawl.errors) == 1 and "Traceback" not in crawl.log
    assert crawl.errors[0].endswith(
        "-a since='31/01/2024' is not a date: give YYYY-MM-DD, e.g. -a since=2024-01-31"
    )
    assert "scrape" not in routes.routes()
