"""ravelscraper.archive.search: the scrape answer, the scrape URL, the fingerprint, item lists; and
the spider's search-page callback with a stand-in for quick's ItemRecords."""

from __future__ import annotations

import base64
import io
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scrapy.exceptions import CloseSpider
from scrapy.http import Request, TextResponse
from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import BadInput, ItemLocation
from ravelscraper.archive.search import (
    MAX_LIST_LINE_BYTES,
    SCRAPE_PATH,
    SEARCH_FIELDS,
    FoundItem,
    SearchFailed,
    cursor_identifier,
    fingerprint,
    list_lines,
    page_cursor,
    parse_page,
    read_item_list,
    scrape_url,
)
from ravelscraper.checks import settings_problem
from ravelscraper.spiders.arguments import SpiderArguments
from ravelscraper.spiders.ravel import RavelSpider

ORIGIN = "https://archive.org"
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cursor_of(identifier: str) -> str:
    return base64.b64encode(json.dumps([{"identifier": identifier}]).encode()).decode()


def page(*items: dict[str, Any], cursor: str | None = None, total: int | None = 2) -> bytes:
    answer: dict[str, Any] = {"items": list(items), "count": len(items), "total": total}
    if cursor:
        answer["cursor"] = cursor
    return json.dumps(answer).encode()


# --- parse_page ------------------------------------------------------------------------


def test_a_page_gives_its_items_total_and_cursor() -> None:
    body = page(
        {"identifier": "a", "mediatype": "audio", "collection": ["c"], "item_size": "10",
         "oai_updatedate": ["2020-01-01T00:00:00Z"]},
        {"identifier": "sub", "mediatype": "collection"},
        cursor=cursor_of("sub"),
        total=7,
    )  # fmt: skip
    answer = parse_page(body)
    assert answer.total == 7 and answer.cursor == cursor_of("sub")
    assert answer.items[0] == FoundItem(
        "a", "audio", ("c",), fingerprint(["2020-01-01T00:00:00Z"], 10)
    )
    assert answer.items[1].is_collection and answer.items[1].fingerprint is None
    assert answer.warnings == ()


def test_the_last_page_has_no_cursor_and_zero_hits_no_total() -> None:
    assert parse_page(page({"identifier": "a"})).cursor is None
    empty = parse_page(b'{"items": [], "count": 0, "total": null}')
    assert empty.items == () and empty.total is None and empty.cursor is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "count must be between 100 and 10000"}', "archive.org refused the search"),
        (b"<html>busy</html>", "is not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'{"count": 0}', 'no "items" list'),
        (b'{"items": [], "cursor": 5}', "malformed cursor"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_an_error_envelope_or_a_malformed_answer_is_one_line(body: bytes, message: str) -> None:
    with pytest.raises(SearchFailed, match=message) as caught:
        parse_page(body)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("total", "kept"), [(10**9, 10**9), (10**9 + 1, None), (10**18, None), (-1, None)]
)
def test_a_total_larger_than_archive_org_could_hold_is_ignored_with_a_warning(
    total: int, kept: int | None
) -> None:
    found = parse_page(page({"identifier": "a"}, total=total))
    assert found.total == kept
    assert len(found.warnings) == (1 if total > 10**9 else 0)


def test_malformed_entries_are_skipped_with_a_warning_each_up_to_a_few() -> None:
    bad = [{"identifier": "../x"}, {"no": "id"}, 5, {"identifier": ["a"]}, "x", None, {}]
    answer = parse_page(page({"identifier": "good"}, *bad))  # type: ignore[arg-type]
    assert [i.identifier for i in answer.items] == ["good"]
    assert len(answer.warnings) == 6 and answer.warnings[-1] == "skipped 2 more malformed entries"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "identifier": st.text(max_size=12) | json_values,
        "mediatype": json_values,
        "collection": json_values,
        "oai_updatedate": json_values,
        "item_size": json_values,
    },
)
answers = st.fixed_dictionaries(
    {"items": st.lists(entries | json_values, max_size=5)},
    optional={"cursor": json_values, "total": json_values, "error": json_values},
)


@FAST
@given(
    st.binary(max_size=300)
    | answers.map(lambda a: json.dumps(a).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
)
def test_any_bytes_give_a_page_or_a_one_line_refusal(body: bytes) -> None:  # fmt: skip
    try:
        answer = parse_page(body)
    except SearchFailed as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    for item in answer.items:
        ItemLocation.on(ORIGIN, item.identifier)  # every identifier is a valid one
        assert item.fingerprint is None or len(item.fingerprint) == 16
    assert answer.cursor is None or isinstance(answer.cursor, str)
    assert answer.total is None or answer.total >= 0


# --- the fingerprint --------------------------------------------------------------------


def test_the_fingerprint_ignores_order_and_repeats_and_moves_with_either_field() -> None:
    one = fingerprint(["2020-01-02T00:00:00Z", "2019-05-01T00:00:00Z"], 100)
    again = ["2019-05-01T00:00:00Z", "2020-01-02T00:00:00Z", "2019-05-01T00:00:00Z"]
    assert one == fingerprint(again, "100")
    assert one != fingerprint(["2019-05-01T00:00:00Z", "2020-01-03T00:00:00Z"], 100)
    assert one != fingerprint(["2020-01-02T00:00:00Z", "2019-05-01T00:00:00Z"], 101)
    assert fingerprint("2020-01-02T00:00:00Z", 5) == fingerprint(["2020-01-02T00:00:00Z"], 5)


@pytest.mark.parametrize(
    ("dates", "size"),
    [(None, 5), ([], 5), (["d"], None), (["d"], "x"), (["d", 3], 5), (["d"], True), (["d"], -1)],
)
def test_no_fingerprint_without_both_fields(dates: object, size: object) -> None:
    assert fingerprint(dates, size) is None


@FAST
@given(json_values, json_values)
def test_a_fingerprint_from_anything_is_none_or_16_hex(dates: object, size: object) -> None:
    found = fingerprint(dates, size)
    assert found is None or (len(found) == 16 and int(found, 16) >= 0)


# --- URLs and cursors -------------------------------------------------------------------


def test_the_scrape_url_is_on_the_origin_with_the_fields_count_and_cursor() -> None:
    url = scrape_url("http://127.0.0.1:8080/", 'collection:78rpm AND creator:"Ravel"', 1000, "Qw==")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:8080", SCRAPE_PATH)
    params = parse_qs(parts.query)
    assert params["q"] == ['collection:78rpm AND creator:"Ravel"']
    assert params["fields"] == [",".join(SEARCH_FIELDS)] and params["count"] == ["1000"]
    assert page_cursor(url) == "Qw==" and page_cursor(scrape_url(ORIGIN, "q:x", 100)) is None


def test_the_cursor_says_the_last_identifier_of_its_page() -> None:
    assert cursor_identifier(cursor_of("1961-L-05914")) == "1961-L-05914"
    assert cursor_identifier("W3siaWRlbnRpZmllciI6IjE5NjEtTC0wNTkxNCJ9XQ==") == "1961-L-05914"
    for bad in ("", "!!", base64.b64encode(b"[]").decode(), base64.b64encode(b'{"a":1}').decode()):
        assert cursor_identifier(bad) is None


def test_the_page_size_setting_is_checked_at_start() -> None:
    from scrapy.settings import Settings

    assert settings_problem(Settings({"RAVEL_SEARCH_PAGE_SIZE": 1000})) is None
    for bad in (99, 10001, "many", 150.5):
        problem = settings_problem(Settings({"RAVEL_SEARCH_PAGE_SIZE": bad}))
        assert problem and "RAVEL_SEARCH_PAGE_SIZE" in problem and "100 to 10000" in problem


# --- item lists -------------------------------------------------------------------------


def test_an_item_list_takes_identifiers_and_details_urls_once_skipping_blanks_and_comments() -> (
    None
):
    text = "\ufeffa-1\r\n\n# a comment\n  https://mirror.example/details/b  \na-1\nc\n"
    items = list(read_item_list(io.BytesIO(text.encode()), ORIGIN, "the list"))
    assert items == [
        ItemLocation(ORIGIN, "a-1"),
        ItemLocation("https://mirror.example", "b"),
        ItemLocation(ORIGIN, "c"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"ok\n\nbad id\n", r"the list, line 3: not an archive.org identifier: 'bad id'"),
        (b"ok\nftp://x/details/y\n", r"the list, line 2: not an http\(s\) URL"),
        (b"ok\n\xff\xfe\n", r"the list, line 2: not UTF-8 text"),
        (b"x" * 5000, r"the list, line 1: a line of 5000 characters"),
    ],
)
def test_a_bad_line_is_one_error_naming_its_line(text: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message) as caught:
        list(read_item_list(io.BytesIO(text), ORIGIN, "the list"))
    assert "\n" not in str(caught.value)


@FAST
@given(st.lists(st.binary(max_size=40) | st.text(max_size=40), max_size=8))
def test_any_item_list_gives_items_or_one_bad_input(lines: list[str | bytes]) -> None:
    try:
        items = list(read_item_list(lines, ORIGIN, "the list"))
    except BadInput as exc:
        assert str(exc).startswith("the list, line ") and "\n" not in str(exc)
        return
    assert len(items) == len(set(items))


# --- the -a arguments -------------------------------------------------------------------


def test_many_items_arguments_exclude_each_other_and_take_one_item_besides() -> None:
    for arguments in (
        SpiderArguments.given({"collection": "c", "search": "q:1"}),
        SpiderArguments.given({"search": "q:1", "items": "-"}),
    ):
        with pytest.raises(BadInput, match="can't be combined: give one of"):
            arguments.check()
    for arguments in (
        SpiderArguments.given({"item": "x", "collection": "c"}),
        SpiderArguments.given({"url": "https://archive.org/details/y", "items": "-"}),
    ):
        arguments.check()  # the item is listed besides the collection or the list
        assert arguments.many and arguments.one_item
    combined = SpiderArguments.given({"formats": "Flac", "glob": "*.flac", "collection": "78rpm"})
    assert combined.many and combined.query() == "collection:78rpm"
    assert SpiderArguments.given({"search": ' a:"b" '}).query() == 'a:"b"'
    with pytest.raises(BadInput, match=r"not an archive\.org identifier"):
        SpiderArguments.given({"collection": "a b"}).query()
    with pytest.raises(BadInput, match="empty argument -a items="):
        SpiderArguments.given({"items": " "}).check()


# --- the spider's search page, with a stand-in for ravelscraper.pipelines.records ---


class Records:
    """The ItemRecords API (quick's): unchanged for the identifiers given."""

    def __init__(self, unchanged: set[str]) -> None:
        self.same = unchanged
        self.asked: list[tuple[str, str, str]] = []

    def unchanged(self, identifier: str, fingerprint: str, selection: str) -> bool:
        self.asked.append((identifier, fingerprint, selection))
        return identifier in self.same


def spider(**arguments: str) -> RavelSpider:
    crawler = get_crawler(RavelSpider, {"RAVEL_ORIGIN": ORIGIN, "RAVEL_SEARCH_PAGE_SIZE": 100})
    return RavelSpider.from_crawler(crawler, **arguments)


def search_response(spider: RavelSpider, body: bytes, cursor: str | None = None) -> TextResponse:
    query = spider.arguments.query() or ""
    request = spider.many.search_request(query, cursor, spider.arguments.collection or "")
    return TextResponse(request.url, body=body, request=request, encoding="utf-8")


DATES = {"oai_updatedate": ["2020-01-01T00:00:00Z"], "item_size": 3}


def test_a_search_page_yields_changed_items_metadata_then_the_next_page() -> None:
    crawler_spider = spider(collection="c")
    crawler_spider.many.records = Records({"same"})
    body = page(
        {"identifier": "new", "collection": ["c"], **DATES},
        {"identifier": "same", "collection": ["c"], **DATES},
        {"identifier": "nofp", "collection": ["c"]},
        {"identifier": "sub", "collection": ["c"], "mediatype": "collection"},
        cursor=cursor_of("sub"),
        total=9,
    )
    response = search_response(crawler_spider, body)
    requests = list(crawler_spider.parse_search_page(response, **response.request.cb_kwargs))
    assert all(isinstance(r, Request) for r in requests)
    urls = [r.url for r in requests]
    assert urls[:2] == [f"{ORIGIN}/metadata/new", f"{ORIGIN}/metadata/nofp"]
    assert page_cursor(urls[2]) == cursor_of("sub") and len(urls) == 3
    assert requests[0].cb_kwargs == {
        "item": ItemLocation(ORIGIN, "new"),
        "fingerprint": fingerprint(DATES["oai_updatedate"], 3),
    }
    assert requests[1].cb_kwargs["fingerprint"] == ""  # listed, never skipped
    assert [a[0] for a in crawler_spider.many.records.asked] == ["new", "same"]
    assert crawler_spider.many.records.asked[0][2] == "mp3 (one per recording)"
    stats = crawler_spider.crawler.stats
    assert stats.get_value("ravel/items_total") == 9
    assert stats.get_value("ravel/items_unchanged") == 1
    assert stats.get_value("ravel/collections_skipped") == 1
    assert all(r.callback.__name__ in crawler_spider.listing_callbacks for r in requests)


@pytest.mark.parametrize(
    ("body", "cursor", "message"),
    [
        (b'{"error": "boom"}', None, "archive.org refused the search: boom"),
        (page(total=None), None, "no items match the search 'collection:c'; is 'c' a collection"),
        (page({"identifier": "a"}, cursor=cursor_of("a")), cursor_of("a"), "returned a page again"),
        (page({"identifier": "b"}), cursor_of("c"), "returned a page again"),
        (page({"identifier": "d"}, cursor=cursor_of("b")), cursor_of("c"), "repeated a page"),
        (page({"identifier": "x", "collection": ["other"]}), None, "answered another query"),
        (page({"identifier": "x"}), None, "does not say which collection 'x' is in"),
        (page({"identifier": "x", "collection": []}), None, "does not say which collection"),
        (page({"identifier": "x", "collection": [5]}), None, "does not say which collection"),
    ],
)
def test_a_search_page_the_crawl_cannot_go_on_from_stops_it_with_one_line(
    body: bytes, cursor: str | None, message: str
) -> None:
    crawler_spider = spider(collection="c")
    response = search_response(crawler_spider, body, cursor)
    with pytest.raises(CloseSpider):
        list(crawler_spider.parse_search_page(response, **response.request.cb_kwargs))
    error = crawler_spider.crawler.stats.get_value("ravel/error")
    assert message in error and "\n" not in error


def test_a_page_read_again_on_this_node_stops_the_search_whatever_its_cursors() -> None:
    # Opaque cursors (not archive.org's shape): FIRST -> A, A -> B, B -> A.
    crawler_spider = spider(collection="c")
    pages = [(None, "A", "a1"), ("A", "B", "b1"), ("B", "A", "c1")]
    for number, (cursor, next_cursor, identifier) in enumerate(pages):
        body = page({"identifier": identifier, "collection": ["c"]}, cursor=next_cursor)
        response = search_response(crawler_spider, body, cursor)
        # A next page is never dropped quietly by the dupefilter.
        assert response.request.dont_filter == (cursor is not None)
        if number < 2:
            list(crawler_spider.parse_search_page(response, **response.request.cb_kwargs))
            continue
        with pytest.raises(CloseSpider):
            list(crawler_spider.parse_search_page(response, **response.request.cb_kwargs))
    error = crawler_spider.crawler.stats.get_value("ravel/error")
    assert "repeated a page" in error


def test_an_item_of_many_that_cannot_be_listed_fails_alone() -> None:
    crawler_spider = spider(items="-")
    item = ItemLocation(ORIGIN, "gone")
    request = crawler_spider.many.listed_item_request(item, "")
    response = TextResponse(request.url, body=b"{}", request=request, encoding="utf-8")
    (row,) = crawler_spider.parse_metadata(response, **request.cb_kwargs)  # its manifest row
    assert (row.identifier, row.name, row.file_urls, row.failed_item) == ("gone", "", [], True)
    assert row.error.startswith("unknown item 'gone'")
    stats = crawler_spider.crawler.stats
    assert stats.get_value("ravel/items_failed") == 1 and stats.get_value("ravel/error") is None
    assert crawler_spider.failed_items == ["gone"]
    one = spider()  # the crawl's one item: the same answer stops the crawl
    request = one.metadata_request(item)
    response = TextResponse(request.url, body=b"{}", request=request, encoding="utf-8")
    with pytest.raises(CloseSpider):
        list(one.parse_metadata(response, **request.cb_kwargs))


class Endless(io.RawIOBase):
    """A stream of ``line`` repeated for ever (``/dev/zero``, or stdin that never ends),
    counting the bytes it gave."""

    def __init__(self, line: bytes) -> None:
        self.line, self.given, self.position = line, 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        data = (self.line * (size // len(self.line) + 2))[self.position : self.position + size]
        self.position = (self.position + size) % len(self.line)
        buffer[:size] = data
        self.given += size
        return size


@pytest.mark.parametrize("line", [b"\0", b"a", b"gen-00001 "])
def test_a_line_too_long_is_refused_having_read_a_bounded_amount(line: bytes) -> None:
    raw = Endless(line)
    stream = io.BufferedReader(raw, buffer_size=8192)
    with pytest.raises(BadInput, match="line 1: a line longer than 4096 characters"):
        list(read_item_list(list_lines(stream, "the list"), ORIGIN, "the list"))
    assert raw.given <= MAX_LIST_LINE_BYTES + 2 * 8192


@given(st.integers(min_value=1, max_value=3 * MAX_LIST_LINE_BYTES))
@FAST
def test_list_lines_give_every_line_up_to_the_bound_and_refuse_longer(length: int) -> None:
    data = b"x" * length + b"\nnext\n"
    try:
        lines = list(list_lines(io.BytesIO(data), "the list"))
    except BadInput:
        assert length + 1 > MAX_LIST_LINE_BYTES
    else:
        assert lines == [b"x" * length + b"\n", b"next\n"]


def test_an_item_list_on_standard_input_is_streamed_not_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = Endless(b"gen-00001\ngen-00002\n")  # the same two items for ever

    class Stdin:
        buffer = io.BufferedReader(raw)

    monkeypatch.setattr("sys.stdin", Stdin)
    crawler_spider = spider(items="-")
    requests = crawler_spider.many.first_requests()
    first = [next(requests) for _ in range(2)]
    assert [r.url for r in first] == [
        f"{ORIGIN}/metadata/gen-00001",
        f"{ORIGIN}/metadata/gen-00002",
    ]
    assert raw.given < 100_000  # two requests made, the endless input not read on
