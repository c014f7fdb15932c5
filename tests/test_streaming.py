"""File bodies streamed to the store as they arrive: memory stays flat, nothing is left over."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from benchmarks.measure import run_measured
from ravelscraper.stores import AtomicFSFilesStore, current_umask
from ravelscraper.streaming import PartFile, StoreWriteError, StreamTarget, streamable
from tests.conftest import ROOT, crawl_command, crawl_env, stored_files

CHUNKS = [b"a" * 65536, b"b" * 1000, b"c" * 70000]
BODY = b"".join(CHUNKS)


class Transport:
    def __init__(self) -> None:
        self.stopped = self.lost = False

    def stopProducing(self) -> None:
        self.stopped = True

    def loseConnection(self) -> None:
        self.lost = True


def reader() -> Any:
    return SimpleNamespace(_finished=Deferred(), transport=Transport())


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture(params=["unnamed", "named"])
def tmpfile_mode(request, monkeypatch):
    """Both kinds of part file: O_TMPFILE where supported, a named .ravel-*.part elsewhere."""
    if request.param == "named":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    elif not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE here")
    return request.param


def test_a_streamed_body_is_hashed_and_renamed_into_place(tmp_path, tmpfile_mode):
    store = AtomicFSFilesStore(tmp_path)
    target = StreamTarget(tmp_path / "item" / "disc 1")
    part = PartFile(target, reader())
    for chunk in CHUNKS:
        assert part.write(chunk) == len(chunk)
    named = files_in(tmp_path)
    assert named == ([] if tmpfile_mode == "unnamed" else [named[0]])
    assert all(n.startswith(".ravel-") and n.endswith(".part") for n in named)
    assert part.getvalue() == b""
    body = target.take()
    assert body is not None and body.size == len(BODY)
    assert body.md5 == hashlib.md5(BODY).hexdigest()
    store.commit_part(body.fd, body.path, "item/disc 1/a.mp3")
    body.discard()
    assert files_in(tmp_path) == ["a.mp3"]
    assert (tmp_path / "item/disc 1/a.mp3").read_bytes() == BODY


def test_a_part_that_cannot_be_linked_is_copied(tmp_path, monkeypatch):
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE here")
    target = StreamTarget(tmp_path / "item")
    part = PartFile(target, reader())
    part.write(BODY)
    part.getvalue()
    body = target.take()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    AtomicFSFilesStore(tmp_path).commit_part(body.fd, body.path, "item/a.mp3")
    body.discard()
    assert files_in(tmp_path) == ["a.mp3"]
    assert (tmp_path / "item/a.mp3").read_bytes() == BODY


def test_download_maxsize_and_failed_attempts_leave_nothing(tmp_path, tmpfile_mode):
    target = StreamTarget(tmp_path)
    part = PartFile(target, reader())
    part.write(BODY)
    part.truncate(0)  # what _ResponseReader does past DOWNLOAD_MAXSIZE
    assert part.write(BODY) == 0  # nothing more is written
    assert part.getvalue() == b"" and target.take() is None
    assert files_in(tmp_path) == []

    part = PartFile(target, reader())
    part.write(BODY)
    part.discard()  # a reset, a stall, a cancelled transfer
    part.discard()
    assert files_in(tmp_path) == []


def test_each_attempt_has_its_own_file_and_the_latest_wins(tmp_path, tmpfile_mode):
    target = StreamTarget(tmp_path)
    for payload in (b"first", b"second"):
        part = PartFile(target, reader())
        part.write(payload)
        part.getvalue()
    body = target.take()
    assert body.size == len(b"second")
    assert len(files_in(tmp_path)) == (0 if tmpfile_mode == "unnamed" else 1)
    body.discard()
    target.discard()
    assert files_in(tmp_path) == []


def test_a_full_disk_aborts_the_transfer_with_the_os_error(tmp_path, monkeypatch, tmpfile_mode):
    target = StreamTarget(tmp_path)
    response_reader = reader()
    part = PartFile(target, response_reader)
    part.write(b"x" * 100)

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    part.write(b"y" * 100)
    failures: list[Any] = []
    response_reader._finished.addErrback(failures.append)
    assert isinstance(failures[0].value, StoreWriteError)
    assert "No space left on device" in str(failures[0].value)
    assert target.error is not None and target.error.errno == 28
    assert response_reader.transport.stopped and response_reader.transport.lost
    assert part.getvalue() == b"" and target.take() is None
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("code", "headers", "expected"),
    [
        (200, {}, True),
        (200, {b"Content-Encoding": [b"gzip"]}, False),
        (302, {b"Location": [b"http://x/"]}, False),
        (404, {}, False),
        (503, {}, False),
    ],
)
def test_only_plain_200_bodies_are_streamed(code, headers, expected):
    assert streamable(SimpleNamespace(code=code, headers=Headers(headers))) is expected


def test_a_large_file_is_not_held_in_memory(archive, tmp_path):
    size = 200_000_000
    archive.configure({"items": {"big": {"count": 1, "size": size}}})
    (entry,) = [f for f in archive.item("big").files if f.size == size]
    command = crawl_command(
        "-a", "item=big", store=tmp_path / "store", RAVEL_ORIGIN=archive.archive
    )
    log = tmp_path / "crawl.log"
    measured = run_measured(command, log=log, cwd=ROOT, env=crawl_env(), timeout=300)
    text = log.read_text()
    assert measured.returncode == 0, text[-3000:]
    stored = tmp_path / "store" / "big" / entry.name
    assert stored.stat().st_size == size
    digest = hashlib.md5()
    with stored.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == archive.md5_of("big", entry.name)
    assert [p for p in (tmp_path / "store").rglob("*.part")] == []
    peak_mb = measured.peak_rss / 1e6
    print(f"\n{size / 1e6:.0f} MB file: peak RSS {peak_mb:.0f} MB, {measured.wall:.1f} s")
    assert measured.peak_rss < 0.5 * size + 150e6
    assert f"[download finished] {entry.name} ({size / 1e6:.1f} MB" in text
    assert list(stored_files(tmp_path / "store")) == [f"big/{entry.name}"]


def test_a_streamed_file_gets_the_umask_like_any_download(tmp_path, tmpfile_mode):
    target = StreamTarget(tmp_path / "item")
    part = PartFile(target, reader())
    part.write(BODY)
    part.getvalue()
    body = target.take()
    AtomicFSFilesStore(tmp_path).commit_part(body.fd, body.path, "item/a.mp3")
    body.discard()
    expected = 0o666 & ~current_umask()
    assert stat.S_IMODE((tmp_path / "item" / "a.mp3").stat().st_mode) == expected
