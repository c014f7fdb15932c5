"""Stream file downloads to a ``.ravel-*.part`` file instead of holding them in memory.

Scrapy's HTTP/1.1 handler accumulates a body in a ``BytesIO``: a 512 MB file costs 512 MB
of memory. For a request whose meta carries a :class:`StreamTarget` (``STREAM_META``, set
by ``VerifiedFilesPipeline`` when the store is local), :class:`StreamingDownloadHandler`
writes a 200 response's body, as it arrives, to a temporary file in the target's folder,
computing its size and checksum (the target's ``algorithm``: sha1 or md5) on the way. The
response's body stays empty and gets the flag ``STREAMED``; the part file waits in the
target for the pipeline, which awaits its size and checksum, verifies them and renames the
file into place, or deletes it.

The writing and hashing run off the reactor thread: the reactor only queues each chunk, and
a writer thread (:data:`WRITERS`) writes and hashes each file's chunks in order, a batch at
a time. A file's backlog is bounded: past :data:`BACKLOG_PAUSE` queued bytes its transport
is paused until the writer catches up. The size and checksum are an awaited result
(:meth:`StreamedBody.result`) settled only after the last queued write, and the part file
stays open until then: a file is never verified, committed or reported before its last
byte is on disk.

Responses with a ``Content-Encoding`` (decompressed later by a middleware) and any status
other than 200 and 206 (redirects, errors) are kept in memory as usual. A transfer cut off
mid-body (a reset, a timeout, a short body) keeps its part file as the target's resume
point when the answer had a validator (ETag or Last-Modified): the retry asks for the rest
(``Range``/``If-Range``), and a ``206`` is appended to the same file, its digest continued
(:class:`StreamingDownloadHandler`). A re-download after a bad checksum starts a new part. A
failed write (a full disk) aborts the transfer with :class:`StoreWriteError`.

Scrapy has no public hook for this (scrapy/scrapy#7987): the swap of Scrapy's body buffer
for a :class:`PartFile` happens in :mod:`ravelscraper.scrapy_compat`
(:func:`~ravelscraper.scrapy_compat.download_to_sink`), which leans on private names of
Scrapy's HTTP/1.1 handler. It does not fail safe, it fails early and loudly: the crawl
command checks those names before anything starts and, if one is gone (another Scrapy than
the pinned one), exits 1 with one ERROR line naming it.

A file the listing gives a size or checksum (and, if a size, one of at least
``NAMED_PART_MIN_SIZE``) streams to its named part in ``<FILES_STORE>/.ravel/parts/``
(``ravelscraper.stores.parts``), which a crawl killed at any moment leaves for the next run
to resume. Otherwise (or when that place can't be used: a
symlinked ``.ravel``, a name too long), where the filesystem supports it (Linux
``O_TMPFILE``: ext4, xfs, btrfs, tmpfs...), the part file has no name until it is verified,
so even SIGKILL leaves nothing behind; elsewhere it is a named ``.ravel-*.part`` file, which
a crawl killed with SIGKILL can leave behind and which is safe to delete.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import hashlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.http import Response

from ravelscraper.downloader.bandwidth import PacedBuffer, Pacer, TokenBucket, bucket_for
from ravelscraper.logtags import RESUME
from ravelscraper.scrapy_compat import abort_body, download_to_sink
from ravelscraper.stores.base import PARTIAL_PREFIX, PARTIAL_SUFFIX, is_name_problem
from ravelscraper.stores.direct import DirectWriter
from ravelscraper.stores.local import FILE_MODE, write_all
from ravelscraper.stores.parts import (
    ClaimedPart,
    PartPlace,
    UnsafePartPlace,
    claim_part,
    create_part,
    nothing_to_claim,
    remove_place,
)

logger = logging.getLogger(__name__)

STREAM_META = "ravel_stream"
STREAMED = "ravel-streamed"

# Writer threads: each streamed file's chunks are written and hashed here, in order.
WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ravel-writer")
BACKLOG_PAUSE = 2 * 1024 * 1024  # queued bytes of one file that pause its transport
BACKLOG_RESUME = 512 * 1024  # ... and resume it once written down to this
BATCH = 512 * 1024  # queued bytes handed to a writer thread at once
# Written bytes dropped from the page cache as the file grows (posix_fadvise DONTNEED), all
# but the last DROP_LAG bytes, whose writeback may not be done yet: a mirror never reads
# them back, and fresh page-cache pages cost more CPU to fill than recycled ones.
DROP_LAG = 4 * 1024 * 1024
FADVISE = getattr(os, "posix_fadvise", None)

live_parts: set[PartFile] = set()  # part files written to and not yet deleted or committed


class StoreWriteError(Exception):
    """Writing a streamed body to the store failed; ``error`` is the OSError."""

    def __init__(self, error: OSError):
        super().__init__(f"cannot write to FILES_STORE: {error.strerror or error}")
        self.error = error


class StreamedBody:
    """A streamed body handed over by its :class:`PartFile`, maybe with writes still queued.

    :meth:`result` waits for the last queued write and returns (size, hex digest); only then
    are ``fd`` (the open part file) and ``path`` (its name, or None for an unnamed
    ``O_TMPFILE`` file, which the store links into place through ``fd``) final.
    :meth:`discard` deletes the file (once the writer thread is out of it).
    """

    def __init__(self, part: PartFile):
        self.part = part

    async def result(self) -> tuple[int, str]:
        """(size, hex digest) once every queued write is on disk; raises the write's OSError."""
        return await asyncio.wrap_future(self.part.done)

    @property
    def fd(self) -> int | None:
        return self.part.fd

    @property
    def path(self) -> Path | None:
        return self.part.path

    def discard(self) -> None:
        self.part.discard()

    def committed(self) -> None:
        """The store renamed the file into place (and deleted a named part's sidecar and
        emptied folders there): discarding it now only closes it."""
        self.part.path, self.part.named = None, False


class StreamTarget:
    """Where a request's body may be streamed, and the last complete attempt's result.

    With a ``place`` (a named part in the store, ``ravelscraper.stores.parts``) the part
    survives the process and a later run resumes it. ``resume`` is a part cut off mid-body
    (this run's, or claimed from an earlier run's), continued by the next attempt.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        algorithm: str = "md5",
        place: PartPlace | None = None,
        stats: Any = None,
    ):
        self.directory = Path(directory)
        self.algorithm = algorithm  # the hash computed as the body is written
        self.body: StreamedBody | None = None
        self.error: OSError | None = None
        self.place = place
        self.stats = stats
        self.resume: PartFile | None = None  # a part cut off mid-body, to continue
        self.claimed = place is None  # an earlier run's part was looked for
        self.label = f"{place.identifier}/{place.name}" if place else str(directory)

    async def resume_point(self) -> PartFile | None:
        """The part to continue (all its bytes on disk), or None: start from byte 0."""
        if not self.claimed:
            self.claimed = True
            assert self.place is not None
            if not nothing_to_claim(self.place):
                claimed = await asyncio.to_thread(claim_part, self.place, self.algorithm)
                if claimed is not None:
                    self.resume = PartFile.from_claim(self, claimed)
        part = self.resume
        if part is None:
            return None
        try:
            await asyncio.wrap_future(part.done)
        except OSError:  # its last writes failed: it is gone
            if self.resume is part:
                self.resume = None
            return None
        if self.resume is not part:
            return self.resume
        if part.size == 0:
            self.resume = None
            part.discard()
            return None
        return part

    def interrupted(self, part: PartFile) -> None:
        """``part`` was cut off mid-body: the next attempt continues it."""
        if self.resume is not None and self.resume is not part:
            self.resume.discard()
        self.resume = part

    def continued(self, part: PartFile) -> None:
        """The resume point ``part`` is being continued: count it."""
        self.resume = None
        self.count("ravel/bytes_resumed", part.size)
        logger.info(f"{RESUME} {self.label}: continuing from byte {part.size}")

    def restart(self, why: str) -> None:
        """Throw the resume point away: the file is fetched again from byte 0."""
        part, self.resume = self.resume, None
        if part is None:
            return
        self.count("ravel/bytes_refetched", part.size)
        logger.info(f"{RESUME} {self.label}: {why}; fetching it again from byte 0")
        part.discard()

    def count(self, key: str, value: int) -> None:
        if self.stats is not None and value:
            self.stats.inc_value(key, value)

    def publish(self, body: StreamedBody) -> None:
        self.discard_body()
        self.body = body

    def take(self) -> StreamedBody | None:
        """The streamed body, now the caller's to rename or delete."""
        body, self.body = self.body, None
        return body

    def discard_body(self) -> None:
        body, self.body = self.body, None
        if body is not None:
            body.discard()

    def discard(self) -> None:
        """Delete a streamed body nobody took; a part cut off mid-body is left for the next
        run where it has a place (closed, and deleted otherwise)."""
        self.discard_body()
        part, self.resume = self.resume, None
        if part is not None:
            part.discard(keep=True)


class PartFiles:
    """The stream targets handed out in one crawl, until their bodies are taken.

    :meth:`meta` opts a request in (its body is streamed to a part file in ``directory``),
    :meth:`release` hands the body streamed for a request over to the caller, :meth:`drop`
    deletes it, and :meth:`discard_all` deletes whatever nobody took (the crawl stopped
    before those files were verified).
    """

    def __init__(self, stats: Any = None) -> None:
        self.targets: set[StreamTarget] = set()  # targets whose part file may await us
        self.stats = stats  # where bytes resumed and fetched again are counted

    def meta(
        self, directory: str | os.PathLike[str], algorithm: str, place: PartPlace | None = None
    ) -> dict[str, StreamTarget]:
        """The request meta that streams the body to a part file in ``directory`` (or at
        ``place``, a named part a later run can resume)."""
        target = StreamTarget(directory, algorithm, place, self.stats)
        self.targets.add(target)
        return {STREAM_META: target}

    def release(self, request: Request) -> StreamedBody | None:
        """The body streamed for ``request``, if any, now the caller's to rename or delete."""
        target = request.meta.get(STREAM_META)
        if not isinstance(target, StreamTarget):
            return None
        self.targets.discard(target)
        body = target.take()
        target.discard()
        return body

    def drop(self, request: Request) -> None:
        """Delete whatever was streamed for ``request``."""
        streamed = self.release(request)
        if streamed is not None:
            streamed.discard()

    def discard_all(self) -> None:
        for target in self.targets:
            target.discard()
        self.targets.clear()


def remove_part(fd: int | None, path: Path | None) -> None:
    """Close a part file and delete it if it has a name; errors are ignored."""
    with suppress(OSError):
        if fd is not None:
            os.close(fd)
        if path is not None:
            path.unlink(missing_ok=True)


def open_part(directory: Path) -> tuple[int, Path | None]:
    """A new part file in ``directory``: unnamed where the filesystem allows it.

    An unnamed (``O_TMPFILE``) file vanishes with the process, even after SIGKILL;
    elsewhere a named ``.ravel-*.part`` file is used. Either way it has the permissions
    open() would give it (the umask applied), which the stored file keeps.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            fd = os.open(directory, tmpfile | os.O_RDWR, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            os.fchmod(fd, FILE_MODE)
            return fd, None
    fd, name = tempfile.mkstemp(dir=directory, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
    os.fchmod(fd, FILE_MODE)
    return fd, Path(name)


class PartFile:
    """Stands in for the body buffer of Scrapy's response reader: queues the body for a writer
    thread (the swap: :func:`~ravelscraper.scrapy_compat.download_to_sink`).

    :meth:`write` (on the reactor thread) only queues the chunk; a thread of
    :data:`WRITERS` writes the queued chunks of this file in order and hashes them, so
    neither the hashing nor the disk holds up the reactor. The backlog is bounded: past
    :data:`BACKLOG_PAUSE` queued bytes the transport is paused, and resumed once the writer
    is back under :data:`BACKLOG_RESUME`. The file is created by the first write.

    ``getvalue()`` (called once the body is complete) hands the file to the target as a
    :class:`StreamedBody` whose :meth:`StreamedBody.result` waits for the last queued write:
    the file is neither closed nor reported complete before it. ``truncate()`` (called when
    DOWNLOAD_MAXSIZE is exceeded) and :meth:`discard` delete it (once the writer is out).
    :meth:`failed` (the transfer was cut off mid-body) keeps it, once its queued bytes are
    written, as the target's resume point, which the next attempt's ``PartFile`` continues
    (``base``: same file, same digest object). With a ``bucket``
    (``RAVEL_BANDWIDTH_LIMIT``), each chunk read also pauses the transport while the
    node's bucket is in debt; it is resumed only when neither reason holds it.
    """

    def __init__(
        self,
        target: StreamTarget,
        reader: Any,
        validator: str | None = None,
        base: PartFile | None = None,
        bucket: TokenBucket | None = None,
        direct: bool = True,
    ):
        self.target = target
        self.reader = reader
        # RAVEL_BANDWIDTH_LIMIT: reads paused while the node's bucket is in debt
        self.pacer = None if bucket is None else Pacer(bucket, reader, lambda: self.paused)
        self.hash = hashlib.new(target.algorithm)
        self.size = 0  # bytes written and hashed (by the writer thread)
        self.fd: int | None = None
        self.path: Path | None = None
        self.validator = validator  # the server's ETag or Last-Modified: resumable if set
        self.named = False  # the file is at the target's place (a later run may resume it)
        self.keep = False  # removing it keeps a named file for the next run
        self.interrupted = False  # cut off mid-body: kept as the target's resume point
        self.dropped = 0  # the file's bytes before this offset were dropped from the cache
        self.direct: DirectWriter | None = None  # a new file's O_DIRECT writes, until settled
        self.use_direct = direct  # RAVEL_DIRECT_WRITES
        if base is not None:  # continue ``base``, a resume point (all its writes done)
            self.hash, self.size, self.validator = base.hash, base.size, base.validator
            self.fd, self.path, self.named = base.fd, base.path, base.named
            base.fd, base.path, base.named = None, None, False
            live_parts.discard(base)
            live_parts.add(self)
        self.closed = False  # no more writes: handed over, discarded or failed
        self.finished = False  # handed over to the target
        self.done: Future[tuple[int, str]] = Future()  # (size, hex digest) after the last write
        self.lock = threading.Lock()
        self.queue: deque[bytes] = deque()
        self.backlog = 0  # bytes queued, not yet written
        self.writing = False  # a writer thread owns the queue (and the fd)
        self.paused = False
        self.cancelled = False
        self.write_error: OSError | None = None

    @classmethod
    def from_claim(cls, target: StreamTarget, claimed: ClaimedPart) -> PartFile:
        """An earlier run's part, as a resume point of ``target``."""
        part = cls(target, None, claimed.validator)
        part.fd, part.path, part.named = claimed.fd, claimed.path, True
        part.hash, part.size = claimed.digest, claimed.size
        part.closed = part.interrupted = True
        live_parts.add(part)
        resolve(part.done, result=(part.size, ""))
        return part

    def open_file(self) -> tuple[int, Path | None, bool]:
        """(fd, path, named): at the target's place where there is one and the answer has
        a validator to resume it with; otherwise an anonymous part in its folder."""
        place = self.target.place
        if place is not None and self.validator:
            try:
                fd = create_part(place, self.validator, FILE_MODE)
            except UnsafePartPlace as exc:
                why = exc.strerror or exc
                logger.warning(f"{RESUME} {self.target.label}: not resumable by a later run: {why}")
                fd = None
            except OSError as exc:
                if not is_name_problem(exc):
                    raise
                fd = None  # a name too long with ".part": an anonymous part will do
            if fd is not None:
                return fd, place.path, True
        fd, path = open_part(self.target.directory)
        return fd, path, False

    def write(self, data: bytes) -> int:
        if self.closed or not data:
            return 0
        with self.lock:
            self.queue.append(data)
            self.backlog += len(data)
            start = self.should_start_writer()
            pause = self.backlog > BACKLOG_PAUSE and not self.paused
            self.paused = self.paused or pause
        if start:
            self.start_writer()
        if pause:
            self.call_transport("pauseProducing")
        if self.pacer is not None:
            self.pacer.read(len(data))
        return len(data)

    def should_start_writer(self) -> bool:
        """Under the lock: wake a writer thread? Only for a batch, or for the body's end
        (one hand-over per :data:`BATCH` bytes, not per chunk: each one costs the GIL)."""
        start = not self.writing and bool(self.queue)
        start = start and (self.backlog >= BATCH or self.closed)
        self.writing = self.writing or start
        return start

    def start_writer(self) -> None:
        live_parts.add(self)
        WRITERS.submit(self.drain)

    def drain(self) -> None:
        """The writer thread: write and hash the queued chunks in order, then step out."""
        while True:
            with self.lock:
                stop = self.cancelled or self.write_error is not None
                if stop or not self.queue or (self.backlog < BATCH and not self.closed):
                    if stop:
                        self.queue.clear()
                    self.writing = False
                    break
                chunks = list(self.queue)
                self.queue.clear()
            # One buffer: one write and one hash update, each releasing the GIL once.
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            del chunks
            try:
                if self.fd is None:
                    self.fd, self.path, self.named = self.open_file()
                    if self.use_direct:  # a new file, from byte 0
                        self.direct = DirectWriter(self.fd)
                if self.direct is not None:
                    self.direct.write(data)
                else:
                    write_all(self.fd, data)
            except OSError as exc:
                with self.lock:
                    self.write_error = exc
                continue
            self.hash.update(data)
            written = len(data)
            self.size += written
            self.drop_written()
            with self.lock:
                self.backlog -= written
                resume = self.paused and self.backlog <= BACKLOG_RESUME
                self.paused = self.paused and not resume
            if resume:
                call_on_reactor(self.unpause)
        self.settle()

    def drop_written(self) -> None:
        """Drop the written bytes from the page cache, all but the last :data:`DROP_LAG`
        (their writeback starts now; the next call drops them)."""
        end = self.size - DROP_LAG
        if self.direct is not None and self.direct.direct:
            return  # O_DIRECT: nothing in the cache
        if FADVISE is None or self.fd is None or end <= self.dropped:
            return
        with suppress(OSError):
            FADVISE(self.fd, self.dropped, self.size - self.dropped, os.POSIX_FADV_DONTNEED)
        self.dropped = end

    def settle(self) -> None:
        """After the writer stepped out: fail, clean up or complete, as the state says."""
        with self.lock:
            if self.writing:
                return  # another drain is queued behind: it settles
            error, cancelled = self.write_error, self.cancelled
        if cancelled:
            self.remove_file()
        elif error is not None:
            self.remove_file()
            if self.finished or self.interrupted:
                resolve(self.done, error=error)
            else:
                call_on_reactor(self.fail, error)
        elif self.finished or self.interrupted:  # interrupted: ready to be continued
            try:
                if self.finished and self.fd is None:  # an empty body gets its empty file
                    self.fd, self.path, self.named = self.open_file()
                self.finish_direct()
            except OSError as exc:
                self.remove_file()
                resolve(self.done, error=exc)
                return
            digest = self.hash.hexdigest() if self.finished else ""
            resolve(self.done, result=(self.size, digest))

    def finish_direct(self) -> None:
        """The last partial block of a file written with O_DIRECT, written the ordinary way."""
        direct, self.direct = self.direct, None
        if direct is not None:
            direct.finish()

    def unpause(self) -> None:
        """The writer caught up: resume reading, unless the bandwidth limit holds it."""
        if self.pacer is None or not self.pacer.throttled:
            self.call_transport("resumeProducing")

    def call_transport(self, method: str) -> None:
        transport = getattr(self.reader, "transport", None)
        if transport is None or (method == "pauseProducing" and self.closed):
            return
        with suppress(AttributeError, RuntimeError):  # a transport already gone
            getattr(transport, method)()

    def fail(self, exc: OSError) -> None:
        """A write failed: delete the file and abort the transfer with StoreWriteError."""
        self.discard()
        self.target.error = exc
        abort_body(self.reader, StoreWriteError(exc))

    def getvalue(self) -> bytes:
        if self.pacer is not None:
            self.pacer.stopped = True
        if self.closed:
            return b""
        with self.lock:
            self.closed = self.finished = True
            start = self.should_start_writer()
            writing = self.writing
        self.target.publish(StreamedBody(self))
        if start:
            self.start_writer()  # the rest of the body: its last write settles the result
        elif not writing:
            self.settle()
        return b""

    def truncate(self, size: int | None = None) -> int:
        self.discard()
        return 0

    def failed(self) -> None:
        """The transfer failed mid-body: keep what was received as the target's resume
        point (once written), if the answer had a validator to resume it with."""
        if self.pacer is not None:
            self.pacer.stopped = True
        if self.validator is None:
            self.discard()
            return
        with self.lock:
            if self.closed:
                return  # already discarded, failed or handed over
            self.closed = self.interrupted = True
            start = self.should_start_writer()  # the rest of the queue, whatever its size
            writing = self.writing
        self.target.interrupted(self)
        if start:
            self.start_writer()
        elif not writing:
            self.settle()

    def discard(self, keep: bool = False) -> None:
        """Delete the part file: now, or once the writer thread is out of it; idempotent.
        With ``keep``, a named part (and its sidecar) stays for the next run."""
        if self.pacer is not None:
            self.pacer.stopped = True
        with self.lock:
            if not self.cancelled:
                self.keep = keep
            self.closed = self.cancelled = True
            writing = self.writing
        if not writing:
            self.remove_file()
        if not self.done.done():
            resolve(self.done, error=OSError(errno.ECANCELED, "the part file was discarded"))

    def remove_file(self) -> None:
        live_parts.discard(self)
        fd, self.fd = self.fd, None
        if not self.named:
            remove_part(fd, self.path)
            return
        remove_part(fd, None)  # closing it releases its lock
        place = self.target.place
        if not self.keep and place is not None:
            remove_place(place)  # gone already if it was committed: then only the sidecar


def resolve(
    future: Future[tuple[int, str]],
    result: tuple[int, str] | None = None,
    error: BaseException | None = None,
) -> None:
    with suppress(InvalidStateError):  # already settled (a discard raced the writer)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]


def call_on_reactor(function: Callable[..., Any], *args: Any) -> None:
    from twisted.internet import reactor

    reactor.callFromThread(function, *args)  # type: ignore[attr-defined]


@atexit.register
def discard_live_parts() -> None:
    """A crawl stopped mid-transfer (a second Ctrl-C) leaves no anonymous part file behind;
    named parts stay for the next run to resume."""
    for part in list(live_parts):
        part.discard(keep=True)


def streamable(txresponse: Any) -> bool:
    """A 200 without Content-Encoding: the body can go to disk as it is."""
    return txresponse.code == 200 and not txresponse.headers.hasHeader(b"Content-Encoding")


def header(headers: Any, name: bytes) -> str | None:
    """A response header of Twisted's ``Headers`` as text, or None."""
    values = headers.getRawHeaders(name)
    return values[-1].decode("latin-1").strip() if values else None


def validator_of(headers: Any) -> str | None:
    """What ``If-Range`` can name this answer by: its strong ETag, else its Last-Modified."""
    etag = header(headers, b"ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return header(headers, b"Last-Modified")


def continuation_problem(headers: Any, part: PartFile) -> str | None:
    """Why a 206 answer can't continue ``part`` (None if it can): it must start at the
    part's size and name the same version of the file."""
    content_range = header(headers, b"Content-Range") or ""
    unit, _, rest = content_range.partition(" ")
    first = rest.split("-", 1)[0]
    if unit != "bytes" or not first.isdigit() or int(first) != part.size:
        return f"the server answered another range ({content_range or 'none'!r})"
    validator = part.validator or ""
    now = (
        header(headers, b"ETag") if validator.startswith('"') else header(headers, b"Last-Modified")
    )
    if now is not None and now != validator:
        return "the file changed on the server (its validator changed)"
    return None


class RangeRefused(Exception):
    """A 206 that can't continue the part: the file is fetched again from byte 0."""


class RefusedRange:
    """The sink of a 206 that can't continue the part: aborts the transfer at once."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.aborted = False

    def write(self, data: bytes) -> int:
        if not self.aborted:
            self.aborted = True
            abort_body(self.reader, RangeRefused())
        return len(data)

    def getvalue(self) -> bytes:
        return b""

    def truncate(self, size: int | None = None) -> int:
        return 0

    def discard(self) -> None:
        pass

    def failed(self) -> None:
        pass


def with_range(request: Request, part: PartFile) -> Request:
    """``request`` asking for the rest of the file after ``part``, if it is still the
    version ``part`` was started from (``If-Range``)."""
    headers = request.headers.copy()
    headers[b"Range"] = f"bytes={part.size}-"
    headers[b"If-Range"] = part.validator or ""
    return request.replace(headers=headers)


class StreamingDownloadHandler(HTTP11DownloadHandler):
    """HTTP11DownloadHandler that streams opted-in file downloads to the store.

    A file cut off mid-body is continued: the next attempt (a retry, or the next run for a
    named part) asks for ``Range: bytes=<received>-`` with ``If-Range: <validator>`` and
    appends a ``206`` to the same part file, its digest continued. A ``200`` (the server
    ignores ranges, or the file changed), a ``416`` or a ``206`` of another range or version
    restarts the file from byte 0.

    With ``RAVEL_BANDWIDTH_LIMIT``, every file body (streamed, or in memory for S3 and FTP)
    is read under the node's one token bucket (``ravelscraper.downloader.bandwidth``).
    """

    def __init__(self, crawler: Any):
        super().__init__(crawler)
        self.bucket = bucket_for(crawler.settings)
        self.direct_writes = crawler.settings.getbool("RAVEL_DIRECT_WRITES")
        stats = crawler.stats
        if self.bucket is not None and stats is not None:
            self.bucket.on_pause = lambda: stats.inc_value("ravel/bandwidth_pauses")

    async def download_request(self, request: Request) -> Response:
        target = request.meta.get(STREAM_META)
        if not isinstance(target, StreamTarget):
            if self.bucket is not None and "ravel_name" in request.meta:  # a file, in memory
                bucket = self.bucket
                response, _ = await download_to_sink(
                    self, request, lambda txresponse, reader: PacedBuffer(bucket, reader)
                )
                return response
            return await super().download_request(request)
        resume = await target.resume_point()

        def part_file(txresponse: Any, reader: Any) -> PartFile | RefusedRange | None:
            encoded = txresponse.headers.hasHeader(b"Content-Encoding")  # kept in memory
            if txresponse.code == 200:
                if resume is not None and target.resume is resume:
                    target.restart("the server sent the whole file")
                if encoded:
                    return None
                validator = validator_of(txresponse.headers)
                return PartFile(
                    target, reader, validator, bucket=self.bucket, direct=self.direct_writes
                )
            if txresponse.code == 206 and resume is not None and target.resume is resume:
                why = "the server encoded the range" if encoded else None
                why = why or continuation_problem(txresponse.headers, resume)
                if why is None:
                    target.continued(resume)
                    return PartFile(target, reader, base=resume, bucket=self.bucket)
                target.restart(why)
                return RefusedRange(reader)
            return None

        sent = request if resume is None else with_range(request, resume)
        try:
            response, part = await download_to_sink(self, sent, part_file)
        except RangeRefused:
            return await self.download_request(request)  # no resume point now: from 0
        if response.status == 416 and resume is not None and target.resume is resume:
            target.restart("the server can't send the rest (416)")
            return await self.download_request(request)
        if isinstance(part, PartFile) and part.finished:
            response.flags.append(STREAMED)
        return response

    async def close(self) -> None:
        discard_live_parts()
        await super().close()
