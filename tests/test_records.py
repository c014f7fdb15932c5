"""The verification records (ravelscraper.pipelines.records): the file record (an extended attribute
set before the rename) and the item record (a JSON file written with a rename)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from io import BytesIO
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from ravelscraper import settings as project_settings
from ravelscraper.checks import settings_problem
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.files import VerifiedFilesPipeline
from ravelscraper.pipelines.records import (
    MAX_ITEM_RECORD,
    XATTR,
    FileRecord,
    ItemRecords,
    local_root,
    quick_match,
    read_record,
    write_record,
    xattrs_supported,
)
from ravelscraper.spiders.ravel import RavelSpider
from ravelscraper.stores.local import AtomicFSFilesStore
from tests.fakearchive import file_bytes, sha1_of
from tests.fakearchive.server import KNOBS
from tests.support.crawl import (
    RAVEL,
    RAVEL_MP3S,
    Crawl,
    scrapy_crawl,
    storage_get_paths,
)

BODY = b"a verified body\n"
MD5 = hashlib.md5(BODY).hexdigest()


def stored_with_record(tmp_path: Path, name: str = "a.mp3") -> Path:
    """A file stored the way the local store does it: written, recorded, then renamed."""
    part = tmp_path / ".ravel-x.part"
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, BODY)
        assert write_record(fd, "md5", MD5)
    finally:
        os.close(fd)
    target = tmp_path / name
    os.replace(part, target)
    return target


@pytest.fixture(autouse=True)
def needs_xattrs(tmp_path: Path) -> None:
    if not xattrs_supported(tmp_path):
        pytest.skip("tmp_path keeps no extended attributes")


def test_the_record_set_on_the_part_file_survives_the_rename(tmp_path: Path) -> None:
    target = stored_with_record(tmp_path)
    record = read_record(target)
    found = target.stat()
    assert record == FileRecord("md5", MD5, len(BODY), found.st_mtime_ns)
    assert quick_match(record, found, "md5", MD5, len(BODY))


def test_a_changed_mtime_or_size_means_a_rehash(tmp_path: Path) -> None:
    target = stored_with_record(tmp_path)
    record = read_record(target)
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 1))  # rewritten in place, same size
    assert not quick_match(record, target.stat(), "md5", MD5, len(BODY))
    target.write_bytes(BODY + b"x")  # appended: both differ
    assert not quick_match(record, target.stat(), "md5", MD5, None)


def test_a_record_whose_digest_is_not_the_listed_one_is_ignored(tmp_path: Path) -> None:
    target = stored_with_record(tmp_path)
    record, found = read_record(target), target.stat()
    assert not quick_match(record, found, "md5", "0" * 32, len(BODY))  # archive.org changed it
    assert not quick_match(record, found, "sha1", MD5, len(BODY))  # another algorithm
    assert not quick_match(record, found, "md5", None, len(BODY))  # nothing listed
    assert not quick_match(record, found, "md5", MD5, len(BODY) + 1)  # another listed size
    assert not quick_match(None, found, "md5", MD5, len(BODY))  # no record


def test_a_corrupt_file_with_forged_size_and_mtime_passes_the_quick_check(
    tmp_path: Path,
) -> None:
    """The documented limit, rsync's: bytes rewritten with the mtime restored are not seen
    (RAVEL_RECHECK=full sees them)."""
    target = stored_with_record(tmp_path)
    before = target.stat()
    target.write_bytes(b"X" * len(BODY))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert quick_match(read_record(target), target.stat(), "md5", MD5, len(BODY))


@given(st.binary(max_size=80))
def test_a_malformed_record_never_parses_into_a_trusted_one(raw: bytes) -> None:
    record = FileRecord.parse(raw)
    assert record is None or record.encode() == raw  # only exactly what write_record writes


@given(st.sampled_from(["md5", "sha1"]), st.integers(0, 2**63), st.integers(0, 2**63))
def test_a_record_reads_back_as_written(algorithm: str, size: int, mtime_ns: int) -> None:
    digest = hashlib.new(algorithm, str(size).encode()).hexdigest()
    record = FileRecord(algorithm, digest, size, mtime_ns)
    assert FileRecord.parse(record.encode()) == record


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"v1 md5",
        f"v2 md5 {MD5} 1 2".encode(),
        f"v1 crc32 {MD5} 1 2".encode(),
        f"v1 md5 {MD5.upper()} 1 2".encode(),
        f"v1 md5 {MD5} -1 2".encode(),
        f"v1 md5 {MD5} 01 2".encode(),
        f"v1 sha1 {MD5} 1 2".encode(),
    ],
)
def test_records_that_are_not_this_versions_are_ignored(raw: bytes) -> None:
    assert FileRecord.parse(raw) is None


def test_without_xattr_support_nothing_is_recorded_and_the_file_is_rehashed(
    tmp_path: Path,
) -> None:
    refused = OSError(95, "Operation not supported")
    with mock.patch("os.setxattr", side_effect=refused):
        assert not xattrs_supported(tmp_path)
        fd = os.open(tmp_path / "a.mp3", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, BODY)
            assert not write_record(fd, "md5", MD5)  # no exception: the file is stored anyway
        finally:
            os.close(fd)
    target = tmp_path / "a.mp3"
    assert read_record(target) is None
    assert not quick_match(read_record(target), target.stat(), "md5", MD5, len(BODY))
    with pytest.raises(OSError):
        os.getxattr(target, XATTR)


def test_local_root_only_for_the_local_store() -> None:
    assert local_root("downloads") == Path("downloads")
    assert local_root("file:///srv/m") == Path("/srv/m")
    assert local_root("s3://bucket/p") is None
    assert local_root("ftp://host/f") is None


def records(tmp_path: Path, **settings: object) -> ItemRecords:
    values = Settings()
    values.setmodule(project_settings)
    values.setdict({"FILES_STORE": str(tmp_path), **settings})
    return ItemRecords.from_settings(values)


def test_an_item_recorded_complete_is_unchanged_until_a_file_or_its_state_changes(
    tmp_path: Path,
) -> None:
    item = tmp_path / "item1"
    item.mkdir()
    stored_with_record(item, "a.mp3")
    stored_with_record(item, "b.mp3")
    kept = records(tmp_path)
    assert not kept.unchanged("item1", "fp1", "mp3")  # no record yet
    kept.complete("item1", "fp1", "mp3", files=["a.mp3", "b.mp3"])
    assert kept.unchanged("item1", "fp1", "mp3")
    assert not kept.unchanged("item1", "fp2", "mp3")  # archive.org says it changed
    assert not kept.unchanged("item1", "fp1", "flac")  # another selection
    assert not kept.unchanged("item2", "fp1", "mp3")
    assert not records(tmp_path, RAVEL_RECHECK="full").unchanged("item1", "fp1", "mp3")
    os.utime(item / "b.mp3", ns=(0, 12345))  # a file was touched since
    assert not kept.unchanged("item1", "fp1", "mp3")
    kept.complete("item1", "fp1", "mp3", files=["a.mp3", "b.mp3"])
    assert not kept.unchanged("item1", "fp1", "mp3")  # its verification is not of these bytes
    stored_with_record(item, "b.mp3")
    kept.complete("item1", "fp1", "mp3", files=["a.mp3", "b.mp3"])
    assert kept.unchanged("item1", "fp1", "mp3")
    (item / "a.mp3").unlink()  # a file was deleted
    assert not kept.unchanged("item1", "fp1", "mp3")


def test_item_records_are_written_whole_under_dot_ravel(tmp_path: Path) -> None:
    (tmp_path / "item1").mkdir()
    records(tmp_path).complete("item1", "fp1", "mp3", files=[])
    written = list((tmp_path / ".ravel" / "items").iterdir())
    assert [p.name for p in written] == ["item1.json"]  # no temporary file left
    assert json.loads(written[0].read_text())["fingerprint"] == "fp1"


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"v": 1}', b'{"v": 99}'])
def test_an_unreadable_item_record_means_changed(tmp_path: Path, content: bytes) -> None:
    where = tmp_path / ".ravel" / "items"
    where.mkdir(parents=True)
    (where / "item1.json").write_bytes(content)
    assert not records(tmp_path).unchanged("item1", "fp1", "mp3")


def test_only_a_bounded_regular_file_is_read_as_an_item_record(tmp_path: Path) -> None:
    (tmp_path / "item1").mkdir()
    kept = records(tmp_path)
    kept.complete("item1", "fp1", "mp3", files=[])
    where = tmp_path / ".ravel" / "items"
    good = (where / "item1.json").read_bytes()
    assert kept.unchanged("item1", "fp1", "mp3")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(good)
    (where / "item1.json").unlink()
    (where / "item1.json").symlink_to(elsewhere)  # a link, even to a good record
    assert kept.read("item1") is None
    for target in ("/dev/zero", "/dev/null"):
        (where / "item1.json").unlink()
        (where / "item1.json").symlink_to(target)
        assert kept.read("item1") is None
    (where / "item1.json").unlink()
    os.mkfifo(where / "item1.json")  # never blocks
    assert kept.read("item1") is None
    (where / "item1.json").unlink()
    (where / "item1.json").mkdir()
    assert kept.read("item1") is None
    (where / "item1.json").rmdir()
    padded = good[:-1] + b" " * MAX_ITEM_RECORD + b"}"  # valid JSON, too large
    (where / "item1.json").write_bytes(padded)
    assert kept.read("item1") is None
    (where / "item1.json").write_bytes(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    assert kept.read("item1") is None  # RecursionError: no record
    (where / "item1.json").write_bytes(good)
    assert kept.unchanged("item1", "fp1", "mp3")


def test_no_item_record_in_a_dry_run_on_another_store_or_for_odd_names(tmp_path: Path) -> None:
    (tmp_path / "item1").mkdir()
    records(tmp_path, RAVEL_DRY_RUN=True).complete("item1", "fp1", "mp3", files=[])
    assert not (tmp_path / ".ravel").exists()
    s3 = records(tmp_path, FILES_STORE="s3://bucket/p")
    s3.complete("item1", "fp1", "mp3")
    assert not s3.unchanged("item1", "fp1", "mp3")
    plain = records(tmp_path)
    plain.complete("../x", "fp1", "mp3")
    plain.complete(".ravel", "fp1", "mp3")
    assert not (tmp_path / ".ravel").exists()


def test_a_failed_item_record_write_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".ravel").write_text("a file in the way")
    records(tmp_path).complete("item1", "fp1", "mp3", files=[])
    assert any("cannot record item" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", ["quick", "full"])
def test_recheck_accepts_quick_and_full(value: str) -> None:
    values = Settings()
    values.setmodule(project_settings)
    values.set("RAVEL_RECHECK", value)
    assert settings_problem(values) is None


def test_recheck_refuses_anything_else_in_one_line() -> None:
    values = Settings()
    values.setmodule(project_settings)
    values.set("RAVEL_RECHECK", "fast")
    assert settings_problem(values) == (
        "setting RAVEL_RECHECK='fast' is not valid: expected 'quick' or 'full'"
    )


# --- end to end: the quick check in real crawls -------------------------------------------


@pytest.fixture(scope="module")
def first_mirror(fake_archive, tmp_path_factory) -> tuple[Crawl, Path]:
    """The item's first crawl into a store of its own, once for the module's end-to-end tests:
    each test works on a copy (:func:`mirrored`)."""
    fake_archive.configure(dict.fromkeys(KNOBS))  # no faults left by an earlier test
    fake_archive.reset()
    store = tmp_path_factory.mktemp("first-mirror") / "store"
    return scrapy_crawl("-a", f"url={fake_archive.details_url(RAVEL)}", store=store), store


def mirrored(first_mirror: tuple[Crawl, Path], tmp_path: Path) -> Path:
    """A copy of the first crawl's store in ``tmp_path``, as the crawl left it: the same bytes,
    nanosecond mtimes and extended attributes (the records), item records included."""
    first, store = first_mirror
    assert first.returncode == 0, first.log
    return Path(shutil.copytree(store, tmp_path / "store", copy_function=shutil.copy2))


@pytest.mark.slow
def test_a_rerun_trusts_recorded_files_and_rehashes_only_what_changed(
    archive, tmp_path, first_mirror
):
    store = mirrored(first_mirror, tmp_path)
    url = f"url={archive.details_url(RAVEL)}"
    for name in RAVEL_MP3S:  # each stored file carries its record: the listed sha1
        record = read_record(store / RAVEL / name)
        assert record is not None and record.algorithm == "sha1"
        assert record.digest == sha1_of(RAVEL, name)

    archive.reset()
    again = scrapy_crawl("-a", url, store=store)
    assert again.returncode == 0, again.log
    assert again.stat("ravel/files_quick_checked") == len(RAVEL_MP3S)
    assert again.stat("ravel/files_rehashed") == 0  # no stored byte was read
    assert storage_get_paths(archive) == []

    archive.reset()
    full = scrapy_crawl("-a", url, store=store, RAVEL_RECHECK="full")
    assert full.returncode == 0, full.log
    assert full.stat("ravel/files_rehashed") == len(RAVEL_MP3S)
    assert full.stat("ravel/files_quick_checked") == 0
    assert storage_get_paths(archive) == []

    # Rewritten in place with the same size: its mtime moved, so it is hashed and replaced.
    altered = store / RAVEL / RAVEL_MP3S[1]
    altered.write_bytes(b"\0" * altered.stat().st_size)
    archive.reset()
    repaired = scrapy_crawl("-a", url, store=store)
    assert repaired.returncode == 0, repaired.log
    assert repaired.stat("ravel/files_quick_checked") == len(RAVEL_MP3S) - 1
    assert repaired.stat("ravel/files_rehashed") == 1
    assert repaired.stat("ravel/files_downloaded") == 1
    assert altered.read_bytes() == file_bytes(RAVEL, RAVEL_MP3S[1])
    assert read_record(altered) == FileRecord(
        "sha1", sha1_of(RAVEL, RAVEL_MP3S[1]), altered.stat().st_size, altered.stat().st_mtime_ns
    )


@pytest.mark.slow
def test_a_file_corrupted_with_its_mtime_restored_is_caught_only_by_a_full_recheck(
    archive, tmp_path, first_mirror
):
    """rsync's limit, documented: the quick check trusts size and mtime."""
    store = mirrored(first_mirror, tmp_path)
    url = f"url={archive.details_url(RAVEL)}"
    forged = store / RAVEL / RAVEL_MP3S[0]
    before = forged.stat()
    forged.write_bytes(b"\0" * before.st_size)
    os.utime(forged, ns=(before.st_atime_ns, before.st_mtime_ns))

    archive.reset()
    quick = scrapy_crawl("-a", url, store=store)
    assert quick.returncode == 0, quick.log
    assert storage_get_paths(archive) == [] and forged.read_bytes() == b"\0" * before.st_size

    full = scrapy_crawl("-a", url, store=store, RAVEL_RECHECK="full")
    assert full.returncode == 0, full.log
    assert full.stat("ravel/files_downloaded") == 1
    assert forged.read_bytes() == file_bytes(RAVEL, RAVEL_MP3S[0])


@pytest.mark.slow
def test_a_store_made_before_records_becomes_quick_after_one_run(archive, tmp_path, first_mirror):
    store = mirrored(first_mirror, tmp_path)
    url = f"url={archive.details_url(RAVEL)}"
    for name in RAVEL_MP3S:
        os.removexattr(store / RAVEL / name, XATTR)
    rehashed = scrapy_crawl("-a", url, store=store)
    assert rehashed.stat("ravel/files_rehashed") == len(RAVEL_MP3S), rehashed.log
    quick = scrapy_crawl("-a", url, store=store)
    assert quick.stat("ravel/files_quick_checked") == len(RAVEL_MP3S), quick.log


def test_a_bad_recheck_value_stops_the_crawl_in_one_line(tmp_path):
    crawl = scrapy_crawl("-a", "item=x", store=tmp_path / "store", RAVEL_RECHECK="fast")
    assert crawl.returncode == 1
    assert len(crawl.errors) == 1 and "Traceback" not in crawl.log
    assert crawl.errors[0].endswith(
        "setting RAVEL_RECHECK='fast' is not valid: expected 'quick' or 'full'"
    )
    assert not (tmp_path / "store").exists()


# --- the local store writes and reads the records ------------------------------------------


def test_every_way_the_store_writes_a_verified_file_records_it(tmp_path: Path) -> None:
    store = AtomicFSFilesStore(str(tmp_path))
    store.persist_file("item/mem.mp3", BytesIO(BODY), info=None, record=("md5", MD5))
    store.persist_file("item/unverified.mp3", BytesIO(BODY), info=None)
    (tmp_path / "item" / "named.part").write_bytes(BODY)
    fd = os.open(tmp_path / "item" / "named.part", os.O_RDWR)
    try:
        store.commit_part(
            fd, tmp_path / "item" / "named.part", "item/named.mp3", record=("md5", MD5)
        )
    finally:
        os.close(fd)
    for linked in (True, False):  # unnamed (O_TMPFILE): linked, or copied where link fails
        fd = os.open(tmp_path / "item", os.O_TMPFILE | os.O_RDWR, 0o644)
        try:
            os.write(fd, BODY)
            refuse = mock.patch("os.link", side_effect=OSError(18, "EXDEV"))
            with contextlib.nullcontext() if linked else refuse:
                store.commit_part(fd, None, f"item/tmp{linked}.mp3", record=("md5", MD5))
        finally:
            os.close(fd)
    for name in ("mem.mp3", "named.mp3", "tmpTrue.mp3", "tmpFalse.mp3"):
        target = tmp_path / "item" / name
        assert quick_match(read_record(target), target.stat(), "md5", MD5, len(BODY)), name
    assert read_record(tmp_path / "item" / "unverified.mp3") is None


def test_stat_file_trusts_a_recorded_file_without_opening_it(tmp_path: Path) -> None:
    store = AtomicFSFilesStore(str(tmp_path))
    store.persist_file("item/a.mp3", BytesIO(BODY), info=None, record=("md5", MD5))
    with mock.patch.object(Path, "open", side_effect=AssertionError("read")):
        found = store.stat_file("item/a.mp3", None, "md5", MD5, len(BODY))
    assert found["quick"] is True and found["checksum"] == MD5
    store.quick = False  # RAVEL_RECHECK=full
    assert store.stat_file("item/a.mp3", None, "md5", MD5, len(BODY))["quick"] is False


def test_a_full_hash_that_matches_records_the_file_unless_records_are_off(tmp_path: Path) -> None:
    store = AtomicFSFilesStore(str(tmp_path))
    store.persist_file("item/a.mp3", BytesIO(BODY), info=None)
    store.keep_records = False  # a dry run
    assert store.stat_file("item/a.mp3", None, "md5", MD5, len(BODY))["quick"] is False
    assert read_record(tmp_path / "item" / "a.mp3") is None
    store.stat_file("item/a.mp3", None, "md5", "f" * 32, len(BODY))  # another digest listed
    assert read_record(tmp_path / "item" / "a.mp3") is None
    store.keep_records = True
    store.stat_file("item/a.mp3", None, "md5", "f" * 32, len(BODY))
    assert read_record(tmp_path / "item" / "a.mp3") is None  # never vouches for a mismatch
    store.stat_file("item/a.mp3", None, "md5", MD5, len(BODY))
    assert read_record(tmp_path / "item" / "a.mp3") is not None
    assert store.stat_file("item/a.mp3", None, "md5", MD5, len(BODY))["quick"] is True


def test_a_record_is_not_written_for_a_file_that_changed_while_it_was_hashed(
    tmp_path: Path,
) -> None:
    target = tmp_path / "a.mp3"
    target.write_bytes(BODY)
    with target.open("rb") as stored:
        before = os.fstat(stored.fileno())
        os.utime(target, ns=(0, before.st_mtime_ns + 1))
        assert not write_record(stored.fileno(), "md5", MD5, before)
    assert read_record(target) is None


def test_an_item_is_recorded_once_all_its_files_ended_verified(tmp_path: Path) -> None:
    crawler = get_crawler(RavelSpider, {"FILES_STORE": str(tmp_path), "RAVEL_RECHECK": "quick"})
    crawler.spider = crawler._create_spider()
    pipe = VerifiedFilesPipeline.from_crawler(crawler)
    (tmp_path / "item").mkdir()
    files = []
    for name, status in (("a.mp3", "downloaded"), ("b.mp3", "uptodate"), ("c.mp3", "failed")):
        stored_with_record(tmp_path / "item", name)
        file = AudioFile(identifier="item", name=name, url=f"http://x/{name}", md5=MD5)
        # The fields coll adds to AudioFile (set this way until they are merged).
        for field, value in (("item_fingerprint", "fp"), ("item_files", 2), ("selection", "mp3")):
            setattr(file, field, value)
        file.files = [] if status == "failed" else [{"status": status}]
        files.append(file)
    records = ItemRecords.from_settings(crawler.settings)
    asyncio.run(pipe.book.file_ended(files[2]))  # a failed file counts for nothing
    asyncio.run(pipe.book.file_ended(files[0]))
    assert not records.unchanged("item", "fp", "mp3")
    asyncio.run(pipe.book.file_ended(files[1]))
    assert records.unchanged("item", "fp", "mp3")


@pytest.mark.parametrize(
    ("status", "md5", "recorded"),
    [
        ("unverified", MD5, True),  # stored without a checksum match
        ("uptodate", None, True),  # listed without a checksum (the details page's links)
        ("downloaded", None, True),
        ("downloaded", MD5, False),  # said verified, but the file carries no record of it
    ],
)
def test_an_item_with_a_file_not_verified_is_never_recorded_complete(
    tmp_path: Path, status: str, md5: str | None, recorded: bool
) -> None:
    crawler = get_crawler(RavelSpider, {"FILES_STORE": str(tmp_path), "RAVEL_RECHECK": "quick"})
    crawler.spider = crawler._create_spider()
    pipe = VerifiedFilesPipeline.from_crawler(crawler)
    (tmp_path / "item").mkdir()
    files = []
    for name in ("a.mp3", "b.mp3"):
        last = name == "b.mp3"
        if last and not recorded:
            (tmp_path / "item" / name).write_bytes(BODY)
        else:
            stored_with_record(tmp_path / "item", name)
        file = AudioFile(
            identifier="item", name=name, url=f"http://x/{name}", md5=md5 if last else MD5
        )
        for field, value in (("item_fingerprint", "fp"), ("item_files", 2), ("selection", "mp3")):
            setattr(file, field, value)
        file.files = [{"status": status if last else "downloaded"}]
        files.append(file)
    for file in files:
        asyncio.run(pipe.book.file_ended(file))
    records = ItemRecords.from_settings(crawler.settings)
    assert not records.unchanged("item", "fp", "mp3")
    assert not (tmp_path / ".ravel" / "items" / "item.json").exists()


@pytest.mark.parametrize("link", [".ravel", ".ravel/items"])
def test_records_never_go_through_a_symbolic_link_out_of_the_store(
    tmp_path: Path, link: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside"
    (store / "item1").mkdir(parents=True)
    (outside / "items").mkdir(parents=True)
    if link != ".ravel":
        (store / ".ravel").mkdir()
    (store / link).symlink_to(outside if link == ".ravel" else outside / "items")
    kept = records(store)
    for identifier in ("item1", "item2"):
        kept.complete(identifier, "fp1", "mp3", files=[])
    assert list(outside.rglob("*")) == [outside / "items"]  # nothing written there
    warnings = [r.getMessage() for r in caplog.records if "cannot record item" in r.getMessage()]
    assert len(warnings) == 1 and "symbolic link or not a folder (refused)" in warnings[0]
    # A record put there by someone else is not read either.
    good = {"v": 1, "identifier": "item1", "fingerprint": "fp1", "selection": "mp3"}
    good |= {"complete": True, "files": []}
    (outside / "items" / "item1.json").write_text(json.dumps(good))
    assert kept.read("item1") is None and not kept.unchanged("item1", "fp1", "mp3")
