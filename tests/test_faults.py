"""The fault matrix: each fault injected for real into a real crawl.

Every file ends up byte-exact and verified, or is reported failed; never a corrupt or
partial file that looks good.
"""

from __future__ import annotations

import hashlib
import itertools
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Crawl, scrapy_crawl, start_crawl, stored_files
from tests.fakearchive import file_bytes, md5_of

RAVEL = "ThePianoMusicOfMauriceRavel"
TARGET = "02JeuxDeauPourPianoMr30.mp3"  # 158,911 bytes in the fake


def attempts(archive, name: str, host: str) -> list[dict]:
    return [e for e in archive.stats()["log"] if e["host"] == host and e["path"].endswith(name)]


def crawl_ravel(archive, store: Path, **settings) -> Crawl:
    return scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=store, **settings)


def assert_all_verified(store: Path, identifier: str = RAVEL) -> None:
    for path, body in stored_files(store).items():
        assert "/" in path and not Path(path).name.endswith(".part"), path
        assert hashlib.md5(body).hexdigest() == md5_of(identifier, path.split("/", 1)[1]), path


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


def test_a_503_storm_backs_off_exponentially_then_succeeds(archive, tmp_path):
    archive.configure({"faults": [{"match": TARGET, "kind": "503", "times": 3}]})
    crawl = crawl_ravel(archive, tmp_path, RAVEL_RETRY_BACKOFF_BASE=0.4)

    assert crawl.returncode == 0, crawl.log
    tries = attempts(archive, TARGET, "127.0.0.1")
    assert [t["status"] for t in tries] == [503, 503, 503, 302]
    waits = [b["start"] - a["end"] for a, b in itertools.pairwise(tries)]
    for wait, backoff in zip(waits, (0.4, 0.8, 1.6), strict=True):
        assert wait >= backoff - 0.05, waits
    assert (tmp_path / RAVEL / TARGET).read_bytes() == file_bytes(RAVEL, TARGET)


def test_a_503_storm_that_never_ends_is_reported(archive, tmp_path):
    archive.configure({"faults": [{"match": TARGET, "kind": "503", "times": 100}]})
    crawl = crawl_ravel(archive, tmp_path, RETRY_TIMES=2)

    assert crawl.returncode == 1
    assert len(attempts(archive, TARGET, "127.0.0.1")) == 3
    failed = [line for line in crawl.errors if "[download failed]" in line]
    assert len(failed) == 1 and TARGET in failed[0] and "HTTP 503" in failed[0]
    assert f"/download/{RAVEL}/{TARGET}" in failed[0]
    assert not (tmp_path / RAVEL / TARGET).exists()
    assert "4 downloaded" in crawl.log and "1 failed" in crawl.log


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("redirect_loop", "max redirections"), ("redirect_404", "HTTP 404")],
)
def test_broken_redirects_are_reported_with_the_url(archive, tmp_path, kind, reason):
    archive.configure({"faults": [{"match": TARGET, "kind": kind, "times": 100}]})
    crawl = crawl_ravel(archive, tmp_path)

    assert crawl.returncode == 1
    failed = [line for line in crawl.errors if TARGET in line]
    assert len(failed) == 1 and reason in failed[0] and "http://127.0.0." in failed[0]
    assert not (tmp_path / RAVEL / TARGET).exists()
    assert "Traceback" not in crawl.log


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
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_stops_the_crawl_and_keeps_what_is_stored(archive, small_disk):
    crawl = crawl_ravel(archive, small_disk, CONCURRENT_REQUESTS_PER_DOMAIN=1)

    assert crawl.returncode == 1
    stopping = [line for line in crawl.errors if "FILES_STORE failed" in line]
    assert len(stopping) == 1 and "No space left on device" in stopping[0]
    assert "Traceback" not in crawl.log
    kept = stored_files(small_disk)
    assert 1 <= len(kept) < 5
    assert_all_verified(small_disk)
    assert list(small_disk.rglob("*.part")) == []
