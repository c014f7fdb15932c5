"""File bodies streamed to the store as they arrive: memory stays flat, nothing is left over."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import queue
import random
import stat
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy.http import Response
from scrapy.pipelines.media import FileException
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers

from ravelscraper.downloader import streaming
from ravelscraper.downloader.streaming import (
    STREAM_META,
    STREAMED,
    PartFile,
    StoreWriteError,
    StreamedBody,
    StreamTarget,
    streamable,
)
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.files import VerifiedFilesPipeline
from ravelscraper.spiders.ravel import RavelSpider
from ravelscraper.stores import direct
from ravelscraper.stores.local import AtomicFSFilesStore, current_umask
from tests.fakearchive import sha1_of
from tests.support.crawl import ROOT, crawl_command, crawl_env, stored_files
from tests.support.measure import run_measured

CHUNKS = [b"a" * 65536, b"b" * 1000, b"c" * 70000]
BODY = b"".join(CHUNKS)


class Transport:
    def __init__(self) -> None:
        self.stopped = self.lost = False
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.stopped = True

    def loseConnection(self) -> None:
        self.lost = True


def reader() -> Any:
    return SimpleNamespace(_finished=Deferred(), transport=Transport())


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def reactor_calls(monkeypatch) -> queue.Queue:
    """What the writer threads ask the reactor thread to do, run by :func:`run_reactor`."""
    calls: queue.Queue = queue.Queue()
    monkeypatch.setattr(streaming, "call_on_reactor", lambda f, *args: calls.put((f, args)))
    return calls


def run_reactor(calls: queue.Queue, part: PartFile, timeout: float = 5.0) -> None:
    """Wait until ``part``'s writer thread is out, then run what it asked of the reactor."""
    deadline = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if not part.writing:
            break
        deadline.wait(0.01)
    assert not part.writing, "the writer thread is stuck"
    while not calls.empty():
        function, args = calls.get()
        function(*args)


def settled(body: StreamedBody | None) -> tuple[int, str]:
    """A streamed body's (size, digest), once its last queued write is done."""
    assert body is not None
    return body.part.done.result(timeout=5)


def streamed(folder: Path) -> StreamedBody:
    """BODY streamed to a part file in ``folder``, its last write done."""
    target = StreamTarget(folder)
    part = PartFile(target, reader())
    part.write(BODY)
    part.getvalue()
    body = target.take()
    settled(body)
    assert body is not None
    return body


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
    assert part.getvalue() == b""
    body = target.take()
    assert settled(body) == (len(BODY), hashlib.md5(BODY).hexdigest())
    named = files_in(tmp_path)
    assert named == ([] if tmpfile_mode == "unnamed" else [named[0]])
    assert all(n.startswith(".ravel-") and n.endswith(".part") for n in named)
    store.commit_part(body.fd, body.path, "item/disc 1/a.mp3")
    body.discard()
    assert files_in(tmp_path) == ["a.mp3"]
    assert (tmp_path / "item/disc 1/a.mp3").read_bytes() == BODY


def test_written_bytes_are_dropped_from_the_page_cache_behind_the_writer(
    tmp_path, tmpfile_mode, monkeypatch
):
    if streaming.FADVISE is None:
        pytest.skip("no posix_fadvise here")
    dropped: list[tuple[int, int, int]] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        dropped.append((offset, length, advice))
        os.posix_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(streaming, "FADVISE", fadvise)
    monkeypatch.setattr(direct, "O_DIRECT", 0)  # where the file system refuses O_DIRECT
    chunk = bytes(range(256)) * (streaming.BATCH // 256)
    count = 3 * streaming.DROP_LAG // streaming.BATCH
    target = StreamTarget(tmp_path)
    part = PartFile(target, reader())
    for _ in range(count):
        part.write(chunk)
    part.getvalue()
    body = target.take()
    size = count * len(chunk)
    assert settled(body) == (size, hashlib.md5(chunk * count).hexdigest())
    assert {advice for _, _, advice in dropped} == {os.POSIX_FADV_DONTNEED}
    ends = [offset + length for offset, length, _ in dropped]
    assert dropped[0][0] == 0 and ends == sorted(ends) and ends[-1] == size
    # each call starts where the previous one stopped dropping: the last DROP_LAG bytes again
    for (offset, _, _), end in zip(dropped[1:], ends, strict=False):
        assert offset == end - streaming.DROP_LAG
    assert body is not None and body.fd is not None
    assert os.pread(body.fd, size + 1, 0) == chunk * count
    body.discard()


def uneven_body(count: int) -> list[bytes]:
    """``count`` chunks of uneven sizes (none a multiple of a block), all bytes values."""
    return [random.Random(i).randbytes(i * 4099 + 65) for i in range(count)]


@pytest.mark.parametrize("refusal", ["none", "flag", "write", "setting"])
def test_a_new_file_written_with_o_direct_holds_every_byte(
    tmp_path, tmpfile_mode, monkeypatch, refusal
):
    """O_DIRECT from byte 0 where the file system takes it, the last partial block written
    the ordinary way; where it refuses the flag or a write, or RAVEL_DIRECT_WRITES is off,
    ordinary writes: the same file."""
    if not direct.O_DIRECT:
        pytest.skip("no O_DIRECT here")
    writes: list[tuple[bool, int]] = []  # (O_DIRECT on, length) of each write
    real_write, real_fcntl = os.write, direct.fcntl.fcntl

    def write(fd: int, data: Any) -> int:
        on = bool(real_fcntl(fd, direct.fcntl.F_GETFL) & direct.O_DIRECT)
        if on and refusal == "write":
            raise OSError(errno.EINVAL, "Invalid argument")
        writes.append((on, len(data)))
        return real_write(fd, data)

    def refuse(*args: Any) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(direct.os, "write", write)
    if refusal == "flag":
        monkeypatch.setattr(direct.fcntl, "fcntl", refuse)
    chunks = uneven_body(40)  # 3.2 MB: more than the aligned buffer holds
    whole = b"".join(chunks)
    target = StreamTarget(tmp_path, "sha1")
    part = PartFile(target, reader(), direct=refusal != "setting")
    for chunk in chunks:
        part.write(chunk)
    part.getvalue()
    body = target.take()
    assert settled(body) == (len(whole), hashlib.sha1(whole).hexdigest())
    assert body is not None and body.fd is not None
    assert os.pread(body.fd, len(whole) + 1, 0) == whole
    assert (
        not real_fcntl(body.fd, direct.fcntl.F_GETFL) & direct.O_DIRECT
    )  # the pipeline reads or copies it as usual
    if refusal == "none":
        assert all(length % direct.ALIGN == 0 for on, length in writes if on)
        assert sum(length for on, length in writes if on) == len(whole) - len(whole) % 4096
        assert writes[-1] == (False, len(whole) % direct.ALIGN)
    else:
        assert writes and not any(on for on, _ in writes)
    body.discard()


def test_a_part_that_cannot_be_linked_is_copied(tmp_path, monkeypatch):
    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("no O_TMPFILE here")
    body = streamed(tmp_path / "item")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    AtomicFSFilesStore(tmp_path).commit_part(body.fd, body.path, "item/a.mp3")
    body.discard()
    assert files_in(tmp_path) == ["a.mp3"]
    assert (tmp_path / "item/a.mp3").read_bytes() == BODY


def test_download_maxsize_and_failed_attempts_leave_nothing(tmp_path, tmpfile_mode, reactor_calls):
    target = StreamTarget(tmp_path)
    part = PartFile(target, reader())
    part.write(BODY)
    part.truncate(0)  # what _ResponseReader does past DOWNLOAD_MAXSIZE
    assert part.write(BODY) == 0  # nothing more is written
    assert part.getvalue() == b"" and target.take() is None
    run_reactor(reactor_calls, part)
    assert files_in(tmp_path) == []

    part = PartFile(target, reader())
    part.write(BODY)
    part.discard()  # a reset, a stall, a cancelled transfer
    part.discard()
    run_reactor(reactor_calls, part)
    assert files_in(tmp_path) == []


def test_each_attempt_has_its_own_file_and_the_latest_wins(tmp_path, tmpfile_mode, reactor_calls):
    target = StreamTarget(tmp_path)
    for payload in (b"first", b"second"):
        part = PartFile(target, reader())
        part.write(payload)
        part.getvalue()
        run_reactor(reactor_calls, part)
    body = target.take()
    assert settled(body)[0] == len(b"second")
    assert len(files_in(tmp_path)) == (0 if tmpfile_mode == "unnamed" else 1)
    body.discard()
    target.discard()
    assert files_in(tmp_path) == []


def test_a_full_disk_aborts_the_transfer_with_the_os_error(
    tmp_path, monkeypatch, tmpfile_mode, reactor_calls
):
    target = StreamTarget(tmp_path)
    response_reader = reader()
    part = PartFile(target, response_reader)
    part.write(b"x" * 100)
    run_reactor(reactor_calls, part)

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    part.write(b"y" * streaming.BATCH)  # a batch: the writer thread takes it, and fails
    run_reactor(reactor_calls, part)
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


@pytest.mark.slow
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
    body = streamed(tmp_path / "item")
    AtomicFSFilesStore(tmp_path).commit_part(body.fd, body.path, "item/a.mp3")
    body.discard()
    expected = 0o666 & ~current_umask()
    assert stat.S_IMODE((tmp_path / "item" / "a.mp3").stat().st_mode) == expected


# --- the writer thread: a file is complete only once its last queued write is ----------------

SLOW_BODY = b"".join(bytes([i]) * 65536 for i in range(40))  # 40 chunks of 64 KiB


@pytest.fixture
def pipeline(tmp_path):
    crawler = get_crawler(RavelSpider, {"FILES_STORE": str(tmp_path / "store")})
    crawler.spider = crawler._create_spider()
    pipe = VerifiedFilesPipeline.from_crawler(crawler)
    pipe.open_spider()
    return pipe


def verified_item(body: bytes) -> AudioFile:
    url = "http://127.0.0.1:1/download/item/a.mp3"
    return AudioFile(
        identifier="item",
        name="a.mp3",
        url=url,
        file_urls=[url],
        size=len(body),
        md5=hashlib.md5(body).hexdigest(),
        sha1=hashlib.sha1(body).hexdigest(),
    )


def hold_last_write(monkeypatch, last: bytes, error: OSError | None = None) -> threading.Event:
    """The writer's call that holds ``last`` waits for the returned event (then fails with
    ``error``, if given): the body's last write is still queued when the pipeline gets it."""
    release = threading.Event()
    write_all, write_direct = streaming.write_all, direct.DirectWriter.write

    def hold(data: bytes) -> None:
        if data.endswith(last):
            assert release.wait(10)
            if error is not None:
                raise error

    def held(fd: int, data: bytes) -> None:
        hold(data)
        write_all(fd, data)

    def held_direct(writer: direct.DirectWriter, data: bytes) -> None:
        hold(data)
        write_direct(writer, data)

    monkeypatch.setattr(streaming, "write_all", held)  # a file continued, or no O_DIRECT
    monkeypatch.setattr(direct.DirectWriter, "write", held_direct)  # a new file
    return release


def stream_to_pipeline(pipeline: VerifiedFilesPipeline, item: AudioFile, chunks: list[bytes]):
    """Stream ``chunks`` as the HTTP handler would, then hand the response to the pipeline."""
    request = pipeline.get_media_requests(item, pipeline.spiderinfo)[0]
    part = PartFile(request.meta[STREAM_META], reader())
    for chunk in chunks:
        part.write(chunk)
    part.getvalue()  # the body is complete on the wire; its last write is not on disk
    response = Response(request.url, status=200, flags=[STREAMED], request=request)
    return pipeline.media_downloaded(response, request, pipeline.spiderinfo, item=item)


@pytest.mark.slow
@pytest.mark.parametrize("tmpfile", ["unnamed", "named"])
def test_a_file_whose_last_write_is_pending_is_never_committed_or_verified(
    pipeline, tmp_path, monkeypatch, tmpfile
):
    if tmpfile == "named":
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    chunks = [SLOW_BODY[i : i + 65536] for i in range(0, len(SLOW_BODY), 65536)]
    release = hold_last_write(monkeypatch, chunks[-1])
    item = verified_item(SLOW_BODY)
    stored = tmp_path / "store" / "item" / "a.mp3"

    async def scenario() -> dict[str, Any]:
        verifying = asyncio.ensure_future(stream_to_pipeline(pipeline, item, chunks))
        await asyncio.sleep(0.5)
        # The last chunk is still queued: nothing is stored, counted or reported yet.
        assert not verifying.done()
        assert not stored.exists()
        assert pipeline.stats.get_value("ravel/files_downloaded") is None
        release.set()
        return await asyncio.wait_for(verifying, 10)

    result = asyncio.run(scenario())
    assert stored.read_bytes() == SLOW_BODY
    assert result["status"] == "downloaded"
    assert (result["checksum_type"], result["checksum"]) == ("sha1", item.sha1)
    assert pipeline.stats.get_value("ravel/files_downloaded") == 1
    assert files_in(tmp_path / "store") == ["a.mp3"]


def test_a_last_write_that_fails_stores_nothing_and_fails_the_file(pipeline, tmp_path, monkeypatch):
    chunks = [SLOW_BODY[i : i + 65536] for i in range(0, len(SLOW_BODY), 65536)]
    release = hold_last_write(monkeypatch, chunks[-1], OSError(28, "No space left on device"))
    stopped: list[OSError] = []
    monkeypatch.setattr(pipeline, "store_failed", stopped.append)  # no engine to stop here
    item = verified_item(SLOW_BODY)

    async def scenario() -> None:
        verifying = asyncio.ensure_future(stream_to_pipeline(pipeline, item, chunks))
        await asyncio.sleep(0.2)
        release.set()
        with pytest.raises(FileException, match="No space left on device"):
            await asyncio.wait_for(verifying, 10)

    asyncio.run(scenario())
    assert files_in(tmp_path / "store") == []
    assert [e.errno for e in stopped] == [28]
    assert pipeline.stats.get_value("ravel/files_downloaded") is None


def test_a_writer_that_falls_behind_pauses_the_transport_then_resumes_it(tmp_path, reactor_calls):
    chunks = [bytes(1 << 20)] * 12  # 12 MiB queued at once: past the 2 MiB that pauses
    release = threading.Event()
    write_all = streaming.write_all

    def slow(fd: int, data: bytes) -> None:
        assert release.wait(10)
        write_all(fd, data)

    streaming.write_all = slow
    try:
        response_reader = reader()
        part = PartFile(StreamTarget(tmp_path), response_reader)
        for chunk in chunks:
            part.write(chunk)
        assert response_reader.transport.calls == ["pause"]
        assert part.backlog <= len(chunks) << 20
        release.set()
        part.getvalue()
        run_reactor(reactor_calls, part)
    finally:
        streaming.write_all = write_all
    assert response_reader.transport.calls == ["pause", "resume"]
    assert settled(StreamedBody(part))[0] == 12 << 20
    part.discard()


# A crawl whose disk writes at 40 MB/s, far below what the loopback delivers.
SLOW_DISK_CRAWL = """
import sys, time
from ravelscraper.downloader import streaming
write_all = streaming.write_all
def slow_disk(fd, data):
    time.sleep(len(data) / 40e6)
    write_all(fd, data)
streaming.write_all = slow_disk
from scrapy.cmdline import execute
sys.argv[0] = "scrapy"
execute()
"""


@pytest.mark.slow
def test_a_slow_disk_pauses_the_download_instead_of_filling_memory(archive, tmp_path):
    size = 120_000_000
    archive.configure({"items": {"slow-disk": {"count": 1, "size": size}}})
    (entry,) = [f for f in archive.item("slow-disk").files if f.size == size]
    command = crawl_command(
        "-a", "item=slow-disk", store=tmp_path / "store", RAVEL_ORIGIN=archive.archive
    )
    assert command[1:3] == ["-m", "scrapy"]
    command[1:3] = ["-c", SLOW_DISK_CRAWL]
    log = tmp_path / "crawl.log"
    measured = run_measured(command, log=log, cwd=ROOT, env=crawl_env(), timeout=120)
    text = log.read_text()
    assert measured.returncode == 0, text[-3000:]
    stored = tmp_path / "store" / "slow-disk" / entry.name
    with stored.open("rb") as f:
        assert hashlib.file_digest(f, "sha1").hexdigest() == sha1_of("slow-disk", entry.name, size)
    assert "unverified" not in text
    # Unpaused, the body would pile up in memory at loopback speed (over 100 MB here).
    print(f"\nslow disk: peak RSS {measured.peak_rss / 1e6:.0f} MB, {measured.wall:.1f} s")
    assert measured.peak_rss < 150e6
