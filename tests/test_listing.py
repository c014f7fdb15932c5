"""End to end: listing an item when archive.org's answers are malformed, restricted or odd.

Each test runs ``scrapy crawl ravel`` against the fake archive.org, most with its "hostile"
mode (tests/fakearchive/hostile.py) or one of its real-shaped items.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakearchive import FakeArchive, file_bytes, get_item, md5_of, sha1_of
from tests.fakearchive.catalog import COLLECTION_ID, MIXED_ID, REGENERATED_ID, SAMPLES_ID
from tests.fakearchive.hostile import FORGED
from tests.support.crawl import RAVEL, RAVEL_MP3S, Crawl, scrapy_crawl, stored_files


def crawl(archive: FakeArchive, store: Path, *args: str, **settings: object) -> Crawl:
    return scrapy_crawl(*args, store=store, RAVEL_ORIGIN=archive.archive, **settings)


def downloads(archive: FakeArchive) -> list[str]:
    """Decoded names of every /download request the archive host received."""
    paths = [e["path"] for e in archive.stats()["log"] if e["host"] == "127.0.0.1"]
    return [p for p in paths if p.startswith("/download/")]


def assert_ravel_mirrored(result: Crawl, store: Path) -> None:
    assert result.returncode == 0, result.log
    assert stored_files(store) == {f"{RAVEL}/{n}": file_bytes(RAVEL, n) for n in RAVEL_MP3S}
    assert "Traceback" not in result.log
    assert "[main finished] 5 downloaded" in result.log


def warnings(result: Crawl) -> list[str]:
    return [line for line in result.log.splitlines() if line.startswith("[WARNING]")]


# --- 13.1: the details page is a courtesy -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "warning"),
    [
        ("details_octet_stream", "is not HTML ('application/octet-stream')"),
        ("details_json", "is not HTML ('application/json')"),
        ("playlist_sources_5", None),  # a malformed playlist is left out, silently
    ],
)
def test_a_details_page_that_cant_be_read_changes_nothing(archive, tmp_path, kind, warning):
    archive.configure(hostile={RAVEL: [kind]})
    result = crawl(archive, tmp_path, "-a", f"item={RAVEL}")
    assert_ravel_mirrored(result, tmp_path)
    assert not result.errors
    if warning:
        assert any(warning in line for line in warnings(result)), result.log


# --- 13.1: /metadata is authoritative -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("metadata_oops", '"metadata" is str, not an object'),
        ("metadata_deep", "nested too deeply"),
        ("metadata_not_json", "is not JSON"),
    ],
)
def test_metadata_that_cant_be_read_is_an_error_not_a_fallback(archive, tmp_path, kind, reason):
    archive.configure(hostile={RAVEL: [kind]})
    result = crawl(archive, tmp_path, "-a", f"item={RAVEL}")
    assert result.returncode == 1
    assert len(result.errors) == 1, result.errors
    assert f"cannot read the file list of {RAVEL!r}" in result.errors[0]
    assert reason in result.errors[0]
    assert "Traceback" not in result.log
    assert "checksums can't be verified" not in result.log  # no fallback to page links
    assert downloads(archive) == [] and stored_files(tmp_path) == {}


@pytest.mark.slow
def test_a_null_entry_skips_that_entry_not_the_item(archive, tmp_path):
    archive.configure(hostile={RAVEL: ["metadata_null_entry"]})
    result = crawl(archive, tmp_path, "-a", f"item={RAVEL}")
    assert_ravel_mirrored(result, tmp_path)
    skipped = [line for line in warnings(result) if "skipped a file entry" in line]
    assert len(skipped) == 1 and "not an object: 'None'" in skipped[0]


@pytest.mark.slow
def test_a_name_with_a_lone_surrogate_is_skipped_and_logged_escaped(archive, tmp_path):
    archive.configure(hostile={RAVEL: ["metadata_surrogate_name"]})
    result = crawl(archive, tmp_path, "-a", f"item={RAVEL}")
    assert_ravel_mirrored(result, tmp_path)
    skipped = [line for line in warnings(result) if "skipped a file entry" in line]
    assert len(skipped) == 1 and "'\\ud800bad\\n[INFO]\\t2026" in skipped[0], skipped
    # The forged summary line and the ANSI escape never reach the log raw.
    assert FORGED.splitlines()[1] not in result.log.splitlines()
    assert "\x1b" not in result.log


@pytest.mark.slow
def test_a_malformed_size_keeps_the_checksum_check(archive, tmp_path):
    first = RAVEL_MP3S[0]
    archive.configure(
        hostile={RAVEL: ["metadata_bad_size"]},
        faults=[{"match": first, "kind": "corrupt", "times": 10}],
    )
    manifest = tmp_path / "files.jsonl"
    result = crawl(archive, tmp_path / "store", "-a", f"item={RAVEL}", "-O", str(manifest))
    assert result.returncode == 1
    assert any(f"{first!r}: ignored its size '²'" in line for line in warnings(result))
    assert "(no checksums)" not in result.log
    # The corrupt copy is caught by its sha1, so it is never stored; the others are.
    failed = [line for line in result.errors if first in line]
    assert len(failed) == 1 and "sha1 mismatch" in failed[0] and sha1_of(RAVEL, first) in failed[0]
    assert sorted(stored_files(tmp_path / "store")) == [f"{RAVEL}/{n}" for n in RAVEL_MP3S[1:]]
    items = {i["name"]: i for i in map(json.loads, manifest.read_text().splitlines())}
    assert items[first]["size"] is None and items[first]["md5"] == md5_of(RAVEL, first)


# --- 13.8: a name listed twice ------------------------------------------------------------


@pytest.mark.slow
def test_a_name_listed_twice_alike_is_one_file(archive, tmp_path):
    archive.configure(hostile={RAVEL: ["metadata_duplicate_same"]})
    result = crawl(archive, tmp_path, "-a", f"item={RAVEL}")
    assert_ravel_mirrored(result, tmp_path)
    assert f"[item] {RAVEL}: 5 files" in result.log
    assert len([p for p in downloads(archive) if p.endswith(RAVEL_MP3S[0])]) == 1


@pytest.mark.slow
def test_a_name_listed_twice_with_different_md5s_fails_with_both(archive, tmp_path):
    # Needs the pipeline to fail an AudioFile whose ``error`` is set (the "store" branch).
    first = RAVEL_MP3S[0]
    archive.configure(hostile={RAVEL: ["metadata_duplicate_md5"]})
    result = crawl(archive, tmp_path, "-a", f"item={RAVEL}")
    assert result.returncode == 1
    assert f"[item] {RAVEL}: 5 files" in result.log
    failed = [line for line in result.errors if first in line]
    assert len(failed) == 1, result.errors
    assert md5_of(RAVEL, first) in failed[0] and "0" * 32 in failed[0]
    assert sorted(stored_files(tmp_path)) == [f"{RAVEL}/{n}" for n in RAVEL_MP3S[1:]]
    assert not [p for p in downloads(archive) if p.endswith(first)]


# --- issue 9: restricted items, collections, regenerated files, 78rpm ----------------------


@pytest.mark.slow
def test_a_samples_only_item_is_an_error_that_names_the_samples(archive, tmp_path):
    result = crawl(archive, tmp_path, "-a", f"item={SAMPLES_ID}")
    assert result.returncode == 1
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert f"the recordings of {SAMPLES_ID!r} are access-restricted" in error
    assert 'only 30-second samples are public (-a formats="MP3 Sample" takes them)' in error
    assert downloads(archive) == [] and stored_files(tmp_path) == {}


@pytest.mark.slow
def test_samples_asked_for_download_normally(archive, tmp_path):
    result = crawl(archive, tmp_path, "-a", f"item={SAMPLES_ID}", "-a", "formats=MP3 Sample")
    assert result.returncode == 0, result.log
    samples = [f.name for f in get_item(SAMPLES_ID).files if f.format == "MP3 Sample"]
    assert len(samples) == 4
    expected = {f"{SAMPLES_ID}/{n}": file_bytes(SAMPLES_ID, n) for n in samples}
    assert stored_files(tmp_path) == expected


@pytest.mark.slow
def test_a_mixed_item_downloads_the_public_recordings_and_warns_once(archive, tmp_path):
    result = crawl(archive, tmp_path, "-a", f"item={MIXED_ID}")
    assert result.returncode == 0, result.log
    item = get_item(MIXED_ID)
    public = [f.name for f in item.files if f.format == "VBR MP3" and not f.private]
    private = {f.name for f in item.files if f.private}
    assert len(public) == 2
    assert sorted(stored_files(tmp_path)) == sorted(f"{MIXED_ID}/{n}" for n in public)
    restricted = [line for line in warnings(result) if "access-restricted" in line]
    assert len(restricted) == 1 and "2 files of" in restricted[0], restricted
    assert "30-second samples" in restricted[0]
    # Private files are never requested.
    assert not [p for p in downloads(archive) if any(p.endswith(n) for n in private)]


@pytest.mark.slow
def test_a_collection_named_as_an_item_is_an_error(archive, tmp_path):
    result = crawl(archive, tmp_path, "-a", f"item={COLLECTION_ID}")
    assert result.returncode == 1
    assert len(result.errors) == 1 and f"{COLLECTION_ID!r} is a collection" in result.errors[0]
    assert f"-a url={archive.archive}/details/<item>" in result.errors[0]  # where it looked
    assert downloads(archive) == []


@pytest.mark.slow
def test_files_archive_org_regenerates_are_stored_unverified(archive, tmp_path):
    # _files.xml lists an md5 that can't match; _meta.xml and _reviews.xml were rewritten.
    manifest = tmp_path / "files.jsonl"
    args = ("-a", f"item={REGENERATED_ID}", "-a", "glob=*", "-O", str(manifest))
    result = crawl(archive, tmp_path / "store", *args)
    assert result.returncode == 0, result.log
    names = [f.name for f in get_item(REGENERATED_ID).files]
    assert sorted(stored_files(tmp_path / "store")) == sorted(
        f"{REGENERATED_ID}/{n}" for n in names
    )
    items = {i["name"]: i for i in map(json.loads, manifest.read_text().splitlines())}
    assert items[f"{REGENERATED_ID}_files.xml"]["md5"] is None
    assert all(items[f"{REGENERATED_ID}{s}"]["regenerated"] for s in ("_files.xml", "_meta.xml"))
    assert {i["files"][0]["status"] for i in items.values() if i["regenerated"]} == {"unverified"}
    warnings = [line for line in result.log.splitlines() if line.startswith("[WARNING]")]
    assert len(warnings) == 1 and "[unverified] 3 files" in warnings[0], warnings  # one, at the end


@pytest.mark.slow
def test_a_78rpm_item_takes_the_mp3_derived_from_the_wave(archive, tmp_path):
    result = crawl(archive, tmp_path, "-a", "item=rpm78-like")
    assert result.returncode == 0, result.log
    mp3 = [f.name for f in get_item("rpm78-like").files if f.format == "VBR MP3"]
    assert sorted(stored_files(tmp_path)) == [f"rpm78-like/{mp3[0]}"]


def test_the_fallback_to_page_links_goes_through_the_fleet_queue():
    """The details page fetched again when /metadata is unavailable is a fleet entry too."""
    from scrapy.utils.test import get_crawler
    from twisted.python.failure import Failure

    from ravelscraper.archive.metadata import ItemLocation
    from ravelscraper.distributed.origins import AllowedOrigins
    from ravelscraper.distributed.serializer import decode, dumps
    from ravelscraper.spiders.ravel import RavelSpider

    origin = "http://127.0.0.1:8080"
    spider = RavelSpider.from_crawler(get_crawler(RavelSpider, {"RAVEL_ORIGIN": origin}))
    location = ItemLocation.on(origin, "ravel")
    failure = Failure(ConnectionError("down"))
    failure.request = spider.metadata_request(location)  # type: ignore[attr-defined]
    (fallback,) = spider.metadata_failed(failure)
    request = decode(dumps(fallback.to_dict(spider=spider)), spider, AllowedOrigins([origin]))
    assert request.url == location.details_url and request.dont_filter
    assert request.callback == spider.parse_page_links
    assert request.errback == spider.page_links_failed
    assert request.cb_kwargs == {"item": location}
