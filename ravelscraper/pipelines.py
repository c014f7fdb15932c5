"""FilesPipeline that keeps archive.org's names and trusts nothing it has not checked."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from io import BytesIO
from time import monotonic
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import FileException, FileInfo, FileInfoOrError, MediaPipeline
from scrapy.utils.defer import deferred_from_coro, ensure_awaitable
from twisted.python.failure import Failure

from ravelscraper.downloader import TransferCancelled
from ravelscraper.items import AudioFile
from ravelscraper.stores import (
    AtomicFSFilesStore,
    FTPStore,
    S3Store,
    StoreProblem,
    UnsafeName,
    is_name_problem,
    safe_relative_path,
    shown,
    store_uri_problem,
)
from ravelscraper.streaming import (
    STREAM_META,
    STREAMED,
    StoreWriteError,
    StreamedBody,
    StreamTarget,
)

logger = logging.getLogger(__name__)


def hex_digest(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def expected_checksum(item: AudioFile) -> tuple[str, str | None]:
    """(algorithm, listed hex digest): sha1 where archive.org lists it (the faster to
    compute here, and the stronger), md5 otherwise; (``"md5"``, None) if neither is listed."""
    if item.sha1 is not None:
        return "sha1", item.sha1
    return "md5", item.md5


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def describe(failure: Failure) -> str:
    """A failure as one line: what went wrong, without a traceback."""
    exc = failure.value
    if isinstance(exc, IgnoreRequest | FileException | StoreWriteError):
        return str(exc) or type(exc).__name__
    reasons = getattr(exc, "reasons", None)  # Twisted's ResponseFailed & co. wrap failures
    if reasons:
        return "; ".join(describe(r) for r in reasons)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RefusedStore:
    """Stands in for a FILES_STORE that can't be built; the crawl stops before using it."""

    def stat_file(self, path: str, info: Any) -> Any:
        raise StoreProblem("FILES_STORE is not usable")

    persist_file = stat_file


class VerifiedFilesPipeline(FilesPipeline):
    """Stores each file at ``<identifier>/<name>``, checked against archive.org's checksum and
    size: its sha1 where listed, else its md5 (``expected_checksum``).

    * The settings and the store are checked when the crawl opens, before any download.
    * A file already in the store whose size and checksum match is up to date, whatever its
      age (on S3, whose ETag is an md5, the md5 is compared).
    * A download whose size or checksum does not match is fetched again
      (``RAVEL_VERIFY_RETRIES`` times), then reported failed and never stored, except a
      file archive.org regenerates (``regenerated``), stored marked ``unverified``.
    * A file listed without a checksum is checked against its size, or, without a size either,
      refused if the connection closed without saying the body was complete (``partial``);
      it is stored marked ``unverified``.
    * Names that could leave the store are refused; a name the filesystem refuses (a
      directory in the way, a path too long) fails that file only.
    * On the local store, a file's body is streamed to a part file as it arrives (see
      ``ravelscraper.streaming``), then verified and renamed into place.
    """

    STORE_SCHEMES = {
        **FilesPipeline.STORE_SCHEMES,  # "gs" stays for Scrapy's _update_stores; refused
        "": AtomicFSFilesStore,
        "file": AtomicFSFilesStore,
        "s3": S3Store,
        "ftp": FTPStore,
    }
    LOG_FAILED_RESULTS = False  # media_failed logs one line per file instead

    def __init__(self, store_uri: str, *, crawler: Crawler):
        self.store_problem = store_uri_problem(str(store_uri or ""))
        # A bad FILES_STORE is reported by open_spider, not by a traceback or a warning here.
        super().__init__(store_uri if self.store_problem is None else "-", crawler=crawler)
        self.stats = crawler.stats
        self.verify_retries = crawler.settings.getint("RAVEL_VERIFY_RETRIES")
        self.started: dict[str, float] = {}
        self.paths_seen: dict[str, str] = {}  # case-folded path -> name, within this crawl
        self.store_error: str | None = None
        self.failures: dict[tuple[str, str], str] = {}  # (identifier, name) -> reason
        self.unverified: list[str] = []  # names stored without a checksum match
        self.streams: set[StreamTarget] = set()  # targets whose part file may await us
        crawler.signals.connect(self.transfer_started, signal=signals.headers_received)

    def _get_store(self, uri: str) -> Any:
        if self.store_problem is not None:
            return RefusedStore()
        return super()._get_store(uri)

    def open_spider(self) -> None:
        super().open_spider()
        problem, reason = self.store_problem, "files_store_unusable"
        if problem is None:
            try:
                check = getattr(self.store, "check", None)
                if check is not None:
                    check()
            except StoreProblem as exc:
                problem = str(exc)
        if problem is not None:
            logger.error(problem)
            self.stats.set_value("ravel/error", problem)
            raise CloseSpider(reason)

    def close_spider(self) -> None:
        for target in self.streams:  # the crawl stopped before their files were verified
            target.discard()
        self.streams.clear()
        if self.unverified:
            names = ", ".join(shown(n) for n in self.unverified[:5])
            more = f" and {len(self.unverified) - 5} more" if len(self.unverified) > 5 else ""
            logger.warning(
                f"[unverified] {len(self.unverified)} files stored without a checksum match "
                f"(no md5 listed, or regenerated by archive.org; see the manifest): {names}{more}"
            )

    async def in_store(self, method: Callable[..., Any], *args: Any) -> Any:
        """Local disk I/O (and its md5) runs in a thread; remote stores return Deferreds."""
        if isinstance(self.store, AtomicFSFilesStore):
            return await asyncio.to_thread(method, *args)
        return await ensure_awaitable(method(*args))

    async def process_item(self, item: AudioFile) -> AudioFile:
        if item.error:  # the spider could not list it as a fetchable file
            self.file_failed(item.name, item.error, item)
            return item
        try:
            self.claim_path(item)
        except UnsafeName as exc:
            self.file_failed(item.name, f"refused the name: {exc}", item)
            return item
        return await super().process_item(item)

    def claim_path(self, item: AudioFile) -> str:
        path = safe_relative_path(item.identifier, item.name)
        other = self.paths_seen.setdefault(path.casefold(), item.name)
        if other != item.name:
            raise UnsafeName(f"it differs only in case from {other!r}")
        return path

    def get_media_requests(self, item: AudioFile, info: MediaPipeline.SpiderInfo) -> list[Request]:
        return [
            # The redirect to a storage node keeps this slot: one politeness budget.
            Request(
                url,
                callback=NO_CALLBACK,
                meta={
                    "download_slot": urlsplit(url).hostname,
                    "ravel_name": item.name,
                    "ravel_identifier": item.identifier,
                    **self.stream_meta(item),
                },
            )
            for url in item.file_urls
        ]

    def stream_meta(self, item: AudioFile) -> dict[str, StreamTarget]:
        """On the local store, the meta that streams the body to the target's folder."""
        if not isinstance(self.store, AtomicFSFilesStore):
            return {}
        try:
            directory = self.store._get_filesystem_path(self.claim_path(item)).parent
        except (UnsafeName, OSError):
            return {}  # the in-memory path refuses it when it stores the file
        target = StreamTarget(directory, expected_checksum(item)[0])
        self.streams.add(target)
        return {STREAM_META: target}

    def release_stream(self, request: Request) -> StreamedBody | None:
        """The body streamed for ``request``, if any, now ours to rename or delete."""
        target = request.meta.get(STREAM_META)
        if not isinstance(target, StreamTarget):
            return None
        self.streams.discard(target)
        body = target.take()
        target.discard()
        return body

    def drop_stream(self, request: Request) -> None:
        """Delete whatever was streamed for ``request``."""
        streamed = self.release_stream(request)
        if streamed is not None:
            streamed.discard()

    def file_path(
        self,
        request: Request,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: AudioFile | None = None,
    ) -> str:
        assert item is not None, "VerifiedFilesPipeline names files after their item"
        return safe_relative_path(item.identifier, item.name)

    async def media_to_download(
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: AudioFile | None = None
    ) -> FileInfo | None:
        assert item is not None
        path = self.file_path(request, info=info, item=item)
        algorithm, expected = expected_checksum(item)
        if not isinstance(self.store, AtomicFSFilesStore):
            algorithm, expected = "md5", item.md5  # S3's ETag and the FTP store's checksum
        if expected is None and item.size is None:
            return None  # nothing to check a stored copy against: fetch it again
        try:
            if isinstance(self.store, AtomicFSFilesStore):
                stored = await self.in_store(self.store.stat_file, path, info, algorithm)
            else:
                stored = await self.in_store(self.store.stat_file, path, info)
        except Exception as exc:  # an unreadable copy is downloaded again
            logger.warning(f"cannot check the stored copy of {shown(item.name)}: {exc!r}")
            stored = {}
        if not stored:
            return None
        checksum, size = stored.get("checksum"), stored.get("size")
        stale = None
        if item.size is not None and size is not None and size != item.size:
            stale = f"stored size {size} != {item.size}"
        elif expected is not None and checksum != expected:
            stale = f"stored {algorithm} {checksum} != {expected}"
        if stale:
            logger.info(f"[stale] {shown(item.name)}: {stale}, downloading again")
            return None
        self.stats.inc_value("ravel/files_uptodate")
        self.stats.inc_value("ravel/bytes_uptodate", item.size or 0)
        self.inc_stats("uptodate")
        return {
            "url": request.url,
            "path": path,
            "checksum": checksum,
            "checksum_type": algorithm,
            "status": "uptodate",
        }

    def transfer_started(
        self, headers: Any, body_length: int, request: Request, spider: Any
    ) -> None:
        name = request.meta.get("ravel_name")
        if name is None or b"Location" in headers:
            return  # not a file, or the 302 before it
        self.started[name] = monotonic()
        # Twisted's UNKNOWN_LENGTH (no Content-Length: chunked or close-delimited) is a str.
        known = isinstance(body_length, int) and body_length >= 0
        size = megabytes(body_length) if known else "size unknown"
        logger.info(f"[download start] {shown(name)} ({size})")

    async def media_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: AudioFile | None = None,
    ) -> FileInfo:
        assert item is not None
        streamed = self.release_stream(request)
        try:
            return await self.verify_and_store(response, request, info, item, streamed)
        finally:
            if streamed is not None:
                streamed.discard()  # a no-op once renamed into place

    async def verify_and_store(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        item: AudioFile,
        streamed: StreamedBody | None,
    ) -> FileInfo:
        if response.status != 200:
            raise FileException(f"HTTP {response.status} from {response.url}")
        error = getattr(request.meta.get(STREAM_META), "error", None)
        if isinstance(error, OSError):  # writing the part file failed
            raise self.write_failed(error, item)
        algorithm, expected = expected_checksum(item)
        if STREAMED in response.flags:
            if streamed is None:
                raise FileException("the streamed body was lost")
            try:  # waits for the last queued write: never a file still being written
                size, checksum = await streamed.result()
            except OSError as exc:
                raise self.write_failed(exc, item) from None
            body = None
        else:
            if streamed is not None:
                streamed.discard()  # not this response's body
                streamed = None
            body = response.body
            size = len(body)
            # Hashing releases the GIL: off the reactor thread, it overlaps the transfers.
            checksum = await asyncio.to_thread(hex_digest, algorithm, body)
        partial = "partial" in response.flags
        mismatch = self.mismatch(item, size, checksum, partial=partial)
        attempt = request.meta.get("ravel_verify_attempt", 0)
        if mismatch and attempt >= self.verify_retries:
            if not (item.regenerated and not partial):
                raise FileException(mismatch)
            # INFO: the one WARNING for unverified files comes at the end (close_spider).
            logger.info(
                f"[unverified] {shown(item.name)}: {mismatch}; archive.org regenerates this "
                "file, so it is stored unverified"
            )
        elif mismatch:
            log = logger.info if item.regenerated else logger.warning  # expected, for those
            log(f"[verify] {shown(item.name)}: {mismatch}; downloading it again")
            if streamed is not None:
                streamed.discard()
            retry = request.replace(
                dont_filter=True,
                meta={
                    **request.meta,
                    "ravel_verify_attempt": attempt + 1,
                    **self.stream_meta(item),  # a fresh target: its own part file
                },
            )
            try:
                response = await self.crawler.engine.download_async(retry)
            except BaseException:
                self.drop_stream(retry)
                raise
            return await self.media_downloaded(response, retry, info, item=item)
        path = self.file_path(request, response=response, info=info, item=item)
        try:
            if streamed is not None:
                await self.in_store(self.store.commit_part, streamed.fd, streamed.path, path)
            else:
                await self.in_store(self.store.persist_file, path, BytesIO(body or b""), info)
        except OSError as exc:
            raise self.write_failed(exc, item) from None
        seconds = monotonic() - self.started.pop(item.name, monotonic())
        self.stats.inc_value("ravel/files_downloaded")
        self.stats.inc_value("ravel/bytes_downloaded", size)
        self.inc_stats("downloaded")
        status = "downloaded"
        if expected is None or checksum != expected:
            status = "unverified"
            self.unverified.append(item.name)
            self.stats.inc_value("ravel/files_unverified")
        logger.info(
            f"[download finished] {shown(item.name)} ({megabytes(size)}, {seconds:.1f} s)"
            + ("" if status == "downloaded" else ", unverified")
        )
        return {
            "url": request.url,
            "path": path,
            "checksum": checksum,
            "checksum_type": algorithm,
            "status": status,
        }

    @staticmethod
    def mismatch(item: AudioFile, size: int, checksum: str, partial: bool = False) -> str | None:
        """Why the body can't be stored as this file, or None; ``checksum`` is the body's
        digest with the algorithm of ``expected_checksum(item)``."""
        if item.size is not None and size != item.size:
            return f"got {size} bytes, archive.org lists {item.size}"
        algorithm, expected = expected_checksum(item)
        if expected is not None and checksum != expected:
            return f"{algorithm} mismatch: archive.org lists {expected}, got {checksum}"
        if partial and expected is None and item.size is None:
            return (
                f"the connection closed after {size} bytes without the body's length, and "
                "archive.org lists no size or checksum to check it against: it may be incomplete"
            )
        return None

    def write_failed(self, exc: OSError, item: AudioFile) -> FileException:
        """The failure of one write: this file's (its path) or the whole store's."""
        reason = exc.strerror or str(exc)
        if is_name_problem(exc):
            return FileException(f"cannot store it under its name: {reason}")
        self.store_failed(exc)
        return FileException(f"cannot write to FILES_STORE: {reason}")

    def media_failed(
        self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo
    ) -> None:
        # Logged here in one line; returning (not raising) keeps MediaPipeline from logging
        # the failure again with a traceback. The file is then missing from ``files``.
        self.drop_stream(request)
        name = request.meta.get("ravel_name", request.url)
        identifier = request.meta.get("ravel_identifier", "")
        if isinstance(failure.value, TransferCancelled):
            self.stats.inc_value("ravel/files_cancelled")
            self.failures[(identifier, name)] = "not started: the crawl stopped"
            return
        reason = describe(failure)
        if isinstance(failure.value, StoreWriteError):
            error = failure.value.error
            if is_name_problem(error):
                reason = f"cannot store it under its name: {error.strerror or error}"
            else:
                self.store_failed(error)
        self.failures[(identifier, name)] = reason
        self.file_failed(name, f"{reason} ({request.url})")

    def store_failed(self, exc: OSError) -> None:
        """A full or broken store fails every file after this one: stop, keep what is stored."""
        if self.store_error is not None:
            return
        self.store_error = f"FILES_STORE failed: {exc.strerror or exc}; stopping the crawl"
        self.stats.set_value("ravel/error", self.store_error)
        logger.error(f"{self.store_error} (files already stored are kept)")
        stop_transfers = getattr(self.crawler.engine.downloader, "stop_transfers", None)
        if stop_transfers is not None:
            stop_transfers()
        deferred_from_coro(self.crawler.engine.close_spider_async(reason="files_store_failed"))

    def file_failed(self, name: str, reason: str, item: AudioFile | None = None) -> None:
        self.started.pop(name, None)
        self.stats.inc_value("ravel/files_failed")
        if item is not None:
            item.error = reason
        logger.error(f"[download failed] {shown(name)}: {shown(reason)}")

    def item_completed(
        self, results: list[FileInfoOrError], item: AudioFile, info: MediaPipeline.SpiderInfo
    ) -> AudioFile:
        item.files = [result for ok, result in results if ok and result]
        if not item.files and not item.error:  # the manifest says why it is missing
            item.error = self.failures.pop((item.identifier, item.name), "not stored")
        return item
