"""archive.org's mtime on every stored file: local (os.utime before the record), S3 (object
metadata ``mtime``), FTP (``MFMT``); parsed from /metadata with the same care as size."""

from __future__ import annotations

import ftplib
import json
import os
import tempfile
import time
from io import BytesIO

import pytest

from ravelscraper.archive.metadata import RemoteFile, parse_mtime
from ravelscraper.distributed.entries import file_record, item_from_record
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.records import FileRecord, quick_match, read_record, write_record
from ravelscraper.stores.ftp import set_remote_mtime
from ravelscraper.stores.local import AtomicFSFilesStore
from tests.fakearchive import get_item
from tests.support.crawl import (
    RAVEL,
    RAVEL_MP3S,
    scrapy_crawl,
    storage_get_paths,
)
from tests.support.stores import S3_ENV, S3_SETTINGS, crawl_with_env, ftp_server, moto_s3, s3_client

BODY = b"a verified body\n"
SHA1 = "bbd5a8ae5b5bc1a5a8a0dff0abd3f0a6c9d66b5f"  # any 40 hex digits: a record is not rechecked
MTIME = 1430212164  # the real gd77-04-23d1t01.mp3's, in archive-org.md


def listed_mtime(name: str) -> int:
    item = get_item(RAVEL)
    assert item is not None
    entry = item.file(name)
    assert entry is not None
    return entry.mtime


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1430212164", 1430212164),
        (1430212164, 1430212164),
        ("0", 0),
        ("1430212164.5", None),
        ("-5", None),
        ("²", None),
        ("", None),
        (None, None),
        (True, None),
        ("9" * 13, None),
        ([], None),
    ],
)
def test_mtime_is_read_as_whole_epoch_seconds_or_ignored(raw, expected):
    assert parse_mtime(raw) == expected


def test_a_malformed_mtime_is_ignored_with_a_note_and_the_file_is_kept():
    entry = {"name": "a.mp3", "mtime": "yesterday", "size": "3", "md5": "0" * 32}
    file = RemoteFile.from_metadata(entry)
    assert file.mtime is None and file.error == "" and file.size == 3
    assert file.notes == ("'a.mp3': ignored its mtime 'yesterday' (not a time in seconds)",)
    assert RemoteFile.from_metadata({"name": "a.mp3", "mtime": "1430212164"}).mtime == MTIME
    assert RemoteFile.from_metadata({"name": "a.mp3"}).mtime is None


def test_a_fleet_file_entry_carries_the_mtime(tmp_path):
    url = "https://archive.org/download/item/a.mp3"
    item = AudioFile("item", "a.mp3", url, md5="0" * 32, mtime=MTIME, file_urls=[url])
    record = file_record(item)
    assert record["file"]["mtime"] == str(MTIME)
    origins = AllowedOrigins(["https://archive.org"])
    assert item_from_record(json.dumps(record).encode(), origins).mtime == MTIME


# --- the local store -------------------------------------------------------------------------


@pytest.mark.parametrize("named", [True, False])
def test_a_committed_file_gets_the_mtime_before_its_record(tmp_path, named):
    store = AtomicFSFilesStore(tmp_path)
    (tmp_path / "item").mkdir()
    fd, part = tempfile.mkstemp(dir=tmp_path / "item")
    try:
        os.write(fd, BODY)
        store.commit_part(
            fd, part if named else None, "item/a.mp3", record=("sha1", SHA1), mtime=MTIME
        )
    finally:
        os.close(fd)
        if not named:
            os.unlink(part)
    found = os.stat(tmp_path / "item" / "a.mp3")
    assert found.st_mtime_ns == MTIME * 10**9
    record = read_record(tmp_path / "item" / "a.mp3")
    assert quick_match(record, found, "sha1", SHA1, len(BODY))  # a re-run reads nothing


def test_an_in_memory_body_gets_the_mtime_and_none_keeps_the_download_time(tmp_path):
    store = AtomicFSFilesStore(tmp_path)
    store.persist_file("item/a.mp3", BytesIO(BODY), None, record=("sha1", SHA1), mtime=MTIME)
    found = os.stat(tmp_path / "item" / "a.mp3")
    assert found.st_mtime_ns == MTIME * 10**9
    assert quick_match(read_record(tmp_path / "item/a.mp3"), found, "sha1", SHA1, None)
    before = time.time()
    store.persist_file("item/b.mp3", BytesIO(BODY), None, record=("sha1", SHA1))
    assert os.stat(tmp_path / "item" / "b.mp3").st_mtime >= before - 1


def test_an_up_to_date_file_is_restamped_and_its_record_follows(tmp_path):
    store = AtomicFSFilesStore(tmp_path)
    store.persist_file("item/a.mp3", BytesIO(BODY), None)
    target = tmp_path / "item" / "a.mp3"
    with open(target, "rb") as stored:
        assert write_record(stored.fileno(), "sha1", SHA1)
    assert store.set_mtime("item/a.mp3", MTIME) is True
    found = os.stat(target)
    assert found.st_mtime_ns == MTIME * 10**9
    assert read_record(target) == FileRecord("sha1", SHA1, len(BODY), MTIME * 10**9)
    assert store.set_mtime("item/a.mp3", MTIME) is False  # already right: nothing written


def test_a_stale_record_is_not_revived_by_a_restamp(tmp_path):
    store = AtomicFSFilesStore(tmp_path)
    store.persist_file("item/a.mp3", BytesIO(BODY), None, record=("sha1", SHA1))
    target = tmp_path / "item" / "a.mp3"
    target.write_bytes(b"other bytes, same record\n")  # the record no longer vouches
    store.set_mtime("item/a.mp3", MTIME)
    assert not quick_match(read_record(target), os.stat(target), "sha1", SHA1, None)


# --- end to end: each store ----------------------------------------------------------------


@pytest.mark.slow
def test_a_local_mirror_has_archive_orgs_mtimes_and_a_rerun_reads_nothing(archive, tmp_path):
    store = tmp_path / "store"
    url = f"url={archive.details_url(RAVEL)}"
    first = scrapy_crawl("-a", url, store=store)
    assert first.returncode == 0, first.log
    for name in RAVEL_MP3S:
        assert (store / RAVEL / name).stat().st_mtime == listed_mtime(name)

    archive.reset()
    again = scrapy_crawl("-a", url, store=store)
    assert again.returncode == 0, again.log
    assert again.stat("ravel/files_quick_checked") == len(RAVEL_MP3S)
    assert again.stat("ravel/files_rehashed") == 0  # no stored byte was read
    assert again.stat("ravel/files_mtime_set") == 0
    assert storage_get_paths(archive) == []

    # A mirror made before mtimes were kept: download times, valid records. The next run
    # trusts the records and puts archive.org's mtimes back; the run after reads nothing.
    for name in RAVEL_MP3S:
        path = store / RAVEL / name
        os.utime(path)
        with open(path, "rb") as stored:
            assert write_record(stored.fileno(), "sha1", read_record(path).digest)
    archive.reset()
    restamped = scrapy_crawl("-a", url, store=store)
    assert restamped.returncode == 0, restamped.log
    assert restamped.stat("ravel/files_mtime_set") == len(RAVEL_MP3S)
    assert restamped.stat("ravel/files_downloaded") == 0
    for name in RAVEL_MP3S:
        assert (store / RAVEL / name).stat().st_mtime == listed_mtime(name)
    archive.reset()
    quick = scrapy_crawl("-a", url, store=store)
    assert quick.stat("ravel/files_quick_checked") == len(RAVEL_MP3S), quick.log
    assert quick.stat("ravel/files_mtime_set") == 0 and storage_get_paths(archive) == []


@pytest.mark.slow
def test_an_s3_object_carries_the_mtime_as_metadata(archive, tmp_path):
    with moto_s3() as endpoint:
        client = s3_client(endpoint)
        try:
            client.create_bucket(Bucket="mtimes")
            crawl = crawl_with_env(
                "-a",
                f"url={archive.details_url(RAVEL)}",
                store="s3://mtimes/mirror",
                env=S3_ENV,
                AWS_ENDPOINT_URL=endpoint,
                **S3_SETTINGS,
            )
            assert crawl.returncode == 0, crawl.log
            for name in RAVEL_MP3S:
                head = client.head_object(Bucket="mtimes", Key=f"mirror/{RAVEL}/{name}")
                assert head["Metadata"] == {"mtime": str(listed_mtime(name))}
        finally:
            client.close()


@pytest.mark.slow
def test_an_ftp_file_gets_the_mtime_through_mfmt(archive, tmp_path):
    home = tmp_path / "ftp-home"
    home.mkdir()
    with ftp_server(home, "mirror", "Ftp-Pa55word") as address:
        store = f"ftp://mirror:Ftp-Pa55word@{address}/mirror"
        crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store)
        assert crawl.returncode == 0, crawl.log
        host, port = address.split(":")
        with ftplib.FTP() as ftp:
            ftp.connect(host, int(port))
            ftp.login("mirror", "Ftp-Pa55word")
            for name in RAVEL_MP3S:
                answer = ftp.voidcmd(f"MDTM /mirror/{RAVEL}/{name}")
                wanted = time.strftime("%Y%m%d%H%M%S", time.gmtime(listed_mtime(name)))
                assert answer == f"213 {wanted}"
    for name in RAVEL_MP3S:  # the same file, seen from the server's disk
        assert (home / "mirror" / RAVEL / name).stat().st_mtime == listed_mtime(name)


class FakeFTP:
    """Just ``voidcmd``: what ``set_remote_mtime`` sends, and the server's answer."""

    def __init__(self, answer: Exception | None = None) -> None:
        self.sent: list[str] = []
        self.answer = answer

    def voidcmd(self, command: str) -> str:
        self.sent.append(command)
        if self.answer is not None:
            raise self.answer
        return "213 Modify=20150428090924; a.mp3"


def test_mfmt_sends_utc_and_a_server_without_it_leaves_the_upload_time():
    server = FakeFTP()
    assert set_remote_mtime(server, "a b.mp3", MTIME) is True  # type: ignore[arg-type]
    assert server.sent == ["MFMT 20150428090924 a b.mp3"]  # 1430212164 in UTC
    for refusal in (ftplib.error_perm("500 Unknown command"), ftplib.error_reply("502 no")):
        assert set_remote_mtime(FakeFTP(refusal), "a.mp3", MTIME) is False  # type: ignore[arg-type]
