"""Resumed downloads, against the fake archive.org's storage node answering ``Range`` as
archive.org's do (``206``, ``Content-Range``, ``If-Range``): a transfer cut off mid-body is
continued within the run, and a crawl killed mid-transfer is continued by the next run;
whatever can't be continued (the item changed, a server without ranges, a new validator)
starts again from byte 0. Every file ends verified whole."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.fakearchive import FakeArchive
from tests.support.crawl import Crawl, scrapy_crawl, start_crawl, stored_files

RAVEL = "ThePianoMusicOfMauriceRavel"
TARGET = "02JeuxDeauPourPianoMr30.mp3"  # 158,911 bytes in the fake
BIG = "resume-big"
BIG_SIZE = 3_000_000
BIG_FILES = ["track01.mp3", "track02.mp3"]


def storage_requests(archive: FakeArchive, name: str) -> list[dict]:
    """The storage node's requests for ``name``, in the order they started."""
    log = archive.stats()["log"]  # in the order they ended
    found = [e for e in log if e["host"] == "127.0.0.2" and e["path"].endswith(name)]
    return sorted(found, key=lambda e: e["start"])


def assert_verified_whole(archive: FakeArchive, store: Path, identifier: str) -> None:
    stored = stored_files(store)
    assert stored, "nothing stored"
    for path, body in stored.items():
        entry = archive.file_entry(identifier, path.split("/", 1)[1])
        assert len(body) == entry.size, path
        assert hashlib.md5(body).hexdigest() == archive.md5_of(identifier, entry.name), path
        assert body == archive.file_bytes(identifier, entry.name), path


def parts_of(store: Path, identifier: str) -> dict[str, int]:
    folder = store / ".ravel" / "parts" / identifier
    return {p.name: p.stat().st_size for p in folder.glob("*.part")} if folder.exists() else {}


def crawl_big(archive: FakeArchive, store: Path, **settings: object) -> Crawl:
    return scrapy_crawl("-a", f"item={BIG}", store=store, RAVEL_ORIGIN=archive.archive, **settings)


def kill_mid_transfer(archive: FakeArchive, store: Path, at_least: int = 400_000) -> dict[str, int]:
    """A crawl of BIG (both files throttled) SIGKILLed once each part holds ``at_least``
    bytes; returns the part files' sizes it left."""
    archive.configure({"bandwidth": 1_000_000, "items": {BIG: {"count": 2, "size": BIG_SIZE}}})
    crawl = start_crawl("-a", f"item={BIG}", store=store, RAVEL_ORIGIN=archive.archive)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = parts_of(store, BIG)
            if len(parts) == 2 and min(parts.values()) >= at_least:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the crawl never got half-way: {parts_of(store, BIG)}")
        crawl.send_signal(signal.SIGKILL)
    finally:
        crawl.kill()
        crawl.communicate(timeout=30)
    parts = parts_of(store, BIG)
    assert sorted(parts) == [f"{name}.part" for name in BIG_FILES], parts
    assert all(0 < size < BIG_SIZE for size in parts.values()), parts
    assert stored_files(store) == {}, "a part file under a real name"
    archive.configure({"bandwidth": None})
    deadline = time.monotonic() + 10  # the server logs a request when its handler ends
    while archive.stats()["127.0.0.2"]["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    archive.reset()
    return parts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "knobs"),
    [
        ("reset", {}),  # the connection drops mid-body
        ("truncate", {}),  # fewer bytes than Content-Length, then a clean close
        ("stall", {"stall": 4}),  # half the body, then silence past DOWNLOAD_TIMEOUT
    ],
)
def test_a_transfer_cut_off_mid_body_is_resumed_with_a_206_that_fetches_only_the_rest(
    archive, tmp_path, kind, knobs
):
    archive.configure({"faults": [{"match": TARGET, "kind": kind, "times": 1, **knobs}]})
    crawl = scrapy_crawl(
        "-a", f"url={archive.details_url(RAVEL)}", store=tmp_path, DOWNLOAD_TIMEOUT=2
    )

    assert crawl.returncode == 0, crawl.log
    deadline = time.monotonic() + 10  # the server logs a stalled request after its stall
    while len(storage_requests(archive, TARGET)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first, second = storage_requests(archive, TARGET)
    size = archive.file_entry(RAVEL, TARGET).size
    assert first["status"] == 200 and first["range"] is None
    received = int(second["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < received <= size // 2 + 1  # the faults cut the body at half
    assert second["status"] == 206 and second["bytes_sent"] == size - received
    assert second["if_range"], "the resumed request names the version it continues"
    assert crawl.stat("ravel/bytes_resumed") == received
    assert_verified_whole(archive, tmp_path, RAVEL)
    assert "resumed" in crawl.log.split("[main finished]")[1].splitlines()[0]


@pytest.mark.slow
def test_a_server_that_ignores_range_gets_the_file_again_from_byte_0(archive, tmp_path):
    archive.configure(
        {"ignore_ranges": True, "faults": [{"match": TARGET, "kind": "reset", "times": 1}]}
    )
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=tmp_path)

    assert crawl.returncode == 0, crawl.log
    first, second = storage_requests(archive, TARGET)
    size = archive.file_entry(RAVEL, TARGET).size
    assert second["range"] is not None and second["status"] == 200
    assert second["bytes_sent"] == size
    assert 0 < crawl.stat("ravel/bytes_refetched") <= first["bytes_sent"]
    assert crawl.stat("ravel/bytes_resumed") == 0
    assert_verified_whole(archive, tmp_path, RAVEL)


@pytest.mark.slow
def test_a_crawl_killed_mid_transfer_is_resumed_by_the_next_run(archive, tmp_path):
    parts = kill_mid_transfer(archive, tmp_path)

    crawl = crawl_big(archive, tmp_path)

    assert crawl.returncode == 0, crawl.log
    for name in BIG_FILES:
        (request,) = storage_requests(archive, name)
        assert request["range"] == f"bytes={parts[name + '.part']}-", request
        assert request["status"] == 206
        assert request["bytes_sent"] == BIG_SIZE - parts[name + ".part"]
    missing = 2 * BIG_SIZE - sum(parts.values())
    assert archive.stats()["served"]["storage"] == missing
    assert crawl.stat("ravel/bytes_resumed") == sum(parts.values())
    assert_verified_whole(archive, tmp_path, BIG)
    assert parts_of(tmp_path, BIG) == {}


@pytest.mark.slow
def test_a_part_whose_item_changed_meanwhile_is_discarded(archive, tmp_path):
    kill_mid_transfer(archive, tmp_path)
    archive.configure({"sizes": {BIG: BIG_SIZE + 1000}})  # the files were replaced

    crawl = crawl_big(archive, tmp_path)

    assert crawl.returncode == 0, crawl.log
    for name in BIG_FILES:
        (request,) = storage_requests(archive, name)
        assert request["range"] is None and request["status"] == 200
        assert request["bytes_sent"] == BIG_SIZE + 1000
    assert crawl.log.count("part discarded, the file's listing") == 2
    assert crawl.stat("ravel/bytes_resumed") == 0
    assert_verified_whole(archive, tmp_path, BIG)
    assert parts_of(tmp_path, BIG) == {}


@pytest.mark.slow
def test_a_new_validator_on_the_server_restarts_the_file_from_byte_0(archive, tmp_path):
    parts = kill_mid_transfer(archive, tmp_path)
    archive.configure({"validator_epoch": 1})  # the storage node now names another version

    crawl = crawl_big(archive, tmp_path)

    assert crawl.returncode == 0, crawl.log
    for name in BIG_FILES:
        (request,) = storage_requests(archive, name)
        assert request["range"] == f"bytes={parts[name + '.part']}-" and request["if_range"]
        assert request["status"] == 200 and request["bytes_sent"] == BIG_SIZE
    assert crawl.stat("ravel/bytes_refetched") == sum(parts.values())
    assert crawl.stat("ravel/bytes_resumed") == 0
    assert_verified_whole(archive, tmp_path, BIG)


@pytest.mark.slow
def test_old_leftover_parts_are_removed_and_a_symlinked_ravel_folder_is_refused(archive, tmp_path):
    kill_mid_transfer(archive, tmp_path)
    folder = tmp_path / ".ravel" / "parts" / BIG
    old = time.time() - 3 * 86400
    for path in folder.iterdir():
        os.utime(path, (old, old))
    archive.configure({"items": {}})  # no listing claims them now
    crawl = scrapy_crawl(
        "-a", f"url={archive.details_url(RAVEL)}", store=tmp_path, RAVEL_PART_MAX_AGE=2
    )
    assert crawl.returncode == 0, crawl.log
    assert not folder.exists()
    assert "removed 4 leftover part files" in crawl.log

    # A .ravel that is a symbolic link is never written through.
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "store2"
    store.mkdir()
    (store / ".ravel").symlink_to(elsewhere)
    archive.configure({"faults": [{"match": TARGET, "kind": "reset", "times": 1}]})
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store)
    assert crawl.returncode == 0, crawl.log
    assert list(elsewhere.rglob("*.part")) == []
    assert "not resumable" in crawl.log
    assert_verified_whole(archive, store, RAVEL)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("broken", "first_status"),
    [
        ({"refuse_ranges": True}, 416),  # the range can't be served
        ({"ignore_if_range": True, "validator_epoch": 1}, 206),  # a 206 of another version
    ],
)
def test_a_range_answer_that_cant_continue_the_part_restarts_it(
    archive, tmp_path, broken, first_status
):
    parts = kill_mid_transfer(archive, tmp_path)
    archive.configure(broken)

    crawl = crawl_big(archive, tmp_path)

    assert crawl.returncode == 0, crawl.log
    for name in BIG_FILES:
        ranged, whole = storage_requests(archive, name)
        assert ranged["range"] == f"bytes={parts[name + '.part']}-"
        assert ranged["status"] == first_status
        assert whole["range"] is None and whole["status"] == 200
        assert whole["bytes_sent"] == BIG_SIZE
    assert crawl.stat("ravel/bytes_refetched") == sum(parts.values())
    assert crawl.stat("ravel/bytes_resumed") == 0
    assert_verified_whole(archive, tmp_path, BIG)


@pytest.mark.slow
def test_a_fleet_node_resumes_the_part_a_killed_node_left_in_the_shared_store(
    archive, fleet, tmp_path
):
    archive.configure({"bandwidth": 1_000_000, "items": {BIG: {"count": 2, "size": BIG_SIZE}}})
    store = tmp_path / "shared-store"
    victim = fleet.start("-a", f"item={BIG}", store=store, RAVEL_ORIGIN=archive.archive)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = parts_of(store, BIG)
        if len(parts) == 2 and min(parts.values()) >= 400_000:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the victim never got half-way: {parts_of(store, BIG)}")
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=30)
    victim.exited = time.time()
    parts = parts_of(store, BIG)
    archive.configure({"bandwidth": None})
    deadline = time.monotonic() + 10
    while archive.stats()["127.0.0.2"]["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    archive.reset()

    survivor = fleet.start("-a", f"item={BIG}", store=store, RAVEL_ORIGIN=archive.archive)
    fleet.wait()

    assert survivor.returncode == 0, survivor.log[-3000:]
    for name in BIG_FILES:
        (request,) = storage_requests(archive, name)
        assert request["range"] == f"bytes={parts[name + '.part']}-" and request["status"] == 206
    assert archive.stats()["served"]["storage"] == 2 * BIG_SIZE - sum(parts.values())
    assert_verified_whole(archive, store, BIG)
