"""A failed item of many is a row of the ``-O`` manifest (its identifier and the error), like a
failed file; it is never downloaded, never counted as a file, and the crawl still exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ravelscraper.archive.metadata import ItemLocation
from ravelscraper.items import AudioFile
from tests.support.catalog import catalog_fixtures
from tests.support.crawl import FAST_LISTING, RAVEL, RAVEL_MP3S, scrapy_crawl, stored_files
from tests.support.fleet import NodeGroup

SAMPLES_ONLY = "samples-only-cd"  # every recording access-restricted: fails as an item
CONFIG = {"collections": {"mixed": {"members": [RAVEL, SAMPLES_ONLY]}}}


def test_a_failed_items_row_has_no_file_to_fetch():
    row = AudioFile.item_failed(ItemLocation("https://archive.org", "gone"), "unknown item")
    assert row.failed_item and row.file_urls == [] and row.name == ""
    assert row.url == "https://archive.org/details/gone" and row.error == "unknown item"
    listed = AudioFile("x", "a.mp3", "u", error="listed twice with different md5s")
    assert not listed.failed_item  # a failed file keeps its name


fake, routes = catalog_fixtures(CONFIG)


def manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["collection", "items"])
def test_a_failed_item_is_a_manifest_row_and_the_crawl_exits_1(routes, tmp_path, source):
    out = tmp_path / "out.jsonl"
    if source == "items":
        listing = tmp_path / "items.txt"
        listing.write_text(f"{RAVEL}\n{SAMPLES_ONLY}\nno-such-item\n")
        argument = f"items={listing}"
    else:
        argument = "collection=mixed"
    crawl = scrapy_crawl(
        "-a",
        argument,
        "-O",
        str(out),
        store=tmp_path / "store",
        RAVEL_ORIGIN=routes.archive,
        **FAST_LISTING,
    )
    assert crawl.returncode == 1, crawl.log[-3000:]
    assert "Traceback" not in crawl.log
    rows = manifest(out)
    files = [r for r in rows if r["name"]]
    assert sorted(r["name"] for r in files) == sorted(RAVEL_MP3S)
    assert all(r["error"] == "" and r["files"][0]["status"] == "downloaded" for r in files)
    failed = {r["identifier"]: r for r in rows if not r["name"]}
    expected = {SAMPLES_ONLY} | ({"no-such-item"} if source == "items" else set())
    assert set(failed) == expected
    restricted = failed[SAMPLES_ONLY]
    assert restricted["error"].startswith(f"the recordings of '{SAMPLES_ONLY}' are access")
    assert restricted["url"] == routes.details_url(SAMPLES_ONLY)
    assert restricted["files"] == [] and restricted["file_urls"] == []
    if source == "items":
        assert failed["no-such-item"]["error"].startswith("unknown item 'no-such-item'")
    # Counted as items, never as files: no [download failed], no [failed files] line.
    assert crawl.stat("ravel/items_failed") == len(expected)
    assert crawl.stat("ravel/files_failed") == 0
    assert "[download failed]" not in crawl.log and "[failed files]" not in crawl.log
    assert "5 downloaded" in crawl.log and " 0 failed" in crawl.log
    assert sorted(stored_files(tmp_path / "store")) == sorted(f"{RAVEL}/{n}" for n in RAVEL_MP3S)


@pytest.mark.slow
def test_a_fleet_nodes_manifest_has_the_items_it_failed(routes, redis_server, tmp_path):
    store = tmp_path / "store"
    with NodeGroup.on(redis_server, tmp_path) as fleet:
        outs = [tmp_path / f"node{n}.jsonl" for n in range(2)]
        nodes = [
            fleet.start(
                "-a",
                "collection=mixed",
                "-O",
                str(out),
                store=store,
                RAVEL_ORIGIN=routes.archive,
                **FAST_LISTING,
            )
            for out in outs
        ]
        fleet.wait(timeout=120)
    assert all("Traceback" not in node.log for node in nodes)
    assert any(node.returncode == 1 for node in nodes)  # the closing node names the failure
    rows = [row for out in outs if out.exists() for row in manifest(out)]
    failed = [r for r in rows if not r["name"]]
    assert [r["identifier"] for r in failed] == [SAMPLES_ONLY]
    assert sorted(r["name"] for r in rows if r["name"]) == sorted(RAVEL_MP3S)
    assert sorted(stored_files(store)) == sorted(f"{RAVEL}/{n}" for n in RAVEL_MP3S)
