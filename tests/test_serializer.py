"""Units of the fleet: entries as checked JSON, file records, REDIS_URL checks, the add-on."""

from __future__ import annotations

import functools
import json
import logging
import pickle
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scrapy import Request, Spider
from scrapy.http import Response
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import ItemLocation, RemoteFile
from ravelscraper.distributed import serializer
from ravelscraper.distributed.addon import Distributed
from ravelscraper.distributed.connection import ENTRY_SLOT, FleetUnavailable, check_redis_url, scrub
from ravelscraper.distributed.entries import (
    CHUNK_META,
    ENTRY_URL,
    FILE_FIELDS,
    FILES_PER_ENTRY,
    BadRecord,
    chunks_of,
    file_entry_items,
    file_record,
    files_per_entry,
    item_from_record,
)
from ravelscraper.distributed.fleetspider import FleetSpider, as_fleet_spider
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.serializer import BadEntry, decode, dumps
from ravelscraper.distributed.starturls import BadStartUrl, start_location, start_requests
from ravelscraper.items import AudioFile
from ravelscraper.spiders.ravel import RavelSpider
from tests.support.crawl import ROOT

ORIGIN = "http://127.0.0.1:8080"
ORIGINS = AllowedOrigins([ORIGIN])


def new_spider() -> RavelSpider:
    return RavelSpider.from_crawler(get_crawler(RavelSpider, {"RAVEL_ORIGIN": ORIGIN}))


@pytest.fixture
def spider() -> RavelSpider:
    return new_spider()


@functools.cache
def examples_spider() -> RavelSpider:
    """One spider for every example of a property test (decoding leaves it as it was): a
    crawler per example made those tests several times slower."""
    return new_spider()


def encoded(request: Request, spider: RavelSpider) -> bytes:
    return dumps(request.to_dict(spider=spider))


def audio_file(name: str = "01 Pavane.mp3", origin: str = ORIGIN) -> AudioFile:
    url = ItemLocation.on(origin, "ravel").download_url(name)
    return AudioFile(
        identifier="ravel",
        name=name,
        url=url,
        md5="0" * 32,
        sha1="1" * 40,
        size=12,
        file_urls=[url],
    )


def test_page_requests_round_trip_as_json(spider):
    location = ItemLocation.on(ORIGIN, "ravel")
    original = spider.metadata_request(location)
    original.meta.update(depth=1, download_latency=0.2, proxy="http://evil:1")
    raw = encoded(original, spider)

    assert json.loads(raw)["cb_kwargs"]["item"] == {"origin": ORIGIN, "identifier": "ravel"}
    request = decode(raw, spider, ORIGINS)
    assert request.url == location.metadata_url
    assert request.callback == spider.parse_metadata
    assert request.errback == spider.metadata_failed
    assert request.cb_kwargs == {"item": location}
    assert request.meta == {"depth": 1}  # local or dangerous meta is never queued


def test_a_file_entry_round_trips_to_the_same_items(spider):
    items = [audio_file("sub dir/ünïcode #1.mp3"), audio_file("b.mp3")]
    items[1].album, items[1].regenerated, items[1].error = "other", True, "conflicting md5s"
    (chunk,) = chunks_of(items)
    raw = chunk.encode()
    assert b"base64" not in raw and b"download" not in raw  # the URL is derived
    request = decode(raw, spider, ORIGINS)
    assert request.callback == spider.parse_file_entry and request.url == ENTRY_URL
    assert request.meta["download_slot"] == ENTRY_SLOT
    got = request.meta[CHUNK_META]
    assert [item_from_record(got.record(row), ORIGINS) for row in got.rows] == items


def test_a_file_entry_carries_its_items_storage_folder(spider):
    # The popping node sends the item's files straight to its storage node after one 302
    # (RAVEL_STORAGE_DIRECT), as a single node does: the folder rides in the entry, once.
    items = [audio_file("a.mp3"), audio_file("b.mp3")]
    for item in items:
        item.storage_dir = "/9/items/ravel"
    (chunk,) = chunks_of(items)
    raw = chunk.encode()
    assert raw.endswith(b',"/9/items/ravel"]') and raw.count(b"/9/items/ravel") == 1
    request = decode(raw, spider, ORIGINS)
    response = Response(ENTRY_URL, request=request)
    assert [i.storage_dir for i in file_entry_items(response, spider)] == ["/9/items/ravel"] * 2
    left = request.meta[CHUNK_META].encode(chunk.rows[1:])  # what a stopping node hands back
    assert decode(left, spider, ORIGINS).meta[CHUNK_META].storage_dir == "/9/items/ravel"
    (unknown,) = chunks_of([audio_file("a.mp3")])  # no folder known: none queued
    assert len(json.loads(unknown.encode())) == 6


def test_an_item_is_queued_in_entries_of_a_few_files():
    # One file an entry while few files are pending (nodes share a small item), up to
    # FILES_PER_ENTRY while many wait (Redis memory).
    assert [files_per_entry(n) for n in (0, 12, 120, 10_000)] == [1, 1, 2, FILES_PER_ENTRY]
    items = [audio_file(f"{n}.mp3") for n in range(FILES_PER_ENTRY * 2 + 1)]
    assert [len(c.rows) for c in chunks_of(items[:5], 2)] == [2, 2, 1]
    chunks = chunks_of(items)
    assert [len(c.rows) for c in chunks] == [FILES_PER_ENTRY, FILES_PER_ENTRY, 1]
    assert [p for c in chunks for p in c.paths] == [f"ravel/{n}.mp3" for n in range(41)]
    assert sum(c.bytes for c in chunks) == 12 * 41


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c[:5], "not a file entry"),
        (lambda c: [3, *c[1:]], "not a file entry"),
        (lambda c: [*c[:2], 7, *c[3:]], "bad 'identifier'"),
        (lambda c: [*c[:5], []], "1 to"),
        (lambda c: [*c[:5], [["x.mp3", 12]]], "/metadata entry of strings"),
        (lambda c: [*c[:5], [["x.mp3"] + [None] * 10 + ["yes"]]], "bad 'regenerated'"),
        (lambda c: [*c[:1], "http://evil.example", *c[2:]], "is not allowed"),
        (lambda c: [*c[:6], "/9/items/../../etc"], "bad storage folder"),
        (lambda c: [*c[:6], ["/9/items/x"]], "bad storage folder"),
        (lambda c: [*c[:6], "/9/items/x", 1], "not a file entry"),
    ],
)
def test_hostile_file_entries_are_refused(spider, change, reason):
    (chunk,) = chunks_of([audio_file("x.mp3")])
    raw = json.dumps(change(json.loads(chunk.encode()))).encode()
    with pytest.raises(BadEntry, match=reason):
        decode(raw, spider, ORIGINS)


def found_item_request(spider: RavelSpider, fingerprint: str = "0123abcd0123abcd") -> Request:
    return spider.many.listed_item_request(ItemLocation.on(ORIGIN, "gen-00001"), fingerprint)


def search_page(spider: RavelSpider, collection: str = "gen", cursor: str | None = None) -> Request:
    return spider.many.search_request(f"collection:{collection}", cursor, collection)


def test_collection_requests_round_trip_as_json(spider):
    page = search_page(spider, cursor="W3siaWRlbnRpZmllciI6ICJnZW4tMDAxMDAifV0=")
    request = decode(encoded(page, spider), spider, ORIGINS)
    assert request.url == page.url and request.callback == spider.parse_search_page
    assert request.errback == spider.search_page_failed
    assert request.cb_kwargs == {"query": "collection:gen", "collection": "gen"}
    for fingerprint in ("0123abcd0123abcd", ""):
        found = decode(encoded(found_item_request(spider, fingerprint), spider), spider, ORIGINS)
        assert found.callback == spider.parse_metadata
        assert found.cb_kwargs == {
            "item": ItemLocation.on(ORIGIN, "gen-00001"),
            "fingerprint": fingerprint,
        }


def changed(request: Request, spider: RavelSpider, **changes) -> bytes:
    entry = json.loads(encoded(request, spider))
    for name, value in changes.items():
        if name in ("query", "collection", "fingerprint", "item"):
            entry["cb_kwargs"][name] = value
        else:
            entry[name] = value
    return json.dumps(entry).encode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: changed(found_item_request(s), s, fingerprint="g" * 16), "bad 'fingerprint'"),
        (lambda s: changed(found_item_request(s), s, fingerprint="a" * 17), "bad 'fingerprint'"),
        (lambda s: changed(found_item_request(s), s, fingerprint=None), "bad 'fingerprint'"),
        (lambda s: changed(found_item_request(s), s, query="x"), "cb_kwargs must be"),
        (lambda s: changed(search_page(s), s, query="q" * 5000), "at most 4096 bytes"),
        (lambda s: changed(search_page(s), s, query="é" * 2049), "at most 4096 bytes"),
        (lambda s: changed(search_page(s), s, query=" "), "bad 'query'"),
        (lambda s: changed(search_page(s), s, query=["collection:gen"]), "bad 'query'"),
        (lambda s: changed(search_page(s), s, collection="../etc"), "bad 'collection'"),
        (lambda s: changed(search_page(s), s, collection=3), "bad 'collection'"),
        (lambda s: changed(search_page(s), s, query="collection:other"), "does not ask for"),
        (
            lambda s: changed(search_page(s, "other"), s, collection="gen"),
            "is not the search of collection 'gen'",
        ),
        (
            lambda s: changed(search_page(s), s, url=f"{ORIGIN}/metadata/gen-00001"),
            "a search page must be",
        ),
        (
            lambda s: changed(
                search_page(s), s, url=search_page(s).url.replace(ORIGIN, "http://e")
            ),
            "is not allowed",
        ),
        (
            lambda s: changed(search_page(s), s, meta={"redirect_urls": [f"{ORIGIN}/x"]}),
            "cannot be a redirect",
        ),
        (
            lambda s: changed(search_page(s), s, errback="metadata_failed"),
            "errback 'metadata_failed' is not allowed",
        ),
    ],
)
def test_hostile_collection_entries_are_refused_with_a_reason(spider, make, reason):
    with pytest.raises(BadEntry, match=reason.replace("(", r"\(")) as refused:
        decode(make(spider), spider, ORIGINS)
    assert_one_line(refused.value)


def hostile(spider, **changes) -> bytes:
    entry = json.loads(encoded(spider.metadata_request(ItemLocation.on(ORIGIN, "x")), spider))
    entry.update(changes)
    return json.dumps(entry).encode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: pickle.dumps({"url": ORIGIN}), "pickled data"),
        (lambda s: b"\x00garbage", "not a JSON entry"),
        (lambda s: b'{"url": "http://127.0.0.1:8080/"}', 'no "v": 1'),
        (lambda s: hostile(s, _class="scrapy.http.JsonRequest"), "unexpected fields"),
        (lambda s: hostile(s, callback="close"), "callback 'close' is not allowed"),
        (lambda s: hostile(s, errback="close"), "errback 'close' is not allowed"),
        (lambda s: hostile(s, method="POST"), "only GET"),
        (lambda s: hostile(s, meta={"proxy": "http://evil:1"}), "meta key 'proxy'"),
        (lambda s: hostile(s, headers={"Cookie": ["a=b"]}), "header 'Cookie'"),
        (lambda s: hostile(s, url="http://evil.example/metadata/x"), "is not allowed"),
        (lambda s: hostile(s, url="http://127.0.0.1:6379/metadata/x"), "is not allowed"),
        (lambda s: hostile(s, url=f"{ORIGIN}/metadata/other"), "does not match its item"),
        (
            # meta.redirect_urls no longer skips the check that a URL belongs to its item
            lambda s: hostile(
                s, url=f"{ORIGIN}/metadata/other", meta={"redirect_urls": [f"{ORIGIN}/elsewhere"]}
            ),
            "does not match its item",
        ),
        (
            lambda s: hostile(
                s,
                meta={"redirect_urls": [f"{ORIGIN}/metadata/x", "http://evil.example/metadata/x"]},
            ),
            "redirect via 'http://evil.example/metadata/x' is not allowed",
        ),
        (
            lambda s: hostile(
                s,
                cb_kwargs={"item": {"origin": "http://evil", "identifier": "x"}},
            ),
            "origin 'http://evil' is not allowed",
        ),
        (lambda s: hostile(s, callback="parse_file_entry", errback=None), "cb_kwargs must be"),
        (lambda s: b"{" * (serializer.MAX_ENTRY_BYTES + 1), "larger than"),
    ],
)
def test_hostile_entries_are_refused_with_a_reason(spider, make, reason):
    with pytest.raises(BadEntry, match=reason.replace("(", r"\(")):
        decode(make(spider), spider, ORIGINS)


def test_a_request_class_is_refused_when_queued(spider):
    with pytest.raises(BadEntry, match="cannot be queued"):
        dumps({"_class": "scrapy.http.request.form.FormRequest", "url": ORIGIN})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"file": {"name": "../../etc/passwd"}}, "'..'"),
        ({"url": "http://evil.example/download/ravel/x.mp3"}, "not allowed"),
        ({"url": f"{ORIGIN}/download/ravel/other.mp3"}, "not the download URL"),
        ({"file": {"name": "x.mp3", "size": 12}}, "/metadata entry of strings"),
        ({"file": {"name": "x.mp3", "sha1": 1}}, "/metadata entry of strings"),
        ({"file": {"name": "x.mp3", "sha256": "ab"}}, "/metadata entry of strings"),
        ({"file": {"name": "x.mp3", "private": "true"}}, "/metadata entry of strings"),
        ({"file": {"title": "no name"}}, "'name'"),
        ({"regenerated": "yes"}, "bad 'regenerated'"),
        ({"files": []}, "fields must be exactly"),
    ],
)
def test_hostile_file_records_are_refused(change, reason):
    record = file_record(audio_file("x.mp3"))
    record.update(change)
    with pytest.raises(BadRecord, match=reason):
        item_from_record(json.dumps(record).encode(), ORIGINS)


@pytest.mark.parametrize("length", ["-5", "04:26", "nan", "x"])
def test_a_file_record_is_judged_like_a_metadata_entry(length):
    """The fleet rebuilds a file with RemoteFile.from_metadata, as a single node does."""
    record = file_record(audio_file("x.mp3"))
    record["file"]["length"] = length
    item = item_from_record(json.dumps(record).encode(), ORIGINS)
    single = RemoteFile.from_metadata({"name": "x.mp3", "length": length}).length
    assert repr(item.length) == repr(single)
    assert item.size == 12 and item.md5 == "0" * 32


def test_a_file_record_carries_the_sha1_and_a_malformed_one_fails_the_file():
    record = file_record(audio_file("x.mp3"))
    assert record["file"]["sha1"] == "1" * 40
    assert item_from_record(json.dumps(record).encode(), ORIGINS).sha1 == "1" * 40
    record["file"]["sha1"] = "not-a-sha1"
    item = item_from_record(json.dumps(record).encode(), ORIGINS)
    assert item.sha1 is None and "malformed sha1" in item.error  # as a single node judges it


def test_a_nan_length_is_queued_without_error():
    item = audio_file("x.mp3")
    item.length = float("nan")
    (chunk,) = chunks_of([item])
    assert chunk.record(chunk.rows[0])["file"]["length"] == "nan"


def test_allowed_origins_match_host_port_and_subdomains():
    origins = AllowedOrigins(["https://archive.org", "http://127.0.0.1:8080"])
    assert "https://archive.org/details/x" in origins
    assert "https://ia800300.us.archive.org/1/items/x" in origins
    assert "https://evilarchive.org/x" not in origins
    assert "http://archive.org/x" not in origins  # port 80, not 443
    assert "http://127.0.0.1:8081/x" not in origins
    assert "data:,x" not in origins


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@queue-host:6379/0", "redis://queue-host:6379/0"),
        ("redis://queue-host", "redis://queue-host:6379/0"),
        ("rediss://user:pw@[::1]:6380/3", "rediss://[::1]:6380/3"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock/2"),
    ],
)
def test_redis_urls_are_checked_and_redacted(url, redacted):
    assert check_redis_url(url) == redacted


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://queue-host:6379/abc", "database must be a number"),
        ("redis://queue-host:6379/0?db=x", "database must be a number"),
        ("redis://queue-host:port/0", "not a valid URL"),
        ("http://queue-host/0", "must start with redis://"),
        ("queue-host:6379", "must start with redis://"),
        ("redis:///0", "no host"),
    ],
)
def test_bad_redis_urls_are_refused(url, reason):
    with pytest.raises(FleetUnavailable, match=reason):
        check_redis_url(url)


def test_passwords_are_scrubbed_from_messages():
    assert (
        scrub("AUTH p%40ss failed\nfor p@ss", "redis://:p%40ss@h/0") == "AUTH p%40ss failed for ***"
    )


def test_without_redis_url_the_addon_changes_nothing(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = Settings({"SCHEDULER": "scrapy.core.scheduler.Scheduler"})
    before = {name: settings[name] for name in settings}
    Distributed().update_settings(settings)
    assert {name: settings[name] for name in settings} == before


def test_with_redis_url_the_addon_installs_the_fleet(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://queue-host:6379/0")
    settings = Settings({"RAVEL_FLEET_MAX_TRANSFERS": 2, "EXTENSIONS": {"a.B": 1}})
    Distributed().update_settings(settings)
    assert settings["REDIS_URL"] == "redis://queue-host:6379/0"
    assert settings["SCHEDULER"].endswith("RavelScheduler")
    # Not set: the scheduler always uses checked JSON, and warns only of another value.
    assert settings.get("SCHEDULER_SERIALIZER") is None
    assert settings.get("SCHEDULER_PERSIST") is None
    assert settings.getdict("EXTENSIONS") == {
        "a.B": 1,
        "ravelscraper.distributed.extension.FleetCoordinator": 600,
    }
    assert "ravelscraper.distributed.fleetcap.FleetTransferCap" in settings.getdict(
        "DOWNLOADER_MIDDLEWARES"
    )


@pytest.mark.parametrize(
    ("chosen", "warned"),
    [
        ({}, []),
        ({"SCHEDULER_PERSIST": True, "SCHEDULER_SERIALIZER": serializer.__name__}, []),
        ({"SCHEDULER_PERSIST": "False"}, ["SCHEDULER_PERSIST=False / SCHEDULER_FLUSH_ON_START"]),
        ({"SCHEDULER_FLUSH_ON_START": True}, ["SCHEDULER_FLUSH_ON_START ignored"]),
        (
            {"SCHEDULER_SERIALIZER": "scrapy_redis.picklecompat"},
            ["SCHEDULER_SERIALIZER='scrapy_redis.picklecompat' ignored"],
        ),
    ],
)
def test_a_node_warns_only_of_scheduler_settings_the_user_set_otherwise(
    monkeypatch, chosen, warned
):
    from ravelscraper.distributed.scheduler import ignored_settings

    monkeypatch.setenv("REDIS_URL", "redis://queue-host:6379/0")
    settings = Settings(chosen)
    Distributed().update_settings(settings)
    warnings = ignored_settings(settings)
    assert len(warnings) == len(warned)
    for warning, expected in zip(warnings, warned, strict=True):
        assert expected in warning


@pytest.mark.parametrize(
    ("error", "name", "why"),
    [
        ("", "a.mp3", ""),  # the spider accepted the name
        (
            "refused the name: it differs only in case from 'A.mp3'",
            "a.mp3",
            "it differs only in case from 'A.mp3'",
        ),  # the spider's verdict, as it is
        ("md5 is not 32 hex digits", "../a.mp3", "it has a '..' path component"),  # not judged
        ("md5 is not 32 hex digits", "a.mp3", ""),  # fails for its own error, later
    ],
)
def test_a_listed_name_is_refused_by_the_spiders_verdict_or_judged_if_it_had_none(error, name, why):
    from ravelscraper.distributed.jobs import name_refused

    item = AudioFile(identifier="ravel", name=name, url="", error=error)
    assert name_refused(item) == why


def test_a_node_giving_up_on_redis_outside_a_running_crawl_still_says_why(spider, caplog):
    from ravelscraper.distributed.fleet import Fleet

    fleet = Fleet(spider.crawler)
    spider.crawler.engine = SimpleNamespace(running=False)  # stopped, or not yet started
    with caplog.at_level(logging.ERROR):
        fleet.give_up("[fleet] lost Redis at redis://h:6379/0 for 30 s; stopping")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["[fleet] lost Redis at redis://h:6379/0 for 30 s; stopping"]
    assert spider.crawler.stats.get_value("ravel/error") == errors[0]
    assert fleet.stopped


@pytest.mark.slow
def test_a_single_machine_crawl_never_imports_redis():
    code = (
        "import sys; from scrapy.utils.project import get_project_settings; "
        "from scrapy.crawler import Crawler; from ravelscraper.spiders.ravel import RavelSpider; "
        "c = Crawler(RavelSpider, get_project_settings(), init_reactor=True); c._apply_settings(); "
        "assert 'redis' not in sys.modules, 'redis imported'; print(c.settings['SCHEDULER'])"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "scrapy.core.scheduler.Scheduler"


# --- property-based: whatever Redis holds, a valid request or a one-line refusal ---------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(sorted(serializer.FIELDS)) | st.text(), children, max_size=6
        )
    ),
    max_leaves=20,
)


def near_entry(spider: RavelSpider) -> st.SearchStrategy[bytes]:
    """Entries close to valid ones: a real entry (an item's /metadata, a found item's, a
    search page) with some fields, or some cb_kwargs, replaced by anything."""
    bases = [
        json.loads(encoded(request, spider))
        for request in (
            spider.metadata_request(ItemLocation.on(ORIGIN, "x")),
            found_item_request(spider),
            search_page(spider),
        )
    ]
    kwargs = st.text(max_size=40) | JSON | st.from_regex(r"[0-9a-f]{0,20}", fullmatch=True)
    cb_names = st.sampled_from(["item", "fingerprint", "query", "collection", "other"])

    def entry(base: dict, fields: dict, cb_kwargs: dict) -> bytes:
        return json.dumps({**base, **fields, "cb_kwargs": {**base["cb_kwargs"], **cb_kwargs}})

    return st.builds(
        lambda base, fields, cb: entry(base, fields, cb).encode(),
        st.sampled_from(bases),
        st.dictionaries(st.sampled_from(sorted(bases[0])), JSON, max_size=2),
        st.dictionaries(cb_names, kwargs, max_size=2),
    )


def assert_one_line(exc: Exception) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message and len(message) < 1000


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_queue_entry_is_a_request_or_one_refusal(data):
    spider = examples_spider()
    raw = data.draw(
        st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()) | near_entry(spider)
    )
    try:
        request = decode(raw, spider, ORIGINS)
    except BadEntry as exc:
        assert_one_line(exc)
        return
    assert isinstance(request, Request)
    assert request.url == ENTRY_URL or request.url in ORIGINS
    fingerprint = request.cb_kwargs.get("fingerprint", "")
    assert isinstance(fingerprint, str) and len(fingerprint) <= 16
    if request.callback == spider.parse_search_page:
        query, collection = request.cb_kwargs["query"], request.cb_kwargs["collection"]
        assert len(query.encode()) <= serializer.MAX_QUERY
        assert collection == "" or query == f"collection:{collection}"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(
        st.sampled_from(["url", "item", "collection", "search"]), JSON, max_size=2
    ).map(lambda v: json.dumps(v).encode())
    | st.tuples(st.sampled_from(["item", "collection", "search"]), st.text(max_size=60)).map(
        lambda kv: json.dumps(dict([kv])).encode()
    )
)
def test_any_start_url_is_requests_or_one_refusal(raw):
    spider = examples_spider()
    try:
        requests = start_requests(raw, spider, ORIGINS)
    except BadStartUrl as exc:
        assert_one_line(exc)
        return
    assert requests and all(r.url in ORIGINS for r in requests)
    for request in requests:  # what a node queues, it takes back
        assert decode(encoded(request, spider), spider, ORIGINS).url == request.url


def test_a_pushed_collection_or_search_starts_at_its_first_page(spider):
    (page,) = start_requests(b'{"collection": "gen"}', spider, ORIGINS)
    assert page.callback == spider.parse_search_page
    assert page.cb_kwargs == {"query": "collection:gen", "collection": "gen"}
    (page,) = start_requests(b'{"search": " creator:Ravel "}', spider, ORIGINS)
    assert page.cb_kwargs == {"query": "creator:Ravel", "collection": ""}
    for raw, reason in (
        (b'{"collection": "a b"}', "not an archive.org identifier"),
        (b'{"search": "  "}', "an empty search"),
        (json.dumps({"search": "x" * 5000}).encode(), "at most 4096 bytes"),
        (b'{"search": "a", "item": "b"}', "expected"),
        (b'{"collection": "gen"}', "a collection or a search, not an item"),
    ):
        with pytest.raises(BadStartUrl, match=reason):
            if reason.startswith("a collection or"):
                start_location(raw, spider, ORIGINS)
            else:
                start_requests(raw, spider, ORIGINS)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(st.sampled_from(sorted(FILE_FIELDS)), JSON | st.text(), max_size=9).map(
        lambda f: json.dumps({**file_record(audio_file("x.mp3")), "file": f}).encode()
    )
)
def test_any_file_record_is_a_file_or_one_refusal(raw):
    try:
        item = item_from_record(raw, ORIGINS)
    except BadRecord as exc:
        assert_one_line(exc)
        return
    assert isinstance(item, AudioFile) and item.url in ORIGINS


@pytest.mark.parametrize("depth", [1000, 200_000])
def test_deeply_nested_entries_are_refused_in_one_line(spider, depth):
    nested = b"[" * depth + b"]" * depth
    for decoder, error in (
        (lambda: decode(nested, spider, ORIGINS), BadEntry),
        (lambda: start_location(nested, spider, ORIGINS), BadStartUrl),
        (lambda: item_from_record(nested, ORIGINS), BadRecord),
    ):
        with pytest.raises(error) as refused:
            decoder()
        assert_one_line(refused.value)


def test_the_fleet_checks_its_spider_once_against_fleet_spider():
    spider = RavelSpider()
    assert isinstance(spider, FleetSpider) and as_fleet_spider(spider) is spider
    with pytest.raises(TypeError, match="item_requests"):
        as_fleet_spider(Spider(name="plain"))
