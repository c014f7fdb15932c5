"""Stores and settings, end to end: S3 (moto's server), FTP, local; checked before any download."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ravelscraper.archive.names import UnsafeName
from ravelscraper.checks import NUMERIC_RANGES, settings_problem
from ravelscraper.stores import store_uri_problem
from ravelscraper.stores.local import AtomicFSFilesStore
from ravelscraper.stores.s3 import s3_bucket_and_prefix
from tests.fakearchive import md5_of
from tests.support import stores
from tests.support.crawl import (
    RAVEL,
    RAVEL_MP3S,
    Crawl,
    scrapy_crawl,
    stored_files,
)
from tests.support.loopback import free_port as closed_port
from tests.support.stores import S3_ENV, S3_SETTINGS, crawl_with_env, ftp_server, moto_s3


def downloads(archive) -> list[str]:
    """File requests the fake archive.org saw (the /download 302s and storage bodies)."""
    return [
        e["path"]
        for e in archive.stats()["log"]
        if e["path"].startswith("/download/") or e["host"] == "127.0.0.2"
    ]


def assert_stopped_before_any_download(crawl: Crawl, archive, expected: str) -> None:
    assert crawl.returncode == 1, crawl.log
    assert len(crawl.errors) == 1, crawl.errors
    assert expected in crawl.errors[0], crawl.errors
    assert "Traceback" not in crawl.log
    assert downloads(archive) == []


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_client(s3):
    client = stores.s3_client(s3)
    yield client
    client.close()


def crawl_to_s3(archive, s3: str, store: str, **settings: object) -> Crawl:
    return crawl_with_env(
        "-a",
        f"url={archive.details_url(RAVEL)}",
        store=store,
        env=S3_ENV,
        AWS_ENDPOINT_URL=s3,
        **{**S3_SETTINGS, **settings},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bucket", "tail", "prefix"),
    [
        ("with-prefix", "/mirror", "mirror/"),
        ("with-slash", "/mirror/", "mirror/"),
        ("bare", "", ""),
    ],
)
def test_s3_stores_prefix_slash_identifier_slash_name(archive, s3, s3_client, bucket, tail, prefix):
    s3_client.create_bucket(Bucket=bucket)
    crawl = crawl_to_s3(archive, s3, f"s3://{bucket}{tail}")

    assert crawl.returncode == 0, crawl.log
    # A first run finds no stored copy: that is normal, not a warning per file.
    assert [line for line in crawl.log.splitlines() if line.startswith("[WARNING]")] == []
    listed = s3_client.list_objects_v2(Bucket=bucket)["Contents"]
    stored = {o["Key"]: o["ETag"].strip('"') for o in listed}
    assert stored == {f"{prefix}{RAVEL}/{name}": md5_of(RAVEL, name) for name in RAVEL_MP3S}
    if bucket == "with-prefix":  # a second run finds every file up to date there
        archive.reset()
        again = crawl_to_s3(archive, s3, f"s3://{bucket}{tail}")
        assert again.returncode == 0, again.log
        assert "0 downloaded" in again.log and "5 already up to date" in again.log
        assert [p for p in downloads(archive) if "/items/" in p] == []


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing bucket", "no credentials", "unreachable endpoint"])
def test_an_unusable_s3_store_stops_the_crawl_before_any_download(archive, s3, case):
    settings: dict[str, object] = {**S3_SETTINGS, "AWS_ENDPOINT_URL": s3}
    expected = "does not exist"
    if case == "no credentials":
        del settings["AWS_ACCESS_KEY_ID"], settings["AWS_SECRET_ACCESS_KEY"]
        expected = "no AWS credentials"
    elif case == "unreachable endpoint":
        settings["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port()}"
        expected = "can't be reached"
    crawl = crawl_with_env(
        "-a",
        f"url={archive.details_url(RAVEL)}",
        store="s3://no-such-bucket/mirror" if case == "missing bucket" else "s3://any/mirror",
        env=S3_ENV,
        timeout=60,
        **settings,
    )
    assert_stopped_before_any_download(crawl, archive, expected)
    assert "test-secret-key" not in crawl.log


@pytest.mark.slow
def test_unusable_store_uris_stop_the_crawl_before_any_download(archive, tmp_path):
    cases = {
        "": "FILES_STORE is empty",
        "gopher://host/mirror": "unknown scheme 'gopher'",
        "s3://": "names no bucket",
        f"ftp://127.0.0.1:{closed_port()}/mirror": "can't be reached",
    }
    for store, expected in cases.items():
        archive.reset()
        crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store)
        assert_stopped_before_any_download(crawl, archive, expected)
        assert "Disabled VerifiedFilesPipeline" not in crawl.log


@pytest.mark.slow
def test_an_ftp_store_with_wrong_credentials_stops_the_crawl_unseen(archive, tmp_path):
    with ftp_server(tmp_path, "mirror", "the-right-one") as address:
        store = f"ftp://mirror:Ftp-Pa55word@{address}/mirror"
        crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store)
    assert_stopped_before_any_download(crawl, archive, "refused us: '530")
    assert "Ftp-Pa55word" not in crawl.log
    assert f"[main start] store ftp://***@{address}/mirror" in crawl.log


@pytest.mark.slow
def test_an_ftp_store_mirrors_the_item_and_a_rerun_finds_it_up_to_date(archive, tmp_path):
    home = tmp_path / "ftp-home"
    home.mkdir()
    with ftp_server(home, "mirror", "Ftp-Pa55word") as address:
        store = f"ftp://mirror:Ftp-Pa55word@{address}/mirror"
        crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store)
        assert crawl.returncode == 0, crawl.log
        stored = stored_files(home / "mirror")
        assert sorted(stored) == [f"{RAVEL}/{name}" for name in RAVEL_MP3S]
        for path, body in stored.items():
            assert hashlib.md5(body).hexdigest() == md5_of(RAVEL, path.split("/", 1)[1])
        again = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store)
    assert again.returncode == 0, again.log
    assert "0 downloaded" in again.log and "5 already up to date" in again.log
    assert "Ftp-Pa55word" not in crawl.log + again.log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONCURRENT_REQUESTS_PER_DOMAIN", "0"),  # hung forever
        ("CONCURRENT_REQUESTS_PER_DOMAIN", "two"),  # a traceback from the downloader
        ("DOWNLOAD_DELAY", "abc"),
        ("DOWNLOAD_DELAY_JITTER", "1.5"),
        ("RAVEL_VERIFY_RETRIES", "-1"),
        ("RAVEL_LISTING_DELAY", "-1"),
    ],
)
def test_settings_out_of_range_stop_the_crawl_at_start(archive, tmp_path, name, value):
    crawl = scrapy_crawl(
        "-a", f"url={archive.details_url(RAVEL)}", store=tmp_path, timeout=60, **{name: value}
    )
    assert_stopped_before_any_download(crawl, archive, f"setting {name}={value!r}")
    assert stored_files(tmp_path) == {}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONCURRENT_REQUESTS", 0),
        ("CONCURRENT_REQUESTS_PER_DOMAIN", "two"),
        ("CONCURRENT_REQUESTS_PER_DOMAIN", 1.5),
        ("DOWNLOAD_DELAY", -1),
        ("DOWNLOAD_DELAY", "nan"),
        ("DOWNLOAD_DELAY_JITTER", -0.5),
        ("RETRY_TIMES", -1),
        ("RAVEL_RETRY_BACKOFF_BASE", "inf"),
        ("RAVEL_PROGRESS_INTERVAL", -5),
        ("RAVEL_WAIT_FOR_WORK", -2),
    ],
)
def test_each_out_of_range_setting_is_named(name, value):
    lowest = {n: low for n, (low, _, _) in NUMERIC_RANGES.items()}  # each one valid
    assert settings_problem(lowest) is None
    problem = settings_problem({**lowest, name: value})
    assert problem is not None and problem.startswith(f"setting {name}=")


def test_the_defaults_pass_the_settings_check():
    from scrapy.utils.project import get_project_settings

    assert settings_problem(get_project_settings()) is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/mirror", ("bucket", "mirror/")),
        ("s3://bucket/mirror/", ("bucket", "mirror/")),
        ("s3://bucket/a/b//", ("bucket", "a/b/")),
    ],
)
def test_s3_uris_give_a_bucket_and_a_slashed_prefix(uri, expected):
    assert s3_bucket_and_prefix(uri) == expected


@pytest.mark.parametrize(
    "uri", ["downloads", "/srv/mirror", "file:///srv/mirror", "s3://b/p", "ftp://h/x"]
)
def test_usable_store_uris_pass(uri):
    assert store_uri_problem(uri) is None


def test_store_uri_problems_mask_credentials():
    problem = store_uri_problem("sftp://user:Hidden-Pw@host/x")
    assert problem is not None and "Hidden-Pw" not in problem and "unknown scheme" in problem


@pytest.mark.slow
def test_stored_files_get_the_umask_like_any_download(archive, tmp_path):
    done = scrapy_crawl(
        "-a",
        f"url={archive.details_url(RAVEL)}",
        store=tmp_path / "store",
        wrapper=("sh", "-c", 'umask 027 && exec "$@"', "sh"),
    )
    assert done.returncode == 0, done.log[-3000:]
    stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert len(stored) == 5
    assert {oct(p.stat().st_mode & 0o777) for p in stored} == {oct(0o640)}


@pytest.mark.slow
def test_the_manifest_gives_each_failed_file_its_reason(archive, tmp_path):
    target = RAVEL_MP3S[1]
    # Missing on the storage node: its direct request too, then its /download's redirect.
    fault = {"match": target, "kind": "404", "host": "storage", "times": 10}
    archive.configure({"faults": [fault]})
    manifest = tmp_path / "files.jsonl"
    crawl = scrapy_crawl(
        "-a", f"url={archive.details_url(RAVEL)}", "-O", str(manifest), store=tmp_path / "store"
    )
    assert crawl.returncode == 1
    rows = {row["name"]: row for row in map(json.loads, manifest.read_text().splitlines())}
    assert rows[target]["files"] == [] and "HTTP 404" in rows[target]["error"]
    assert all(r["error"] == "" and r["files"] for n, r in rows.items() if n != target)


@pytest.mark.slow
def test_a_store_folder_that_is_a_file_is_reported(archive, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=Path(blocker, "store"))
    assert_stopped_before_any_download(crawl, archive, "is not writable")


def test_the_local_store_refuses_a_path_out_of_it_even_in_a_folder_it_knows(tmp_path):
    store, outside = tmp_path / "store", tmp_path / "outside"
    (store / "item1").mkdir(parents=True)
    outside.mkdir()
    local = AtomicFSFilesStore(str(store))
    assert local.filesystem_path("item1/a.mp3") == store.resolve() / "item1/a.mp3"
    assert "item1" in local.folders_inside  # known: the next file costs one lstat
    assert local.filesystem_path("item1/b.mp3") == store.resolve() / "item1/b.mp3"
    (store / "item1/c.mp3").symlink_to(outside / "c.mp3")  # a name that leads out
    with pytest.raises(UnsafeName):
        local.filesystem_path("item1/c.mp3")
    (store / "item2").symlink_to(outside)  # a folder that leads out: never known
    with pytest.raises(UnsafeName):
        local.filesystem_path("item2/a.mp3")
    assert "item2" not in local.folders_inside
    with pytest.raises(UnsafeName):
        local.filesystem_path("item1/../item2/a.mp3")
