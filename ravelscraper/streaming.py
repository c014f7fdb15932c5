"""Stream file downloads to a ``.ravel-*.part`` file instead of holding them in memory.

Scrapy's HTTP/1.1 handler accumulates a body in a ``BytesIO``: a 512 MB file costs 512 MB
of memory. For a request whose meta carries a :class:`StreamTarget` (``STREAM_META``, set
by ``VerifiedFilesPipeline`` when the store is local), :class:`StreamingDownloadHandler`
writes a 200 response's body, as it arrives, to a temporary file in the target's folder,
computing its size and md5 on the way. The response's body stays empty and gets the flag
``STREAMED``; the part file, its size and md5 wait in the target for the pipeline, which
verifies them and renames the file into place, or deletes it.

Responses with a ``Content-Encoding`` (decompressed later by a middleware) and any status
other than 200 (redirects, errors) are kept in memory as usual. Each attempt (a retry, a
re-download after a bad md5) writes its own part file, deleted if the attempt fails. A
failed write (a full disk) aborts the transfer with :class:`StoreWriteError`.

Scrapy has no public hook for this. The module relies on these private names of
``scrapy.core.downloader.handlers.http11`` (Scrapy is pinned to 2.19.0):

* ``_ScrapyAgent``: its constructor keywords, ``download_request``, ``_cb_bodyready`` and
  ``_cb_bodydone``;
* ``_ResponseReader``: its ``_bodybuf`` (a ``BytesIO`` replaced by :class:`PartFile`,
  which provides ``write``, ``getvalue`` and ``truncate``), ``_finished`` and
  ``transport``;
* the handler's attributes ``_contextFactory``, ``_bind_address``, ``_pool``,
  ``_default_maxsize``, ``_default_warnsize``, ``_fail_on_dataloss``,
  ``_fail_on_dataloss_warned``, ``_tls_verbose_logging`` and ``_crawler``;
* ``scrapy.utils._download_handlers.wrap_twisted_exceptions`` and ``get_dataloss_msg``.

It fails safe: if one of them is missing or does not look as expected, the body is kept in
memory as before.

Where the filesystem supports it (Linux ``O_TMPFILE``: ext4, xfs, btrfs, tmpfs...), the part
file has no name until it is verified, so even SIGKILL leaves nothing behind; elsewhere it
is a named ``.ravel-*.part`` file, which a crawl killed with SIGKILL can leave behind and
which is safe to delete.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import logging
import os
import tempfile
from contextlib import suppress
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy import Request
from scrapy.core.downloader.handlers import http11
from scrapy.exceptions import ResponseDataLossError
from scrapy.http import Response
from scrapy.utils._download_handlers import get_dataloss_msg, wrap_twisted_exceptions
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ravelscraper.stores import FILE_MODE, PARTIAL_PREFIX, PARTIAL_SUFFIX

logger = logging.getLogger(__name__)

STREAM_META = "ravel_stream"
STREAMED = "ravel-streamed"

_live_parts: set[PartFile] = set()  # part files not yet handed over or deleted


class StoreWriteError(Exception):
    """Writing a streamed body to the store failed; ``error`` is the OSError."""

    def __init__(self, error: OSError):
        super().__init__(f"cannot write to FILES_STORE: {error.strerror or error}")
        self.error = error


class StreamedBody:
    """A complete streamed body: its open part file, size and md5.

    ``path`` is None for an unnamed (``O_TMPFILE``) file, which the store links into place
    through ``fd``. :meth:`discard` closes the file and deletes it if it has a name.
    """

    def __init__(self, fd: int, path: Path | None, size: int, md5: str):
        self.fd: int | None = fd
        self.path = path
        self.size = size
        self.md5 = md5

    def discard(self) -> None:
        fd, self.fd = self.fd, None
        remove_part(fd, self.path)


class StreamTarget:
    """Where a request's body may be streamed, and the last complete attempt's result."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.body: StreamedBody | None = None
        self.error: OSError | None = None

    def publish(self, body: StreamedBody) -> None:
        self.discard()
        self.body = body

    def take(self) -> StreamedBody | None:
        """The streamed body, now the caller's to rename or delete."""
        body, self.body = self.body, None
        return body

    def discard(self) -> None:
        """Delete a streamed body nobody took."""
        body, self.body = self.body, None
        if body is not None:
            body.discard()


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
    """Stands in for ``_ResponseReader._bodybuf``: writes to a part file, hashes, counts.

    The file is created at the first write. ``getvalue()`` (called once the body is
    complete) hands it to the target and returns ``b""``; ``truncate()`` (called when
    DOWNLOAD_MAXSIZE is exceeded) and :meth:`discard` delete it.
    """

    def __init__(self, target: StreamTarget, reader: Any):
        self.target = target
        self.reader = reader
        self.md5 = hashlib.md5()  # noqa: S324 - archive.org's checksum
        self.size = 0
        self.fd: int | None = None
        self.path: Path | None = None
        self.closed = False  # handed over, discarded or failed: no more writes
        self.finished = False  # handed over to the target

    def _open(self) -> int:
        if self.fd is None:
            self.fd, self.path = open_part(self.target.directory)
            _live_parts.add(self)
        return self.fd

    def write(self, data: bytes) -> int:
        if self.closed:
            return 0
        try:
            fd = self._open()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            self.fail(exc)
            return 0
        self.md5.update(data)
        self.size += len(data)
        return len(data)

    def fail(self, exc: OSError) -> None:
        """A write failed: delete the file and abort the transfer with StoreWriteError."""
        self.discard()
        self.target.error = exc
        finished: Deferred[Any] = self.reader._finished
        if not finished.called:
            finished.errback(Failure(StoreWriteError(exc)))
        transport = self.reader.transport
        if transport is not None:
            transport.stopProducing()
            transport.loseConnection()

    def getvalue(self) -> bytes:
        if self.closed:
            return b""
        try:
            fd = self._open()  # an empty body still gets its (empty) file
        except OSError as exc:
            self.discard()
            self.target.error = exc
            return b""
        self.closed = self.finished = True
        self.fd = None
        _live_parts.discard(self)
        self.target.publish(StreamedBody(fd, self.path, self.size, self.md5.hexdigest()))
        return b""

    def truncate(self, size: int | None = None) -> int:
        self.discard()
        return 0

    def discard(self) -> None:
        """Delete the part file unless it was handed over; idempotent."""
        if self.finished:
            return
        self.closed = True
        _live_parts.discard(self)
        fd, self.fd = self.fd, None
        remove_part(fd, self.path)


@atexit.register
def _discard_live_parts() -> None:
    """A crawl stopped mid-transfer (a second Ctrl-C) leaves no part file behind."""
    for part in list(_live_parts):
        part.discard()


def streamable(txresponse: Any) -> bool:
    """A 200 without Content-Encoding: the body can go to disk as it is."""
    return txresponse.code == 200 and not txresponse.headers.hasHeader(b"Content-Encoding")


def _swappable(reader: Any) -> bool:
    return (
        isinstance(reader, http11._ResponseReader)
        and isinstance(getattr(reader, "_bodybuf", None), BytesIO)
        and reader._bodybuf.tell() == 0
        and isinstance(getattr(reader, "_finished", None), Deferred)
    )


class _StreamingAgent(http11._ScrapyAgent):
    """``_ScrapyAgent`` whose body reader writes to a :class:`PartFile`."""

    _part: PartFile | None = None

    def _cb_bodyready(self, txresponse: Any, request: Request) -> Any:
        target = request.meta.get(STREAM_META)
        if not isinstance(target, StreamTarget) or not streamable(txresponse):
            return super()._cb_bodyready(txresponse, request)

        deliver = txresponse.deliverBody

        def deliver_to_part(reader: Any) -> None:
            if _swappable(reader):
                self._part = reader._bodybuf = PartFile(target, reader)
            deliver(reader)

        txresponse.deliverBody = deliver_to_part
        try:
            result = super()._cb_bodyready(txresponse, request)
        finally:
            del txresponse.deliverBody  # the instance attribute: back to the method
        part = self._part
        if part is not None:
            if isinstance(result, Deferred):
                result.addErrback(self._discard_part, part)
            else:
                part.discard()
        return result

    @staticmethod
    def _discard_part(failure: Failure, part: PartFile) -> Failure:
        part.discard()
        return failure

    def _cb_bodydone(self, result: Any, url: str) -> Response:
        response = super()._cb_bodydone(result, url)
        if self._part is not None and self._part.finished:
            response.flags.append(STREAMED)
        return response


def _private_names_present() -> bool:
    reader_init = getattr(http11._ResponseReader, "__init__", None)
    names = getattr(getattr(reader_init, "__code__", None), "co_names", ())
    return (
        all(
            callable(getattr(http11._ScrapyAgent, name, None))
            for name in ("download_request", "_cb_bodyready", "_cb_bodydone")
        )
        and "_bodybuf" in names
        and "_finished" in names
    )


class StreamingDownloadHandler(http11.HTTP11DownloadHandler):
    """HTTP11DownloadHandler that streams opted-in file downloads to the store."""

    def __init__(self, crawler: Any):
        super().__init__(crawler)
        self.streaming = _private_names_present()
        if not self.streaming:
            logger.warning(
                "this Scrapy's HTTP handler is not the one ravelscraper.streaming expects: "
                "files are held in memory while they download"
            )

    async def download_request(self, request: Request) -> Response:
        if not self.streaming or not isinstance(request.meta.get(STREAM_META), StreamTarget):
            return await super().download_request(request)
        try:
            agent = _StreamingAgent(
                contextFactory=self._contextFactory,
                bindAddress=self._bind_address,
                pool=self._pool,
                maxsize=self._default_maxsize,
                warnsize=self._default_warnsize,
                fail_on_dataloss=self._fail_on_dataloss,
                crawler=self._crawler,
                tls_verbose_logging=self._tls_verbose_logging,
            )
        except (AttributeError, TypeError) as exc:  # not the Scrapy this was written for
            logger.warning(f"streaming disabled, files are held in memory: {exc!r}")
            self.streaming = False
            return await super().download_request(request)
        try:
            with wrap_twisted_exceptions():
                return await maybe_deferred_to_future(agent.download_request(request))
        except ResponseDataLossError:
            if not self._fail_on_dataloss_warned:
                logger.warning(get_dataloss_msg(request.url))
                self._fail_on_dataloss_warned = True
            raise

    async def close(self) -> None:
        _discard_live_parts()
        await super().close()
