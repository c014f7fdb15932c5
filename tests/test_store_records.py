"""Item records on S3 (moto's server) and FTP (pyftpdlib), end to end: a collection mirrored
once, then re-run as every night. The re-run asks archive.org for the search pages only: no
``/metadata`` for an unchanged item, and no file read back from the store to check it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakearchive import FakeArchive
from tests.support.crawl import FAST_LISTING, Crawl, scrapy_crawl
from tests.support.fleet import storage_gets
from tests.support.stores import S3_ENV, S3_SETTINGS, crawl_with_env, ftp_server, moto_s3, s3_client

pytestmark = pytest.mark.slow

ITEMS, FILES = 10, 2  # one item of the ten changes (change_every 10)
NIGHT = {"items": ITEMS, "files": FILES, "size": 1000}
# Two nodes: enough items that the second, seconds slower to start under load, still joins
# the first one's run on the second night (with nothing to fetch, the run is short).
FLEET_ITEMS = 30


@pytest.fixture(scope="module")
def fake() -> FakeArchive:
    with FakeArchive({"collections": {"night": NIGHT}}) as server:
        yield server


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as endpoint:
        yield endpoint


def crawl_s3(fake: FakeArchive, s3: str, store: str) -> Crawl:
    settings = {**S3_SETTINGS, **FAST_LISTING, "RAVEL_ORIGIN": fake.archive}
    return crawl_with_env(
        "-a", "collection=night", store=store, env=S3_ENV, AWS_ENDPOINT_URL=s3, **settings
    )


def assert_clean(crawl: Crawl) -> None:
    assert crawl.returncode == 0, crawl.log[-3000:]
    assert "Traceback" not in crawl.log and crawl.errors == []


def test_a_nightly_rerun_on_s3_asks_no_metadata_for_unchanged_items(fake, s3):
    client = s3_client(s3)
    client.create_bucket(Bucket="nightly")
    fake.configure(collections={"night": NIGHT})
    fake.reset()
    first = crawl_s3(fake, s3, "s3://nightly/mirror")
    assert_clean(first)
    assert fake.routes()["metadata"] == ITEMS
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="nightly")["Contents"]]
    records = sorted(k for k in keys if k.startswith("mirror/.ravel/items/"))
    assert len(records) == ITEMS and records[0] == "mirror/.ravel/items/night-00001.json"
    record = json.loads(client.get_object(Bucket="nightly", Key=records[0])["Body"].read())
    assert record["complete"] is True and len(record["files"]) == FILES
    etag = client.head_object(
        Bucket="nightly", Key=f"mirror/night-00001/{record['files'][0]['name']}"
    )
    assert record["files"][0]["tag"] == etag["ETag"].strip('"')  # S3's own md5

    fake.reset()
    again = crawl_s3(fake, s3, "s3://nightly/mirror")
    assert_clean(again)
    assert fake.routes().get("metadata", 0) == 0 and fake.routes()["scrape"] == 1
    assert storage_gets(fake) == []
    assert again.log.count("[item unchanged]") == ITEMS

    # One item in ten changed at archive.org: those alone are listed, their new file fetched.
    fake.configure(collections={"night": {**NIGHT, "revision": 1, "change_every": 10}})
    fake.reset()
    changed = crawl_s3(fake, s3, "s3://nightly/mirror")
    assert_clean(changed)
    assert fake.routes()["metadata"] == ITEMS // 10
    assert len(storage_gets(fake)) == ITEMS // 10  # the rewritten file of each; S3's ETag
    assert changed.log.count("[item unchanged]") == ITEMS - ITEMS // 10  # vouched for the rest

    # An object deleted behind the mirror's back: its item is no longer vouched for.
    client.delete_object(Bucket="nightly", Key=f"mirror/night-00002/{record['files'][0]['name']}")
    fake.reset()
    healed = crawl_s3(fake, s3, "s3://nightly/mirror")
    assert_clean(healed)
    assert fake.routes()["metadata"] == 1 and len(storage_gets(fake)) == 1
    client.close()


def test_a_nightly_rerun_on_ftp_asks_no_metadata_for_unchanged_items(fake, tmp_path: Path):
    home = tmp_path / "ftp-home"
    home.mkdir()
    fake.configure(collections={"night": NIGHT})
    settings = {**FAST_LISTING, "RAVEL_ORIGIN": fake.archive}
    with ftp_server(home, "mirror", "Ftp-Pa55word") as address:
        store = f"ftp://mirror:Ftp-Pa55word@{address}/mirror"
        fake.reset()
        first = scrapy_crawl("-a", "collection=night", store=store, **settings)
        assert_clean(first)
        records = sorted((home / "mirror" / ".ravel" / "items").glob("*.json"))
        assert len(records) == ITEMS
        fake.reset()
        again = scrapy_crawl("-a", "collection=night", store=store, **settings)
    assert_clean(again)
    assert fake.routes().get("metadata", 0) == 0 and fake.routes()["scrape"] == 1
    assert storage_gets(fake) == []
    assert again.log.count("[item unchanged]") == ITEMS
    assert "Ftp-Pa55word" not in first.log + again.log


def rerun_with_two_fleet_nodes(fake: FakeArchive, fleet, store: str, **settings: object) -> None:
    """Two nights of a two-node fleet on one shared store: the second night asks nothing."""
    fake.configure(collections={"night": {**NIGHT, "items": FLEET_ITEMS}})
    settings = {
        **FAST_LISTING,
        "RAVEL_ORIGIN": fake.archive,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 4,
        **settings,
    }
    for night in range(2):
        fake.reset()
        # The second night has nothing to fetch: the fleet stays idle 4 s before closing its
        # run, so a node started a few seconds late under load still joins it (a node arriving
        # after the close starts a run of its own, which pages the search again).
        quiet = {"RAVEL_IDLE_QUIET": 4} if night else {}
        nodes = [
            fleet.start("-a", "collection=night", store=store, **settings, **quiet)
            for _ in range(2)
        ]
        fleet.wait(timeout=180)
        for node in nodes:
            assert node.returncode == 0, node.log[-3000:]
            assert "Traceback" not in node.log and node.lines("[ERROR]") == []
        routes = fake.routes()
        if night == 0:
            assert routes["metadata"] == FLEET_ITEMS
            assert len(storage_gets(fake)) == FLEET_ITEMS * FILES
        else:
            assert routes.get("metadata", 0) == 0 and routes["scrape"] == 1
            assert storage_gets(fake) == []
            assert sum(len(n.lines("[item unchanged]")) for n in nodes) == FLEET_ITEMS


def test_two_fleet_nodes_rerun_a_collection_on_s3_without_metadata(fake, s3, fleet):
    """A fleet always shares its store: the item records on S3 serve every node."""
    client = s3_client(s3)
    client.create_bucket(Bucket="fleet")
    client.close()
    rerun_with_two_fleet_nodes(fake, fleet, "s3://fleet/m", **S3_SETTINGS, AWS_ENDPOINT_URL=s3)


def test_two_fleet_nodes_rerun_a_collection_on_ftp_without_metadata(fake, fleet, tmp_path: Path):
    home = tmp_path / "ftp-home"
    home.mkdir()
    with ftp_server(home, "fleet", "Ftp-Pa55word") as address:
        rerun_with_two_fleet_nodes(fake, fleet, f"ftp://fleet:Ftp-Pa55word@{address}/m")
    assert len(list((home / "m" / ".ravel" / "items").glob("*.json"))) == FLEET_ITEMS
