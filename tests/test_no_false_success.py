"""No false success (issue 18): every path that drops work fails the run, end to end with
real ``scrapy crawl`` processes against the fake archive.org."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakearchive import FakeArchive
from tests.support.crawl import (
    FAST_LISTING,
    ROOT,
    crawl_command,
    crawl_env,
    scrapy_crawl,
    stored_files,
)

pytestmark = pytest.mark.slow


def fake_with(archive: FakeArchive, **config: Any) -> FakeArchive:
    """The session's fake archive.org (the ``archive`` fixture) with ``config``: the knobs go
    back to their defaults for the next test, and no server of its own is started."""
    archive.configure(config)
    return archive


def test_a_search_whose_cursor_loops_back_fails_the_run_in_one_line(
    archive, tmp_path: Path
) -> None:
    # Pages FIRST -> X, X -> Y, Y -> X: the third page's cursor goes back to the second's.
    config = {
        "collections": {"loop": {"items": 350, "files": 1, "size": 200}},
        "scrape": {"loop_at": "loop-00300", "loop_to": "loop-00100"},
    }
    fake = fake_with(archive, **config)
    crawl = scrapy_crawl(
        "-a", "collection=loop", store=tmp_path, RAVEL_ORIGIN=fake.archive, **FAST_LISTING
    )
    scrapes = fake.routes()["scrape"]
    assert crawl.returncode == 1, crawl.log[-3000:]
    repeated = [line for line in crawl.errors if "repeated a page" in line]
    assert len(repeated) == 1, crawl.errors
    assert "Traceback" not in crawl.log and scrapes == 3
    assert len(stored_files(tmp_path)) < 350


def test_a_search_whose_cursor_loops_back_fails_a_fleet_node_too(
    archive, fleet, tmp_path: Path
) -> None:
    config = {
        "collections": {"loop": {"items": 350, "files": 1, "size": 200}},
        "scrape": {"loop_at": "loop-00300", "loop_to": "loop-00100"},
    }
    fake = fake_with(archive, **config)
    node = fleet.start(
        "-a", "collection=loop", store=tmp_path / "store", RAVEL_ORIGIN=fake.archive,
        **FAST_LISTING,
    )  # fmt: skip
    fleet.wait(timeout=120)
    assert node.returncode == 1, node.log[-3000:]
    errors = node.lines("[ERROR]")
    assert (
        len([line for line in errors if "\tsearch 'collection:loop': archive.org repeated" in line])
        == 1
    )
    # The run closes failed, naming the search.
    assert any(
        "[fleet] run 1 closed" in line and "search:collection:loop" in line for line in errors
    )
    assert "Traceback" not in node.log


def test_an_exception_in_a_spider_callback_fails_the_run(archive, tmp_path: Path) -> None:
    archive.configure({"collections": {"gen": {"items": 3, "files": 1, "size": 200}}})
    listing = tmp_path / "items.txt"
    listing.write_text("gen-00001\ngen-00002\ngen-00003\n")
    command = [
        arg if arg != "ravel" else "ravel-raising"
        for arg in crawl_command(
            "-a", f"items={listing}", store=tmp_path / "store", RAVEL_ORIGIN=archive.archive,
            SPIDER_MODULES="tests.support.raising", **FAST_LISTING,
        )
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=crawl_env(RAVEL_TEST_RAISE_IN="gen-00002"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-3000:]
    assert sorted(stored_files(tmp_path / "store")) == [
        "gen-00001/track01.mp3",
        "gen-00003/track01.mp3",
    ]
    errors = [line for line in log.splitlines() if line.startswith("[ERROR]")]
    assert any("[spider error] 1 exception(s) escaped the spider" in line for line in errors)


def test_an_unreadable_item_record_is_no_record_and_the_item_is_listed_again(
    archive, tmp_path: Path
) -> None:
    archive.configure({"collections": {"recs": {"items": 5, "files": 1, "size": 200}}})
    store = tmp_path / "store"
    first = scrapy_crawl(
        "-a", "collection=recs", store=store, RAVEL_ORIGIN=archive.archive, **FAST_LISTING
    )
    assert first.returncode == 0, first.log[-3000:]
    records = store / ".ravel" / "items"
    assert len(list(records.glob("*.json"))) == 5
    (records / "recs-00002.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)  # RecursionError
    (records / "recs-00003.json").unlink()
    (records / "recs-00003.json").symlink_to("/dev/zero")  # endless: never read
    (records / "recs-00004.json").unlink()
    os.mkfifo(records / "recs-00004.json")  # would block open() for good
    archive.reset()
    again = scrapy_crawl(
        "-a", "collection=recs", store=store, RAVEL_ORIGIN=archive.archive, timeout=60,
        **FAST_LISTING,
    )  # fmt: skip
    assert again.returncode == 0, again.log[-3000:]
    assert archive.routes()["metadata"] == 3  # the three listed again, the others unchanged
    assert again.stat("ravel/items_unchanged") == 2 and again.errors == []
    assert "Traceback" not in again.log


def test_an_item_stored_unverified_is_listed_again_and_checked_next_run(
    archive, tmp_path: Path
) -> None:
    archive.configure(
        {
            "collections": {"unv": {"items": 2, "files": 1, "size": 300}},
            "metadata_fail": ["unv-00001"],  # the details page's links: no checksums
        }
    )
    store = tmp_path / "store"
    first = scrapy_crawl(
        "-a", "collection=unv", store=store, RAVEL_ORIGIN=archive.archive, **FAST_LISTING
    )
    assert first.returncode == 0, first.log[-3000:]
    assert first.stat("ravel/files_unverified") == 1
    records = sorted(p.name for p in (store / ".ravel" / "items").glob("*.json"))
    assert records == ["unv-00002.json"]  # the unverified item is not recorded complete
    wrong = store / "unv-00001" / "track01.mp3"
    wrong.write_bytes(b"x" * wrong.stat().st_size)  # the bytes were wrong all along
    archive.configure({"metadata_fail": []})
    archive.reset()
    again = scrapy_crawl(
        "-a", "collection=unv", store=store, RAVEL_ORIGIN=archive.archive, **FAST_LISTING
    )
    assert again.returncode == 0, again.log[-3000:]
    assert archive.routes()["metadata"] == 1 and again.stat("ravel/items_unchanged") == 1
    assert wrong.read_bytes() == archive.file_bytes("unv-00001", "track01.mp3")


def test_a_symlinked_dot_ravel_never_takes_records_out_of_the_store(
    archive, tmp_path: Path
) -> None:
    archive.configure({"collections": {"lnk": {"items": 2, "files": 1, "size": 300}}})
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    (store / ".ravel").symlink_to(outside)
    crawl = scrapy_crawl(
        "-a", "collection=lnk", store=store, RAVEL_ORIGIN=archive.archive, **FAST_LISTING
    )
    assert crawl.returncode == 0, crawl.log[-3000:]  # every file verified; no record kept
    assert list(outside.iterdir()) == []
    warnings = [line for line in crawl.log.splitlines() if "cannot record item" in line]
    assert len(warnings) == 1 and warnings[0].startswith("[WARNING]")
    assert "symbolic link or not a folder (refused)" in warnings[0]
    assert sorted(stored_files(store)) == ["lnk-00001/track01.mp3", "lnk-00002/track01.mp3"]


@pytest.mark.parametrize("source", ["/dev/zero", "-", "/dev/stdin"])
def test_an_endless_item_list_line_is_one_error_line_in_bounded_memory(
    archive, tmp_path: Path, source: str
) -> None:
    command = crawl_command(
        "-a", f"items={source}", store=tmp_path / "store", RAVEL_ORIGIN=archive.archive,
        **FAST_LISTING,
    )  # fmt: skip
    done = subprocess.run(
        ["prlimit", "--as=1500000000", *command],  # a MemoryError, not the machine's RAM
        cwd=ROOT,
        env=crawl_env(),
        input=b"a" * 50_000_000,  # 50 MB, no newline (ignored by /dev/zero)
        capture_output=True,
        timeout=120,
    )
    log = (done.stdout + done.stderr).decode(errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("[ERROR]")]
    assert done.returncode == 1, log[-3000:]
    assert len(errors) == 1 and "line 1: a line longer than 4096 characters" in errors[0], errors
    assert "Traceback" not in log and "MemoryError" not in log


def test_an_item_list_through_a_pipe_is_read_once_and_fetched(archive, tmp_path: Path) -> None:
    archive.configure({"collections": {"pipe": {"items": 3, "files": 1, "size": 200}}})
    command = crawl_command(
        "-a", "items=/dev/stdin", store=tmp_path / "store", RAVEL_ORIGIN=archive.archive,
        **FAST_LISTING,
    )  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=crawl_env(),
        input=b"pipe-00001\npipe-00003\n",
        capture_output=True,
        timeout=120,
    )
    log = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert sorted(stored_files(tmp_path / "store")) == [
        "pipe-00001/track01.mp3",
        "pipe-00003/track01.mp3",
    ]
    assert "[items] 2 items read from the item list" in log


def test_a_collection_hit_that_does_not_say_its_collection_stops_the_crawl(
    archive, tmp_path: Path
) -> None:
    config = {
        "collections": {"quiet": {"items": 3, "files": 1, "size": 200}},
        "scrape": {"omit": ["collection"]},
    }
    fake = fake_with(archive, **config)
    crawl = scrapy_crawl(
        "-a", "collection=quiet", store=tmp_path / "c", RAVEL_ORIGIN=fake.archive,
        **FAST_LISTING,
    )  # fmt: skip
    metadata = fake.routes().get("metadata", 0)
    # A search (no -a collection=) doesn't need to know: it takes what it matched.
    search = scrapy_crawl(
        "-a", "search=collection:quiet", store=tmp_path / "s", RAVEL_ORIGIN=fake.archive,
        **FAST_LISTING,
    )  # fmt: skip
    assert crawl.returncode == 1, crawl.log[-3000:]
    assert len(crawl.errors) == 1, crawl.errors
    assert "does not say which collection 'quiet-00001' is in" in crawl.errors[0]
    assert metadata == 0  # nothing of that answer was listed
    assert not (tmp_path / "c").exists() or stored_files(tmp_path / "c") == {}
    assert search.returncode == 0, search.log[-3000:]
    assert len(stored_files(tmp_path / "s")) == 3


def test_a_search_that_gives_fewer_items_than_announced_says_so_once(
    archive, tmp_path: Path
) -> None:
    config = {
        "collections": {"short": {"items": 3, "files": 1, "size": 200}},
        "scrape": {"total": 10},
    }
    fake = fake_with(archive, **config)
    crawl = scrapy_crawl(
        "-a", "collection=short", store=tmp_path, RAVEL_ORIGIN=fake.archive, **FAST_LISTING
    )
    assert crawl.returncode == 0, crawl.log[-3000:]  # every item it gave is verified
    said = [line for line in crawl.log.splitlines() if "announced 10 items" in line]
    assert len(said) == 1 and said[0].startswith("[WARNING]")
    assert "the search gave 3; the 7 others were not listed" in said[0]


def test_an_unbelievable_search_total_is_never_shown_as_progress(archive, tmp_path: Path) -> None:
    config = {
        "collections": {"huge": {"items": 3, "files": 1, "size": 200}},
        "scrape": {"total": 10**18},
        "latency": 0.3,
    }
    fake = fake_with(archive, **config)
    crawl = scrapy_crawl(
        "-a", "collection=huge", store=tmp_path, RAVEL_ORIGIN=fake.archive,
        **{**FAST_LISTING, "RAVEL_PROGRESS_INTERVAL": 0.2},
    )  # fmt: skip
    assert crawl.returncode == 0, crawl.log[-3000:]
    progress = [line for line in crawl.log.splitlines() if "[progress]" in line]
    assert progress and not any(str(10**18) in line for line in progress)
    said = [line for line in crawl.log.splitlines() if "not believable" in line]
    assert len(said) == 1 and said[0].startswith("[WARNING]")
    assert "items but the search gave" not in crawl.log  # no total to fall short of
