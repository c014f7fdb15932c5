"""An item's files after the first come straight from its storage node (RAVEL_STORAGE_DIRECT),
and a direct request that fails falls back to /download without losing the file."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest
from scrapy.settings import Settings

from ravelscraper.checks import settings_problem
from ravelscraper.downloadermiddlewares.storage import StorageLocations, front_folder
from tests.fakearchive import max_simultaneous
from tests.support.crawl import FAKE_STORAGE_HOST, scrapy_crawl, stored_files

FRONT = "https://archive.org/download/item1/"
DIR = "/15/items/item1"
NODE = "https://ia800300.us.archive.org"


def learned(name: str = "a b.mp3", location: str | None = None, **kwargs) -> StorageLocations:
    locations = StorageLocations(True, (".archive.org",))
    where = location if location is not None else f"{NODE}{DIR}/a%20b.mp3"
    locations.learn(FRONT + "a%20b.mp3", where, name, kwargs.get("storage_dir", DIR))
    return locations


def test_a_302_to_the_items_dir_on_a_storage_host_teaches_where_its_files_are():
    locations = learned()
    assert locations.direct_url(FRONT + "sub/c%23d.flac", "sub/c#d.flac") == (
        f"{NODE}{DIR}/sub/c%23d.flac"
    )
    assert not locations.may_teach(FRONT + "x.mp3", "x.mp3")
    # Another item, another origin: not known.
    assert locations.direct_url("https://archive.org/download/item2/x.mp3", "x.mp3") is None
    assert locations.direct_url("http://mirror.example/download/item1/x.mp3", "x.mp3") is None


@pytest.mark.parametrize(
    ("location", "storage_dir"),
    [
        (f"{NODE}/16/items/item1/a%20b.mp3", DIR),  # not /metadata's dir
        (f"{NODE}{DIR}/a%20b.mp3?cnt=0", DIR),  # a query: not a plain file URL
        (f"https://evil.example{DIR}/a%20b.mp3", DIR),  # not a storage host
        (f"ftp://ia800300.us.archive.org{DIR}/a%20b.mp3", DIR),
        (f"{NODE}{DIR}/a b.mp3", DIR),  # quoted otherwise than quote(name)
        (f"{NODE}{DIR}/a%20b.mp3", ""),  # no dir in /metadata
        ("", DIR),  # no redirect at all: None below
    ],
)
def test_any_other_first_answer_refuses_the_shortcut_for_the_item(location, storage_dir):
    locations = learned(location=location or None, storage_dir=storage_dir)
    if not location:
        locations = StorageLocations(True, (".archive.org",))
        locations.learn(FRONT + "a%20b.mp3", None, "a b.mp3", DIR)
    assert locations.direct_url(FRONT + "x.mp3", "x.mp3") is None
    if storage_dir:
        assert not locations.may_teach(FRONT + "x.mp3", "x.mp3")  # refused, not unknown


def test_a_failed_direct_request_refuses_the_item_for_the_rest_of_the_crawl():
    locations = learned()
    locations.refuse(FRONT + "x.mp3", "x.mp3")
    assert locations.direct_url(FRONT + "y.mp3", "y.mp3") is None
    locations.learn(FRONT + "y.mp3", f"{NODE}{DIR}/y.mp3", "y.mp3", DIR)  # not learned again
    assert locations.direct_url(FRONT + "y.mp3", "y.mp3") is None


def test_off_nothing_is_direct():
    locations = StorageLocations(False, (".archive.org",))
    locations.learn(FRONT + "x.mp3", f"{NODE}{DIR}/x.mp3", "x.mp3", DIR)
    assert locations.direct_url(FRONT + "y.mp3", "y.mp3") is None
    assert front_folder(FRONT + "x.mp3", "other.mp3") is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [("maybe", "setting RAVEL_STORAGE_DIRECT='maybe' is not valid: expected 1 or 0"), ("0", None)],
)
def test_the_setting_is_checked_before_the_crawl(value, problem):
    assert settings_problem(Settings({"RAVEL_STORAGE_DIRECT": value})) == problem


def test_an_items_files_wait_for_its_first_files_302_then_go_direct():
    async def scenario() -> list[object]:
        locations = StorageLocations(True, (".archive.org",))
        first = await locations.wait_turn(FRONT + "a.mp3", "a.mp3", DIR)
        assert first == FRONT  # it teaches: through /download
        others = [
            asyncio.ensure_future(locations.wait_turn(FRONT + f"{n}.mp3", f"{n}.mp3", DIR))
            for n in "bc"
        ]
        await asyncio.sleep(0.01)
        assert not any(o.done() for o in others)  # waiting for the 302
        locations.learn(FRONT + "a.mp3", f"{NODE}{DIR}/a.mp3", "a.mp3", DIR)
        results = [await o for o in others]
        locations.taught(first)  # the first file done: nothing left waiting
        return [*results, locations.direct_url(FRONT + "b.mp3", "b.mp3")]

    assert asyncio.run(scenario()) == [None, None, f"{NODE}{DIR}/b.mp3"]


def test_when_the_first_file_teaches_nothing_the_next_one_takes_its_turn():
    async def scenario() -> list[object]:
        locations = StorageLocations(True, (".archive.org",))
        first = await locations.wait_turn(FRONT + "a.mp3", "a.mp3", DIR)
        second = asyncio.ensure_future(locations.wait_turn(FRONT + "b.mp3", "b.mp3", DIR))
        await asyncio.sleep(0.01)
        assert first is not None
        locations.taught(first)  # e.g. up to date: no request at all
        return [await second, await locations.wait_turn(FRONT + "c.mp3", "c.mp3", "")]

    assert asyncio.run(scenario()) == [FRONT, None]


# --- end to end, against the fake archive.org ----------------------------------------------

ITEM = "directitem"
FILES = 6


def item_crawl(archive, store: Path, **settings):
    archive.configure({"items": {ITEM: {"count": FILES, "size": 20_000}}})
    archive.reset()
    return scrapy_crawl("-a", f"url={archive.details_url(ITEM)}", store=store, **settings)


def downloads(archive, host: str) -> list[str]:
    return [
        e["path"]
        for e in archive.stats()["log"]
        if e["host"] == host and e["path"].endswith(".mp3") and e["method"] == "GET"
    ]


def stat(log: str, key: str) -> int:
    found = re.search(rf"'{re.escape(key)}': (\d+)", log)
    return int(found.group(1)) if found else 0


def assert_all_stored(archive, store: Path, skip: tuple[str, ...] = ()) -> None:
    stored = {p for p in stored_files(store) if p.endswith(".mp3")}
    wanted = {f"{ITEM}/track{n:02d}.mp3" for n in range(1, FILES + 1)} - set(skip)
    assert stored >= wanted, stored
    for path, body in stored_files(store).items():
        if path.endswith(".mp3"):
            name = path.split("/", 1)[1]
            assert body == archive.file_bytes(ITEM, name)
            assert hashlib.md5(body).hexdigest() == archive.md5_of(ITEM, name)


@pytest.mark.slow
def test_one_download_request_per_item_then_straight_to_the_storage_node(archive, tmp_path):
    crawl = item_crawl(archive, tmp_path, CONCURRENT_REQUESTS_PER_DOMAIN=2)

    assert crawl.returncode == 0, crawl.log
    assert_all_stored(archive, tmp_path)
    assert len(downloads(archive, "127.0.0.1")) == 1  # the item's first file: its 302
    assert len(downloads(archive, FAKE_STORAGE_HOST)) == FILES
    assert stat(crawl.log, "ravel/storage_locations_learned") == 1
    # The direct requests keep the file's slot: the cap holds across both hosts.
    assert max_simultaneous(archive.stats()["log"]) <= 2


@pytest.mark.slow
def test_off_every_file_goes_through_download(archive, tmp_path):
    crawl = item_crawl(archive, tmp_path, RAVEL_STORAGE_DIRECT=0)

    assert crawl.returncode == 0, crawl.log
    assert_all_stored(archive, tmp_path)
    assert len(downloads(archive, "127.0.0.1")) == FILES


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "extra"),
    [("500", {}), ("404", {}), ("redirect_loop", {}), ("reset", {}), ("stall", {"stall": 4})],
)
def test_a_direct_request_that_fails_falls_back_to_download(archive, tmp_path, kind, extra):
    target = "track04.mp3"  # not the first: fetched directly
    fault = {"match": target, "kind": kind, "host": "storage", "times": 1, **extra}
    archive.configure({"faults": [fault]})
    crawl = item_crawl(archive, tmp_path, DOWNLOAD_TIMEOUT=2)

    assert crawl.returncode == 0, crawl.log
    assert [f["kind"] for f in archive.stats()["faults_fired"]] == [kind]
    assert_all_stored(archive, tmp_path)
    assert stat(crawl.log, "ravel/storage_direct_fallbacks") >= 1
    assert f"/download/{ITEM}/{target}" in downloads(archive, "127.0.0.1")  # its fallback


@pytest.mark.slow
def test_a_storage_node_that_refuses_connections_loses_only_the_file_it_refused(archive, tmp_path):
    # The first file's 302 leads to a closed port at the item's dir: the node is learned,
    # and refuses every direct request; each falls back to /download (a working node).
    archive.configure({"faults": [{"match": "*.mp3", "kind": "redirect_refused"}]})
    crawl = item_crawl(archive, tmp_path, RETRY_TIMES=1)

    assert crawl.returncode == 1, crawl.log  # the first file: retried at the closed port
    assert len(re.findall(r"\[download failed\]", crawl.log)) == 1, crawl.log
    failed = re.search(r"\[download failed\] (track\d+\.mp3)", crawl.log)
    assert failed is not None
    assert_all_stored(archive, tmp_path, skip=(f"{ITEM}/{failed.group(1)}",))
    assert stat(crawl.log, "ravel/storage_direct_fallbacks") >= 1
