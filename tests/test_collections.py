"""Many items in one crawl, end to end: ``scrapy crawl ravel -a collection=/search=/items=``
against the fake archive.org's scrape API (real processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fakearchive import FakeArchive
from tests.support.catalog import catalog_fixtures
from tests.support.crawl import (
    FAST_LISTING,
    RAVEL,
    RAVEL_MP3S,
    ROOT,
    crawl_command,
    crawl_env,
    scrapy_crawl,
    stored_files,
)

pytestmark = pytest.mark.slow

SAMPLES_ONLY = "samples-only-cd"  # every recording access-restricted: fails as an item
CONFIG = {
    "collections": {
        "gen": {"items": 250, "files": 1, "size": 2000},
        "mix": {"members": [RAVEL, "bulk-40", SAMPLES_ONLY, "ravel-collection"]},
    }
}


fake, routes = catalog_fixtures(CONFIG)


def stored(store: Path) -> list[str]:
    return sorted(stored_files(store))


def test_a_collection_takes_every_item_one_metadata_each_and_a_page_per_page_size(
    routes: FakeArchive, tmp_path: Path
) -> None:
    crawl = scrapy_crawl(
        "-a",
        "collection=gen",
        store=tmp_path,
        RAVEL_ORIGIN=routes.archive,
        timeout=180,
        **FAST_LISTING,
    )
    assert crawl.returncode == 0, crawl.log[-3000:]
    files = stored(tmp_path)
    assert len(files) == 250 and files[0] == "gen-00001/track01.mp3"
    assert (tmp_path / "gen-00042/track01.mp3").read_bytes() == routes.file_bytes(
        "gen-00042", "track01.mp3"
    )
    counts = routes.routes()
    assert counts["scrape"] == 3  # 250 items, 100 a page
    assert counts["metadata"] == 250 and "details" not in counts
    assert crawl.stat("ravel/items_total") == 250 and crawl.stat("ravel/items_listed") == 250
    assert crawl.stat("ravel/items_done") == 250 and crawl.errors == []


def test_a_search_takes_only_the_items_it_matches(routes: FakeArchive, tmp_path: Path) -> None:
    crawl = scrapy_crawl(
        "-a",
        'search=collection:mix AND creator:"Ravel"',
        store=tmp_path,
        RAVEL_ORIGIN=routes.archive,
        **FAST_LISTING,
    )
    # The Ravel item, and the samples-only CD (its creator is Ravel too), which fails alone.
    assert crawl.returncode == 1
    assert stored(tmp_path) == sorted(f"{RAVEL}/{name}" for name in RAVEL_MP3S)
    failed = [line for line in crawl.errors if "[item failed]" in line]
    assert len(failed) == 1 and f"[item failed] {SAMPLES_ONLY}: the recordings" in failed[0]
    assert routes.routes()["scrape"] == 1 and routes.routes()["metadata"] == 2


def test_an_item_named_besides_a_search_that_finds_it_too_is_listed_once(
    routes: FakeArchive, tmp_path: Path
) -> None:
    crawl = scrapy_crawl(
        "-a", 'search=collection:mix AND creator:"Ravel"', "-a", f"item={RAVEL}",
        store=tmp_path, RAVEL_ORIGIN=routes.archive, **FAST_LISTING,
    )  # fmt: skip
    assert crawl.returncode == 1  # the samples-only CD fails alone, as without -a item=
    assert stored(tmp_path) == sorted(f"{RAVEL}/{name}" for name in RAVEL_MP3S)
    # The search's request for the item is the one already made: the dupefilter drops it.
    assert routes.routes()["metadata"] == 2 and crawl.stat("dupefilter/filtered") == 1
    assert crawl.stat("ravel/items_listed") == 1 and crawl.log.count(f"[item] {RAVEL}:") == 1


def test_an_item_of_a_collection_that_fails_fails_alone(
    routes: FakeArchive, tmp_path: Path
) -> None:
    crawl = scrapy_crawl(
        "-a", "collection=mix", store=tmp_path, RAVEL_ORIGIN=routes.archive, **FAST_LISTING
    )
    assert crawl.returncode == 1
    files = stored(tmp_path)
    assert len([f for f in files if f.startswith("bulk-40/")]) == 40
    assert len([f for f in files if f.startswith(f"{RAVEL}/")]) == 5
    failed = [line for line in crawl.errors if "[item failed]" in line]
    assert len(failed) == 1 and SAMPLES_ONLY in failed[0]
    summary = [line for line in crawl.log.splitlines() if "[failed items]" in line]
    assert len(summary) == 1 and summary[0].startswith("[WARNING]") and SAMPLES_ONLY in summary[0]
    assert "[item skipped] ravel-collection: a collection" in crawl.log
    assert crawl.stat("ravel/items_failed") == 1 and "Traceback" not in crawl.log


def test_one_item_named_besides_an_item_list_is_listed_once_with_it(
    routes: FakeArchive, tmp_path: Path
) -> None:
    listing = tmp_path / "items.txt"
    listing.write_text("gen-00003\ngen-00004\n")
    crawl = scrapy_crawl(
        "-a", f"items={listing}", "-a", "item=gen-00004", "-a", "glob=*.mp3",
        store=tmp_path / "store", RAVEL_ORIGIN=routes.archive, **FAST_LISTING,
    )  # fmt: skip
    assert crawl.returncode == 0, crawl.log[-3000:]
    assert stored(tmp_path / "store") == ["gen-00003/track01.mp3", "gen-00004/track01.mp3"]
    assert routes.routes()["metadata"] == 2 and crawl.stat("ravel/items_total") == 2


def test_an_item_list_from_a_file_and_from_standard_input(
    routes: FakeArchive, tmp_path: Path
) -> None:
    listing = tmp_path / "items.txt"
    listing.write_text(
        f"# two items, one twice\n\ngen-00007\n{routes.details_url('gen-00009')}\ngen-00007\n"
    )
    store = tmp_path / "from-file"
    crawl = scrapy_crawl(
        "-a", f"items={listing}", store=store, RAVEL_ORIGIN=routes.archive, **FAST_LISTING
    )
    assert crawl.returncode == 0, crawl.log[-3000:]
    assert stored(store) == ["gen-00007/track01.mp3", "gen-00009/track01.mp3"]
    assert routes.routes().get("scrape", 0) == 0 and routes.routes()["metadata"] == 2
    store = tmp_path / "from-stdin"
    done = subprocess.run(
        crawl_command("-a", "items=-", store=store, RAVEL_ORIGIN=routes.archive, **FAST_LISTING),
        cwd=ROOT,
        env=crawl_env(),
        input="gen-00011\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert stored(store) == ["gen-00011/track01.mp3"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-a", "items=missing.txt"], "cannot read the item list 'missing.txt'"),
        (["-a", "collection=gen", "-a", "search=x:1"], "can't be combined"),
        (["-a", "search=creator Ravel"], "archive.org refused the search: cannot parse query"),
        (["-a", "collection=nothing-here"], "no items match the search 'collection:nothing-here'"),
    ],
)
def test_bad_arguments_and_refused_searches_are_one_error_line(
    fake: FakeArchive, tmp_path: Path, arguments: list[str], message: str
) -> None:
    crawl = scrapy_crawl(*arguments, store=tmp_path, RAVEL_ORIGIN=fake.archive, **FAST_LISTING)
    assert crawl.returncode == 1
    assert len(crawl.errors) == 1 and message in crawl.errors[0], crawl.errors
    assert "Traceback" not in crawl.log and stored(tmp_path) == []


def test_a_bad_line_of_an_item_list_is_one_error_line_naming_it(
    fake: FakeArchive, tmp_path: Path
) -> None:
    listing = tmp_path / "items.txt"
    listing.write_text("gen-00001\nnot an identifier\n")
    crawl = scrapy_crawl(
        "-a",
        f"items={listing}",
        store=tmp_path / "store",
        RAVEL_ORIGIN=fake.archive,
        **FAST_LISTING,
    )
    assert crawl.returncode == 1 and len(crawl.errors) == 1
    assert "line 2: not an archive.org identifier: 'not an identifier'" in crawl.errors[0]
    assert not (tmp_path / "store").exists() or stored(tmp_path / "store") == []
