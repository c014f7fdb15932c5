"""Unit tests of the files pipeline and its store: plain and fast, no network."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import stat
import unicodedata
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scrapy.http import Response
from scrapy.pipelines.media import FileException
from scrapy.utils.test import get_crawler

from ravelscraper.archive.names import (
    INVISIBLE_LAYOUT,
    NameClaims,
    UnsafeName,
    safe_relative_path,
    shown,
)
from ravelscraper.downloader.streaming import STREAM_META
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.files import VerifiedFilesPipeline
from ravelscraper.pipelines.verify import mismatch
from ravelscraper.spiders.ravel import RavelSpider
from ravelscraper.stores.base import is_name_problem
from ravelscraper.stores.local import AtomicFSFilesStore, current_umask
from ravelscraper.stores.parts import NAMED_PART_MIN_SIZE

BODY = b"la valse" * 1000
MD5 = hashlib.md5(BODY).hexdigest()


def audio_file(name: str = "01 Ondine.mp3", **fields) -> AudioFile:
    url = f"http://127.0.0.1:1/download/item/{name}"
    fields = {"size": len(BODY), "md5": MD5, **fields}
    return AudioFile(identifier="item", name=name, url=url, file_urls=[url], **fields)


@pytest.mark.parametrize(
    "name",
    ["sub/dir/é #%+.mp3", "UPPER.MP3", "a..b.mp3", ".hidden.mp3", "x" * 255],
)
def test_ordinary_names_keep_their_shape(name):
    assert safe_relative_path("item", name) == f"item/{name}"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../escape.mp3", "'..'"),
        ("sub/../../up.mp3", "'..'"),
        ("/etc/evil.mp3", "absolute"),
        ("back\\slash.mp3", "backslash"),
        ("nul\x00byte.mp3", "control"),
        ("line\nbreak.mp3", "control"),
        ("a//b.mp3", "empty"),
        ("./a.mp3", "'.'"),
        ("é" * 128 + ".mp3", "255 bytes"),
    ],
)
def test_hostile_names_are_refused_with_a_reason(name, why):
    with pytest.raises(UnsafeName, match=why):
        safe_relative_path("item", name)


def test_store_writes_atomically_and_stays_inside(tmp_path):
    store = AtomicFSFilesStore(str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()  # nothing is created before the crawl opens
    store.ensure_writable()
    store.persist_file("item/disc 1/a.mp3", BytesIO(BODY), info=None)
    assert (tmp_path / "store/item/disc 1/a.mp3").read_bytes() == BODY
    assert [p.name for p in (tmp_path / "store").rglob("*.part")] == []
    assert store.stat_file("item/disc 1/a.mp3", info=None)["checksum"] == MD5
    with pytest.raises(UnsafeName):
        store.persist_file("item/../../x", BytesIO(BODY), info=None)


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    store = AtomicFSFilesStore(str(tmp_path))

    class Exploding(BytesIO):
        def getvalue(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.persist_file("item/a.mp3", Exploding(), info=None)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.fixture
def pipeline(tmp_path):
    crawler = get_crawler(RavelSpider, {"FILES_STORE": str(tmp_path)})
    crawler.spider = crawler._create_spider()
    pipe = VerifiedFilesPipeline.from_crawler(crawler)
    pipe.open_spider()
    return pipe


def uptodate(pipeline, item: AudioFile):
    request = pipeline.get_media_requests(item, pipeline.spiderinfo)[0]
    return asyncio.run(pipeline.media_to_download(request, pipeline.spiderinfo, item=item))


def test_a_stored_file_is_up_to_date_only_if_its_md5_matches(pipeline, tmp_path):
    item = audio_file()
    assert uptodate(pipeline, item) is None
    (tmp_path / "item").mkdir()
    (tmp_path / "item" / item.name).write_bytes(BODY[:-1] + b"!")
    assert uptodate(pipeline, item) is None
    (tmp_path / "item" / item.name).write_bytes(BODY)
    assert uptodate(pipeline, item)["status"] == "uptodate"
    assert pipeline.crawler.stats.get_value("ravel/files_uptodate") == 1


def test_a_stored_file_is_checked_with_the_sha1_where_listed(pipeline, tmp_path):
    sha1 = hashlib.sha1(BODY).hexdigest()
    (tmp_path / "item").mkdir()
    (tmp_path / "item" / "01 Ondine.mp3").write_bytes(BODY)
    found = uptodate(pipeline, audio_file(sha1=sha1))
    assert (found["checksum_type"], found["checksum"]) == ("sha1", sha1)
    # The md5 matches, the listed sha1 does not: the sha1 decides, the copy is stale.
    assert uptodate(pipeline, audio_file(sha1="0" * 40)) is None
    found = uptodate(pipeline, audio_file())  # no sha1 listed: the md5
    assert (found["checksum_type"], found["checksum"]) == ("md5", MD5)


def test_mismatches_name_both_sides():
    item = audio_file()
    assert mismatch(item, len(BODY), MD5) is None
    assert "archive.org lists 8000" in mismatch(item, 7, MD5)
    wrong = mismatch(item, len(BODY), "0" * 32)
    assert MD5 in wrong and "0" * 32 in wrong
    sha1 = hashlib.sha1(BODY).hexdigest()
    with_sha1 = audio_file(sha1=sha1)
    assert mismatch(with_sha1, len(BODY), sha1) is None
    wrong = mismatch(with_sha1, len(BODY), MD5)  # the sha1 is compared
    assert wrong.startswith("sha1 mismatch") and sha1 in wrong
    assert mismatch(audio_file(md5=None, size=None), 1, "x") is None


def test_media_requests_share_the_slot_of_their_host(pipeline):
    request = pipeline.get_media_requests(audio_file(), pipeline.spiderinfo)[0]
    assert request.meta["download_slot"] == "127.0.0.1"
    assert request.meta["ravel_name"] == "01 Ondine.mp3"


def test_names_differing_only_in_case_are_refused_once_seen():
    claims = NameClaims()
    claims.claim("item", "Case.mp3")
    claims.claim("item", "Case.mp3")  # the same file again is fine
    with pytest.raises(UnsafeName, match="only in case"):
        claims.claim("item", "case.mp3")


@pytest.mark.parametrize(
    ("char", "why"),
    [
        ("\x85", "control"),  # NEL
        ("\x9b", "control"),  # CSI, a C1 control
        ("\x1b", "control"),  # ESC
        ("\u2028", "U+2028"),  # line separator
        ("\u2029", "U+2029"),  # paragraph separator
        ("\u202e", "U+202E"),  # right-to-left override
        ("\u202a", "U+202A"),
        ("\u2066", "U+2066"),  # left-to-right isolate
        ("\u2069", "U+2069"),
        ("\u200e", "U+200E"),  # left-to-right mark
        ("\u200f", "U+200F"),
        ("\u061c", "U+061C"),  # Arabic letter mark, a bidi control too
        ("\ud800", "surrogate"),
    ],
)
def test_names_with_invisible_layout_characters_are_refused(char, why):
    with pytest.raises(UnsafeName, match=re.escape(why)):
        safe_relative_path("item", f"evil{char}3pm.mp3")


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=300))
def test_any_name_is_refused_or_stays_a_plain_path_inside_its_folder(name):
    try:
        path = safe_relative_path("item", name)
    except UnsafeName as exc:
        assert str(exc)  # a reason a person can read
        return
    assert path == f"item/{name}"
    # Nothing that breaks or reorders a line; other unprintable text is escaped when logged.
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name)
    assert INVISIBLE_LAYOUT.isdisjoint(name)
    components = name.split("/")
    assert all(c not in ("", ".", "..") and len(c.encode()) <= 255 for c in components)
    assert "\\" not in name and not name.startswith("/")


def test_shown_escapes_only_what_could_forge_a_line():
    assert shown("01 Ondine é #%+.mp3") == "01 Ondine é #%+.mp3"
    forged = "a.mp3\n[INFO]\t2026-01-01 00:00:00\t[main finished] 7 downloaded"
    assert "\n" not in shown(forged) and shown(forged) == repr(forged)
    for char in "\x1b\x85\u2028\u202e":
        assert shown(f"x{char}y") == repr(f"x{char}y")


def test_a_stored_file_listed_without_md5_is_checked_by_its_size(pipeline, tmp_path):
    item = audio_file(md5=None)
    (tmp_path / "item").mkdir()
    (tmp_path / "item" / item.name).write_bytes(BODY[:100])  # truncated
    assert uptodate(pipeline, item) is None
    (tmp_path / "item" / item.name).write_bytes(BODY)
    assert uptodate(pipeline, item)["status"] == "uptodate"
    # Nothing to check it against: fetched again.
    assert uptodate(pipeline, audio_file(md5=None, size=None)) is None


def test_an_item_failed_by_the_spider_is_not_downloaded(pipeline):
    item = audio_file(error="archive.org lists it twice with different md5s")
    done = asyncio.run(pipeline.process_item(item))
    assert done.files == [] and done.error == "archive.org lists it twice with different md5s"
    assert pipeline.crawler.stats.get_value("ravel/files_failed") == 1


def store_response(pipeline, item: AudioFile, body: bytes, flags: list[str] | None = None):
    request = pipeline.get_media_requests(item, pipeline.spiderinfo)[0]
    response = Response(request.url, status=200, body=body, flags=flags or [])
    return asyncio.run(pipeline.media_downloaded(response, request, pipeline.spiderinfo, item=item))


@pytest.fixture
def no_retry_pipeline(tmp_path):
    crawler = get_crawler(RavelSpider, {"FILES_STORE": str(tmp_path), "RAVEL_VERIFY_RETRIES": 0})
    crawler.spider = crawler._create_spider()
    pipe = VerifiedFilesPipeline.from_crawler(crawler)
    pipe.open_spider()
    return pipe


def test_a_regenerated_file_whose_md5_differs_is_stored_unverified(no_retry_pipeline, tmp_path):
    item = audio_file("item_meta.xml", md5="0" * 32, size=None, regenerated=True)
    result = store_response(no_retry_pipeline, item, BODY)
    assert result["status"] == "unverified" and result["checksum"] == MD5
    assert (tmp_path / "item" / "item_meta.xml").read_bytes() == BODY
    assert no_retry_pipeline.crawler.stats.get_value("ravel/files_unverified") == 1
    ordinary = audio_file("other.xml", md5="0" * 32, size=None)
    with pytest.raises(FileException, match="md5 mismatch"):
        store_response(no_retry_pipeline, ordinary, BODY)


def test_a_partial_body_is_refused_only_when_nothing_can_check_it(no_retry_pipeline):
    unknown = audio_file("unknown.mp3", md5=None, size=None)
    with pytest.raises(FileException, match="may be incomplete"):
        store_response(no_retry_pipeline, unknown, BODY, flags=["partial"])
    sized = audio_file("sized.mp3", md5=None)
    assert store_response(no_retry_pipeline, sized, BODY, ["partial"])["status"] == "unverified"
    listed = audio_file("listed.mp3")
    assert store_response(no_retry_pipeline, listed, BODY, ["partial"])["status"] == "downloaded"


def test_a_path_too_long_is_that_files_problem_not_the_stores(pipeline, tmp_path):
    name = "/".join(["x" * 250] * 20)
    with pytest.raises(OSError) as raised:
        pipeline.store.persist_file(f"item/{name}", BytesIO(BODY), info=None)
    assert is_name_problem(raised.value)
    failure = pipeline.write_failed(raised.value)
    assert "cannot store it under its name: File name too long" in str(failure)
    assert pipeline.store_error is None  # the crawl goes on
    assert not is_name_problem(OSError(errno.ENOSPC, "No space left on device"))


def test_stored_files_get_the_umask_whichever_way_they_are_written(tmp_path):
    expected = 0o666 & ~current_umask()
    store = AtomicFSFilesStore(str(tmp_path))
    store.persist_file("item/a.mp3", BytesIO(BODY), info=None)
    source = os.open(tmp_path / "item" / "a.mp3", os.O_RDONLY)
    try:
        store.copy_part(source, tmp_path / "item" / "copy.mp3")
    finally:
        os.close(source)
    for name in ("a.mp3", "copy.mp3"):
        assert stat.S_IMODE((tmp_path / "item" / name).stat().st_mode) == expected, name


def test_part_files_nobody_took_are_deleted_when_the_crawl_closes(pipeline):
    request = pipeline.get_media_requests(audio_file(), pipeline.spiderinfo)[0]
    assert pipeline.part_files.targets == {request.meta[STREAM_META]}
    pipeline.close_spider()
    assert pipeline.part_files.targets == set()
    assert pipeline.part_files.release(request) is None


def test_a_file_not_downloaded_leaves_no_stream_target_behind(pipeline, tmp_path):
    """Up to date, or planned in a dry run: nothing will stream to its target, which is
    let go at once, not kept to the crawl's end (a re-run's memory grew with every file)."""
    assert uptodate(pipeline, audio_file()) is None  # to download: its target is kept
    assert len(pipeline.part_files.targets) == 1
    pipeline.part_files.targets.clear()
    (tmp_path / "item").mkdir()
    (tmp_path / "item" / "01 Ondine.mp3").write_bytes(BODY)
    assert uptodate(pipeline, audio_file())["status"] == "uptodate"
    assert pipeline.part_files.targets == set()
    pipeline.book.dry_run = True
    assert uptodate(pipeline, audio_file(name="02 Le Gibet.mp3"))["status"] == "planned"
    assert pipeline.part_files.targets == set()


@pytest.mark.parametrize(
    ("size", "named"),
    [(NAMED_PART_MIN_SIZE - 1, False), (NAMED_PART_MIN_SIZE, True), (None, True)],
)
def test_only_a_file_listed_at_least_64_kib_streams_to_a_named_part(pipeline, size, named):
    request = pipeline.get_media_requests(audio_file(size=size), pipeline.spiderinfo)[0]
    assert (request.meta[STREAM_META].place is not None) is named
    pipeline.close_spider()
