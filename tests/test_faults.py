"""The fault matrix: each fault injected for real into a real crawl.

Every file ends up byte-exact and verified, or is reported failed; never a corrupt or
partial file that looks good.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.fakearchive import file_bytes, md5_of
from tests.support.crawl import Crawl, scrapy_crawl, small_tmpfs, start_crawl, stored_files

RAVEL = "ThePianoMusicOfMauriceRavel"
TARGET = "02JeuxDeauPourPianoMr30.mp3"  # 158,911 bytes in the fake


def attempts(archive, name: str, host: str) -> list[dict]:
    return [e for e in archive.stats()["log"] if e["host"] == host and e["path"].endswith(name)]


def crawl_ravel(archive, store: Path, **settings) -> Crawl:
    return scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store, **settings)


def crawl_ravel_front(archive, store: Path, **settings) -> Crawl:
    """Every file through archive.org's /download (its faults there), none straight from the
    storage node (tests/test_storage_direct.py has those)."""
    return crawl_ravel(archive, store, RAVEL_STORAGE_DIRECT=0, **settings)


def assert_all_verified(store: Path, identifier: str = RAVEL) -> None:
    for path, body in stored_files(store).items():
        assert "/" in path and not Path(path).name.endswith(".part"), path
        assert hashlib.md5(body).hexdigest() == md5_of(identifier, path.split("/", 1)[1]), path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "knobs"),
    [
        ("reset", {}),  # the connection drops mid-body
        ("truncate", {}),  # fewer bytes than Content-Length, then a clean close
        ("stall", {"stall": 4}),  # half the body, then silence past DOWNLOAD_TIMEOUT
    ],
)
def test_a_broken_transfer_is_retried_and_verified(archive, tmp_path, kind, knobs):
    archive.configure({"faults": [{"match": TARGET, "kind": kind, "times": 1, **knobs}]})
    crawl = crawl_ravel(archive, tmp_path, DOWNLOAD_TIMEOUT=2)

    assert crawl.returncode == 0, crawl.log
    assert [f["kind"] for f in archive.stats()["faults_fired"]] == [kind]
    # The server logs a request when it ends: a stalled one, only after its stall.
    deadline = time.monotonic() + 10
    while len(attempts(archive, TARGET, "127.0.0.2")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(attempts(archive, TARGET, "127.0.0.2")) == 2
    assert (tmp_path / RAVEL / TARGET).read_bytes() == file_bytes(RAVEL, TARGET)
    assert_all_verified(tmp_path)
    assert "[retry]" in crawl.log


@pytest.mark.slow
def test_a_503_storm_backs_off_exponentially_then_succeeds(archive, tmp_path):
    archive.configure({"faults": [{"match": TARGET, "kind": "503", "times": 3}]})
    crawl = crawl_ravel_front(archive, tmp_path, RAVEL_RETRY_BACKOFF_BASE=0.4)

    assert crawl.returncode == 0, crawl.log
    tries = attempts(archive, TARGET, "127.0.0.1")
    assert [t["status"] for t in tries] == [503, 503, 503, 302]
    waits = [b["start"] - a["end"] for a, b in itertools.pairwise(tries)]
    for wait, backoff in zip(waits, (0.4, 0.8, 1.6), strict=True):
        assert wait >= backoff - 0.05, waits
    assert (tmp_path / RAVEL / TARGET).read_bytes() == file_bytes(RAVEL, TARGET)


@pytest.mark.slow
def test_a_503_storm_that_never_ends_is_reported(archive, tmp_path):
    archive.configure({"faults": [{"match": TARGET, "kind": "503", "times": 100}]})
    crawl = crawl_ravel_front(archive, tmp_path, RETRY_TIMES=2)

    assert crawl.returncode == 1
    assert len(attempts(archive, TARGET, "127.0.0.1")) == 3
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert len(failed) == 1 and TARGET in failed[0] and "HTTP 503" in failed[0]
    assert f"/download/{RAVEL}/{TARGET}" in failed[0]
    assert not (tmp_path / RAVEL / TARGET).exists()
    assert "4 downloaded" in crawl.log and "1 failed" in crawl.log


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "reason"),
    [("redirect_loop", "max redirections"), ("redirect_404", "HTTP 404")],
)
def test_broken_redirects_are_reported_with_the_url(archive, tmp_path, kind, reason):
    archive.configure({"faults": [{"match": TARGET, "kind": kind, "times": 100}]})
    crawl = crawl_ravel_front(archive, tmp_path)

    assert crawl.returncode == 1
    failed = [line for line in crawl.errors if TARGET in line]
    assert len(failed) == 1 and reason in failed[0] and "http://127.0.0." in failed[0]
    assert not (tmp_path / RAVEL / TARGET).exists()
    assert "Traceback" not in crawl.log


@pytest.mark.slow
def test_a_file_over_download_maxsize_fails_with_its_reason(archive, tmp_path):
    crawl = crawl_ravel(archive, tmp_path, DOWNLOAD_MAXSIZE=150_000)

    assert crawl.returncode == 1
    big = [n for n in stored_files(tmp_path)]
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert failed and all("max size" in line.lower() for line in failed), failed
    assert len(big) + len(failed) == 5
    assert_all_verified(tmp_path)


def wait_for_files(store: Path, count: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if len([p for p in store.rglob("*.mp3") if p.is_file()]) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} files after {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_run_is_completed_by_the_next(archive, tmp_path, stop):
    # 40 files of 64 KiB at 128 KB/s, 4 at a time: about 5 s, stopped after 8 files.
    archive.configure({"bandwidth": 128_000})
    args = ("-a", "item=bulk-40")
    settings = {"RAVEL_ORIGIN": archive.archive, "CONCURRENT_REQUESTS_PER_DOMAIN": 4}
    crawl = start_crawl(*args, store=tmp_path, **settings)
    try:
        wait_for_files(tmp_path, 8, crawl, timeout=60)
        crawl.send_signal(stop)
        crawl.communicate(timeout=60)
    finally:
        crawl.kill()
    assert crawl.returncode != 0
    first = stored_files(tmp_path)
    assert 8 <= len(first) < 40
    assert_all_verified(tmp_path, "bulk-40")
    if stop != signal.SIGKILL:
        assert list(tmp_path.rglob("*.part")) == []

    archive.reset()
    archive.configure({"bandwidth": None})
    again = scrapy_crawl(*args, store=tmp_path, **settings)
    assert again.returncode == 0, again.log
    fetched = {e["path"].rsplit("/", 1)[1] for e in attempts(archive, ".mp3", "127.0.0.2")}
    assert fetched.isdisjoint(Path(p).name for p in first)
    assert len(fetched) == 40 - len(first)
    assert len(stored_files(tmp_path)) == 40
    assert_all_verified(tmp_path, "bulk-40")


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB filesystem: room for two or three of the Ravel item's files, not five."""
    with small_tmpfs(tmp_path, "400k") as mountpoint:
        yield mountpoint


@pytest.mark.slow
def test_a_full_disk_stops_the_crawl_and_keeps_what_is_stored(archive, small_disk):
    crawl = crawl_ravel(archive, small_disk, CONCURRENT_REQUESTS_PER_DOMAIN=1)

    assert crawl.returncode == 1
    stopping = [line for line in crawl.errors if "FILES_STORE failed" in line]
    assert len(stopping) == 1 and "No space left on device" in stopping[0]
    assert "Traceback" not in crawl.log
    kept = stored_files(small_disk)
    assert 1 <= len(kept) < 5
    assert_all_verified(small_disk)
    # No partial file among the stored ones: a transfer the full disk cut off may only wait
    # in .ravel/parts, for the next run to resume (see Resumed downloads).
    parts = small_disk / ".ravel" / "parts"
    assert [p for p in small_disk.rglob("*.part") if not p.is_relative_to(parts)] == []


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_a_body_without_content_length_is_normal(archive, tmp_path, framing):
    # 158,911 bytes at 200 kB/s: the transfer takes about 0.8 s.
    archive.configure(
        {"bandwidth": 200_000, "faults": [{"match": TARGET, "kind": framing, "times": 1}]}
    )
    crawl = crawl_ravel(archive, tmp_path, CONCURRENT_REQUESTS_PER_DOMAIN=5)

    assert crawl.returncode == 0, crawl.log
    assert [f["kind"] for f in archive.stats()["faults_fired"]] == [framing]
    assert "Traceback" not in crawl.log
    assert f"[download start] {TARGET} (size unknown)" in crawl.log
    finished = re.search(rf"\[download finished\] {TARGET} \(0\.2 MB, (\d+\.\d) s\)", crawl.log)
    assert finished, crawl.log
    assert 0.5 <= float(finished.group(1)) < 5
    assert (tmp_path / RAVEL / TARGET).read_bytes() == file_bytes(RAVEL, TARGET)
    assert_all_verified(tmp_path)


@pytest.mark.slow
def test_without_md5_or_size_a_cut_body_is_refused_and_the_rest_is_unverified(archive, tmp_path):
    # /metadata fails: the page's links give names only, no md5 and no size to check.
    archive.configure(
        {
            "metadata_fail": [RAVEL],
            "faults": [{"match": TARGET, "kind": "close_short", "times": 10}],
        }
    )
    manifest = tmp_path / "files.jsonl"
    crawl = scrapy_crawl(
        "-a",
        f"url={archive.details_url(RAVEL)}",
        "-O",
        str(manifest),
        store=tmp_path / "store",
        RETRY_TIMES=0,  # the /metadata 500 at once
    )

    assert crawl.returncode == 1
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert len(failed) == 1 and TARGET in failed[0] and "may be incomplete" in failed[0]
    assert not (tmp_path / "store" / RAVEL / TARGET).exists()
    assert len(stored_files(tmp_path / "store")) == 4
    warned = [
        line for line in crawl.log.splitlines() if "[WARNING]" in line and "[unverified]" in line
    ]
    assert len(warned) == 1 and "4 files stored without a checksum match" in warned[0]
    assert crawl.stat("ravel/files_unverified") == 4
    rows = {r["name"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert "may be incomplete" in rows[TARGET]["error"]
    assert (
        sorted(r["files"][0]["status"] for n, r in rows.items() if n != TARGET)
        == ["unverified"] * 4
    )


@pytest.mark.slow
def test_a_directory_at_a_files_name_fails_that_file_only(archive, tmp_path):
    (tmp_path / RAVEL / TARGET).mkdir(parents=True)
    (tmp_path / RAVEL / TARGET / "keep.txt").write_text("mine")
    crawl = crawl_ravel(archive, tmp_path)

    assert crawl.returncode == 1
    assert "FILES_STORE failed" not in crawl.log and "Traceback" not in crawl.log
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert len(failed) == 1 and TARGET in failed[0] and "Is a directory" in failed[0]
    assert (tmp_path / RAVEL / TARGET / "keep.txt").read_text() == "mine"
    assert len([p for p in stored_files(tmp_path) if p.endswith(".mp3")]) == 4
    assert "4 downloaded" in crawl.log and "1 failed" in crawl.log


AWKWARD_SUBFOLDER = "disc 2/07 Le Gibet.mp3"  # the awkward-names item's one name in a folder


def long_real_path(base: Path, length: int) -> Path:
    """A folder whose absolute path is exactly ``length`` characters long."""
    parts, used = [], len(str(base))
    while length - used > 256:
        parts.append("d" * 254)
        used += 255
    parts.append("e" * (length - used - 1))
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True)
    assert len(str(folder)) == length
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("clash", ["a file at a folder's name", "a path too long"])
def test_a_name_the_filesystem_refuses_fails_that_file_only(archive, tmp_path, clash):
    store = tmp_path / "store"
    if clash == "a file at a folder's name":
        (store / "awkward-names").mkdir(parents=True)
        (store / "awkward-names" / "disc 2").write_text("not a folder")
        reason = "Not a directory|File exists"
    else:
        # The store is a short link to a folder so deep that <store>/awkward-names fits in
        # PATH_MAX (4096) but <store>/awkward-names/disc 2 does not.
        store.symlink_to(long_real_path(tmp_path / "deep", 4096 - len("/awkward-names") - 4))
        reason = "File name too long"
    crawl = scrapy_crawl("-a", "item=awkward-names", store=store, RAVEL_ORIGIN=archive.archive)

    assert crawl.returncode == 1
    assert "FILES_STORE failed" not in crawl.log and "Traceback" not in crawl.log
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert len(failed) == 1 and "07 Le Gibet.mp3" in failed[0], crawl.errors
    assert re.search(reason, failed[0]), failed[0]
    assert "7 downloaded" in crawl.log and "1 failed" in crawl.log


@pytest.mark.slow
def test_a_redirect_to_a_foreign_host_fails_the_file_without_connecting(archive, tmp_path):
    trap = socket.create_server(("127.0.0.3", 0))  # a host no file may be fetched from
    trap.setblocking(False)
    foreign = f"http://127.0.0.3:{trap.getsockname()[1]}"
    rule = {"match": TARGET, "kind": "redirect_foreign", "location": foreign, "times": 10}
    archive.configure({"faults": [rule]})
    with trap:
        crawl = crawl_ravel_front(archive, tmp_path)
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody ever connected

    assert crawl.returncode == 1
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert len(failed) == 1 and TARGET in failed[0]
    assert "refused a redirect to '127.0.0.3'" in failed[0]
    assert "RAVEL_STORAGE_HOSTS: 127.0.0.2" in failed[0]
    assert not (tmp_path / RAVEL / TARGET).exists()
    assert len(stored_files(tmp_path)) == 4
