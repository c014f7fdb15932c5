"""The nightly re-run of a collection, end to end (real crawls against the fake archive.org's
generated collection): the first run stores everything; a re-run with nothing changed asks
only for the search pages; a re-run after one item changed and one was added fetches exactly
those two items' /metadata and only their changed or new files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ravelscraper.pipelines.records import xattrs_supported
from tests.fakearchive import FakeArchive
from tests.support.crawl import Crawl, scrapy_crawl, stored_files
from tests.support.fleet import storage_gets

pytestmark = pytest.mark.slow

ITEMS, FILES = 12, 3
COLLECTION = {"items": ITEMS, "files": FILES, "size": 1500}
FAST = {"RAVEL_LISTING_DELAY": 0, "RAVEL_SEARCH_PAGE_SIZE": 100, "RAVEL_PROGRESS_INTERVAL": 0}
CHANGED, NEW = "nightly-00005", f"nightly-{ITEMS + 1:05d}"


def test_a_nightly_rerun_fetches_only_what_changed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with FakeArchive({"collections": {"nightly": COLLECTION}}) as fake:

        def crawl() -> tuple[Crawl, dict[str, int]]:
            fake.reset()
            done = scrapy_crawl(
                "-a", "collection=nightly", store=store, RAVEL_ORIGIN=fake.archive, **FAST
            )
            assert done.returncode == 0, done.log[-3000:]
            assert done.errors == []
            return done, fake.routes()

        first, routes = crawl()
        assert first.stat("ravel/items_done") == ITEMS
        assert routes["scrape"] == 1 and routes["metadata"] == ITEMS
        assert len(storage_gets(fake)) == ITEMS * FILES  # each file once
        assert routes["download"] == ITEMS  # one 302 per item (RAVEL_STORAGE_DIRECT)
        assert len(stored_files(store)) == ITEMS * FILES
        before = stored_files(store)

        # Nothing changed: the search page only; no /metadata, no download, nothing hashed.
        same, routes = crawl()
        assert routes == {"scrape": 1}
        assert same.stat("ravel/items_unchanged") == ITEMS
        assert same.stat("ravel/items_listed") == 0
        assert same.stat("ravel/files_rehashed") == 0
        assert same.stat("ravel/files_quick_checked") == 0
        assert stored_files(store) == before

        # One item's first file rewritten, one item added: those two items are listed, and
        # only the rewritten and the new files are downloaded.
        fake.configure(
            collections={"nightly": {**COLLECTION, "items": ITEMS + 1}},
            revisions={CHANGED: 1},
        )
        changed, routes = crawl()
        assert routes["scrape"] == 1 and routes["metadata"] == 2
        assert len(storage_gets(fake)) == 1 + FILES
        assert routes["download"] == 2  # the first file of each listed item
        assert changed.stat("ravel/items_unchanged") == ITEMS - 1
        assert changed.stat("ravel/items_listed") == 2
        assert changed.stat("ravel/files_downloaded") == 1 + FILES
        assert changed.stat("ravel/files_uptodate") == FILES - 1
        if xattrs_supported(store):  # the changed item's other files: trusted on their record
            assert changed.stat("ravel/files_quick_checked") == FILES - 1
            # The rewritten file's record vouches for its old digest: it is read, found stale.
            assert changed.stat("ravel/files_rehashed") == 1
        after = stored_files(store)
        assert len(after) == (ITEMS + 1) * FILES
        rewritten = f"{CHANGED}/track01.mp3"
        assert after[rewritten] != before[rewritten]
        assert after[rewritten] == fake.file_bytes(CHANGED, "track01.mp3")
        assert after[f"{NEW}/track01.mp3"] == fake.file_bytes(NEW, "track01.mp3")
        assert {k: v for k, v in after.items() if k in before and k != rewritten} == {
            k: v for k, v in before.items() if k != rewritten
        }

        # And again: everything is unchanged once more.
        again, routes = crawl()
        assert routes == {"scrape": 1}
        assert again.stat("ravel/items_unchanged") == ITEMS + 1
