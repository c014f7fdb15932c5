"""The dry run (``-s RAVEL_DRY_RUN=1``): the listing as usual, no download, no write, and a
summary per item and in total (ravelscraper.extensions.plan)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ravelscraper.extensions.plan import SHOWN_ITEMS, DryRunPlan
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.records import XATTR, read_record
from ravelscraper.stores import store_check_problem
from ravelscraper.stores.local import AtomicFSFilesStore
from tests.fakearchive import get_item
from tests.support.crawl import FAKE_STORAGE_HOST, RAVEL, RAVEL_MP3S, scrapy_crawl, stored_files


def file_requests(archive) -> list[str]:
    """Every request for a file: the /download 302s and the storage node's bodies."""
    return [
        e["path"]
        for e in archive.stats()["log"]
        if e["path"].startswith("/download/")
        or (e["host"] == FAKE_STORAGE_HOST and not e["path"].endswith("robots.txt"))
    ]


def tree(store: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``store`` (the store itself included), with its size and mtime: a
    probe file written then deleted still changes its folder's mtime."""
    paths = [store, *store.rglob("*")]
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in paths}


def listed_size(name: str) -> int:
    item = get_item(RAVEL)
    assert item is not None
    size = next(f.size for f in item.files if f.name == name)
    assert size is not None
    return size


def audio_file(identifier: str, name: str, status: str | None, size: int = 1000) -> AudioFile:
    item = AudioFile(identifier=identifier, name=name, url=f"http://x/{name}", size=size)
    if status is not None:
        item.files = [{"status": status}]
    else:
        item.error = "failed"
    return item


def test_the_summary_lists_items_to_fetch_then_counts_the_rest() -> None:
    plan = DryRunPlan()
    for n in range(SHOWN_ITEMS + 3):
        plan.add(audio_file(f"item{n:03}", "a.mp3", "planned"))
        plan.add(audio_file(f"item{n:03}", "b.mp3", "uptodate"))
    plan.add(audio_file("done", "a.mp3", "uptodate"))
    plan.add(audio_file("broken", "a.mp3", None))
    lines = plan.lines()
    assert lines[0] == "[dry run] item000: 1 files to download (0.0 MB), 1 up to date"
    assert len(lines) == SHOWN_ITEMS + 3
    assert lines[SHOWN_ITEMS] == "[dry run] and 3 more items to download"
    total = SHOWN_ITEMS + 3
    assert lines[-2] == (
        f"[dry run] total: {total} files to download ({total * 1000 / 1e6:.1f} MB) from "
        f"{total} of {total + 2} items, {total + 1} files up to date, 1 failed"
    )
    assert lines[-1] == "[dry run] nothing was downloaded"


@pytest.mark.slow
def test_a_dry_run_downloads_and_writes_nothing_and_says_what_it_would_fetch(
    archive, tmp_path
) -> None:
    store, manifest = tmp_path / "store", tmp_path / "plan.jsonl"
    url = f"url={archive.details_url(RAVEL)}"
    crawl = scrapy_crawl("-a", url, "-O", str(manifest), store=store, RAVEL_DRY_RUN=1)

    assert crawl.returncode == 0, crawl.log
    assert file_requests(archive) == []
    assert stored_files(store) == {}
    assert not store.exists()  # not even the store's folder: it is said, not created
    assert f"FILES_STORE {str(store)!r} does not exist: it would be created" in crawl.log
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["name"] for r in rows) == RAVEL_MP3S
    assert all([f["status"] for f in r["files"]] == ["planned"] for r in rows)
    total = sum(listed_size(name) for name in RAVEL_MP3S)
    assert crawl.stat("ravel/files_planned") == len(RAVEL_MP3S)
    assert crawl.stat("ravel/bytes_planned") == total
    assert crawl.stat("ravel/files_downloaded") == 0
    assert f"[dry run] {RAVEL}: 5 files to download ({total / 1e6:.1f} MB), 0 up to date" in (
        crawl.log
    )
    assert f"[dry run] total: 5 files to download ({total / 1e6:.1f} MB) from 1 of 1 items" in (
        crawl.log
    )
    assert "[dry run] nothing was downloaded" in crawl.log
    assert not crawl.errors


@pytest.mark.slow
def test_a_dry_run_over_a_partial_mirror_plans_only_the_missing_files(archive, tmp_path) -> None:
    store, manifest = tmp_path / "store", tmp_path / "plan.jsonl"
    url = f"url={archive.details_url(RAVEL)}"
    assert scrapy_crawl("-a", url, store=store).returncode == 0
    (store / RAVEL / RAVEL_MP3S[0]).unlink()
    unrecorded = store / RAVEL / RAVEL_MP3S[1]
    os.removexattr(unrecorded, XATTR)  # as if stored before records existed
    archive.reset()
    before = tree(store)

    crawl = scrapy_crawl("-a", url, "-O", str(manifest), store=store, RAVEL_DRY_RUN=1)
    assert crawl.returncode == 0, crawl.log
    assert tree(store) == before  # nothing written: no probe, no record, no part file
    assert file_requests(archive) == []
    assert not (store / RAVEL / RAVEL_MP3S[0]).exists()
    assert read_record(unrecorded) is None  # checked (hashed), but not recorded: no write
    statuses = {
        r["name"]: r["files"][0]["status"]
        for r in map(json.loads, manifest.read_text().splitlines())
    }
    assert statuses == {n: "planned" if n == RAVEL_MP3S[0] else "uptodate" for n in RAVEL_MP3S}
    size = listed_size(RAVEL_MP3S[0])
    assert crawl.stat("ravel/files_planned") == 1
    assert crawl.stat("ravel/bytes_planned") == size
    assert f"[dry run] {RAVEL}: 1 files to download ({size / 1e6:.1f} MB), 4 up to date" in (
        crawl.log
    )
    assert "[dry run] nothing was downloaded" in crawl.log


def test_the_dry_run_checks_the_store_without_writing(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "store"
    assert store_check_problem(AtomicFSFilesStore(missing), dry_run=True) is None
    assert not (tmp_path / "missing").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    mtime = existing.stat().st_mtime_ns
    assert store_check_problem(AtomicFSFilesStore(existing), dry_run=True) is None
    assert list(existing.iterdir()) == [] and existing.stat().st_mtime_ns == mtime
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"")
    problem = store_check_problem(AtomicFSFilesStore(a_file), dry_run=True)
    assert problem == f"FILES_STORE {str(a_file)!r} is not a folder"
    beneath = store_check_problem(AtomicFSFilesStore(a_file / "store"), dry_run=True)
    assert beneath is not None and "is not readable" in beneath
    # A real run's check creates the folder (and writes, then deletes, a probe).
    assert store_check_problem(AtomicFSFilesStore(missing)) is None
    assert missing.is_dir()


def test_the_dry_run_refuses_an_unreadable_store(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o300)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who reads every folder (root)")
        problem = store_check_problem(AtomicFSFilesStore(locked), dry_run=True)
        assert problem == f"FILES_STORE {str(locked)!r} is not readable: permission denied"
    finally:
        locked.chmod(0o700)


def test_an_item_is_folded_into_the_totals_once_its_files_are_through() -> None:
    plan = DryRunPlan()
    for n in range(1000):
        for name in ("a.mp3", "b.mp3"):
            file = audio_file(f"item{n:04}", name, "planned")
            file.item_files = 2
            plan.add(file)
    assert not plan.open and len(plan.shown) == SHOWN_ITEMS  # flat: no per-item state left
    assert plan.lines()[-2].startswith("[dry run] total: 2000 files to download")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"RAVEL_DRY_RUN": "yes"}, "setting RAVEL_DRY_RUN='yes' is not valid: expected 1 or 0"),
        (
            {"RAVEL_DRY_RUN": "1", "REDIS_URL": "redis://127.0.0.1:1/0"},
            "RAVEL_DRY_RUN can't be used on a fleet node (REDIS_URL is set)",
        ),
        ({"RAVEL_DRY_RUN": "true"}, None),
        ({"RAVEL_DRY_RUN": "0", "REDIS_URL": "redis://127.0.0.1:1/0"}, None),
    ],
)
def test_a_dry_run_setting_is_checked_before_the_crawl(monkeypatch, settings, problem) -> None:
    from scrapy.settings import Settings

    from ravelscraper.checks import settings_problem

    monkeypatch.delenv("REDIS_URL", raising=False)
    found = settings_problem(Settings(settings))
    assert found == problem if problem is None else found.startswith(problem)
