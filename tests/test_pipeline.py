"""Unit tests of the files pipeline and its store: plain and fast, no network."""

from __future__ import annotations

import asyncio
import hashlib
from io import BytesIO

import pytest
from scrapy.utils.test import get_crawler

from ravelscraper.items import AudioFile
from ravelscraper.pipelines import VerifiedFilesPipeline
from ravelscraper.spiders.ravel import RavelSpider
from ravelscraper.stores import AtomicFSFilesStore, UnsafeName, safe_relative_path

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


def test_mismatches_name_both_sides():
    item = audio_file()
    assert VerifiedFilesPipeline.mismatch(item, len(BODY), MD5) is None
    assert "archive.org lists 8000" in VerifiedFilesPipeline.mismatch(item, 7, MD5)
    wrong = VerifiedFilesPipeline.mismatch(item, len(BODY), "0" * 32)
    assert MD5 in wrong and "0" * 32 in wrong
    assert VerifiedFilesPipeline.mismatch(audio_file(md5=None, size=None), 1, "x") is None


def test_media_requests_share_the_slot_of_their_host(pipeline):
    request = pipeline.get_media_requests(audio_file(), pipeline.spiderinfo)[0]
    assert request.meta["download_slot"] == "127.0.0.1"
    assert request.meta["ravel_name"] == "01 Ondine.mp3"


def test_names_differing_only_in_case_are_refused_once_seen(pipeline):
    pipeline.claim_path(audio_file("Case.mp3"))
    pipeline.claim_path(audio_file("Case.mp3"))  # the same file again is fine
    with pytest.raises(UnsafeName, match="only in case"):
        pipeline.claim_path(audio_file("case.mp3"))
