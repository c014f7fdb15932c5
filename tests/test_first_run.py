"""A newcomer's first run: offline it fails fast and clean; online the first file starts soon.

The offline tests that need DNS failures or a missing route run the crawl in a network
namespace of its own (``unshare -rn``): nothing in it can leave the machine, not even a DNS
query (``no-such-host.invalid`` would otherwise be sent to the configured resolver). Where
user namespaces are not allowed, those tests are skipped; connection refused always runs.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import time

import pytest

from tests.fakearchive import max_simultaneous
from tests.support.crawl import Crawl, scrapy_crawl, stored_files

OFFLINE_LIMIT = 15.0  # seconds from launch to the ERROR line's exit (issue 9)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


def offline_crawl(url: str, tmp_path, *, namespace: bool) -> tuple[Crawl, float]:
    """The crawl with the default retry settings, timed; in its own network namespace."""
    started = time.monotonic()
    crawl = scrapy_crawl(
        "-a",
        f"url={url}",
        store=tmp_path,
        wrapper=("unshare", "-rn") if namespace else (),
        RAVEL_RETRY_BACKOFF_BASE=1.0,
        RETRY_TIMES=5,
    )
    return crawl, time.monotonic() - started


def assert_fails_fast(result: Crawl, seconds: float, host: str, cause: str) -> None:
    assert result.returncode == 1
    assert seconds < OFFLINE_LIMIT, f"{seconds:.1f} s"
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert f"cannot reach {host}: {cause}" in error
    assert "Check the network connection, or the proxy (HTTPS_PROXY" in error
    assert "Traceback" not in result.log
    assert "Spider closed (archive_unreachable)" in result.log


@pytest.mark.slow
def test_connection_refused_at_start_fails_fast(tmp_path):
    port = closed_port()
    result, seconds = offline_crawl(f"http://127.0.0.1:{port}/details/x", tmp_path, namespace=False)
    assert_fails_fast(result, seconds, f"127.0.0.1:{port}", "the connection was refused")


@pytest.mark.slow
@pytest.mark.skipif(not can_unshare(), reason="needs user and network namespaces (unshare -rn)")
@pytest.mark.parametrize(
    ("url", "host", "cause"),
    [
        ("http://no-such-host.invalid/details/x", "no-such-host.invalid", "its name does not"),
        ("https://archive.org/details/x", "archive.org", "its name does not resolve"),
        ("http://192.0.2.1/details/x", "192.0.2.1", "there is no route to it"),
    ],
)
def test_offline_fails_fast_with_the_host_and_the_cause(tmp_path, url, host, cause):
    result, seconds = offline_crawl(url, tmp_path, namespace=True)
    assert_fails_fast(result, seconds, host, cause)


@pytest.mark.slow
def test_a_refused_connection_once_archive_org_has_answered_keeps_its_retries(archive, tmp_path):
    # Mid-crawl, one file's storage node refuses connections: retried as any transient
    # error (its robots.txt too, then skipped), then that file fails; the crawl goes on.
    name = "01PavanePourUneInfanteDfuntePourPianoMr19.mp3"
    archive.configure(faults=[{"match": name, "kind": "redirect_refused"}])
    result = scrapy_crawl(
        "-a",
        "item=ThePianoMusicOfMauriceRavel",
        store=tmp_path,
        RAVEL_ORIGIN=archive.archive,
        RETRY_TIMES=2,
    )
    assert result.returncode == 1
    retries = [line for line in result.log.splitlines() if "[retry]" in line]
    assert (
        len(
            [
                line
                for line in retries
                if line.endswith(f"{name}: DownloadConnectionRefusedError, retrying in 0.1 s")
            ]
        )
        == 1
    )
    assert len([line for line in retries if name in line]) == 2
    assert "archive_unreachable" not in result.log and "Traceback" not in result.log
    assert any("robots.txt of 127.0.0.2:" in line for line in result.log.splitlines())
    failed = [line for line in result.errors if "[download failed]" in line]
    assert len(failed) == 1 and name in failed[0]
    assert len(stored_files(tmp_path)) == 4


@pytest.mark.slow
def test_the_first_file_starts_within_one_pause_with_the_defaults(archive, tmp_path):
    """DOWNLOAD_DELAY 2 s ± 50 %: the first file request within one pause of the item's
    /metadata answer, measured at the server; the pause between files and the cap stay."""
    archive.configure(items={"first-file-3": {"count": 3, "size": 20_000}})
    launched = time.time()
    result = scrapy_crawl(
        "-a",
        "item=first-file-3",
        store=tmp_path,
        RAVEL_ORIGIN=archive.archive,
        DOWNLOAD_DELAY=2.0,
        DOWNLOAD_DELAY_JITTER=0.5,
        RAVEL_RETRY_BACKOFF_BASE=1.0,
    )
    assert result.returncode == 0, result.log
    assert len(stored_files(tmp_path)) == 3
    log = [e for e in archive.stats()["log"] if e["host"] == "127.0.0.1"]
    # The first file's /download 302, then the others straight from the storage node
    # (RAVEL_STORAGE_DIRECT): each file starts with its first request, on either host.
    assert len([e for e in log if e["path"].startswith("/download/")]) == 1
    starts: dict[str, float] = {}
    for entry in archive.stats()["log"]:
        if entry["path"].startswith("/download/") or "/items/" in entry["path"]:
            name = entry["path"].rsplit("/", 1)[1]
            starts[name] = min(starts.get(name, entry["start"]), entry["start"])
    files = sorted(starts.values())
    assert len(files) == 3
    # Within one pause (at most 2 s x 1.5) of the /metadata answer, measured at the server:
    # the crawl's start-up is not counted (seconds on a loaded machine), an extra pause is.
    metadata_end = next(e["end"] for e in log if e["path"].startswith("/metadata/"))
    first_file = files[0] - metadata_end
    assert first_file < 2.0 * 1.5 + 0.2, f"first file {first_file:.2f} s after /metadata"
    assert files[0] - launched < 60  # not stuck behind a retry
    assert min(b - a for a, b in itertools.pairwise(files)) >= 0.95  # 2 s ± 50 %
    everything = archive.stats()["log"]
    assert max_simultaneous(e for e in everything if "/items/" in e["path"]) <= 2
    # /metadata first, then the details page at the listing pace (not a file's pause).
    listing = {e["path"].split("/")[1]: e["start"] for e in log}
    assert 0.45 <= listing["details"] - listing["metadata"] < 1.0  # RAVEL_LISTING_DELAY
