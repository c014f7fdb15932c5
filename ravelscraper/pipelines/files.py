"""The files pipeline: Scrapy's ``FilesPipeline`` hooks, wired to this project's units.

``VerifiedFilesPipeline`` stores each file at ``<identifier>/<name>``, checked against
archive.org's size and checksum: its sha1 where listed, else its md5
(``ravelscraper.pipelines.verify``).

* The settings and the store are checked when the crawl opens, before any download.
* A file already in the store whose size and checksum match is up to date, whatever its age
  (on S3, whose ETag is an md5, the md5 is compared).
* A download whose size or checksum does not match is fetched again (``RAVEL_VERIFY_RETRIES``
  times), then reported failed and never stored, except a file archive.org regenerates,
  stored marked ``unverified``.
* A file listed without a checksum is checked against its size, or, without a size either,
  refused if the connection closed without saying the body was complete (``partial``); it
  is stored marked ``unverified``.
* A name the filesystem refuses (a directory in the way, a path too long) fails that file
  only; a full or broken store stops the crawl (``ravelscraper.stop``).
* On the local store, a file's body is streamed to a part file as it arrives (``PartFiles``,
  ``ravelscraper.downloader.streaming``; a cut-off transfer resumes there, in this run or
  the next: ``ravelscraper.stores.parts``), then verified, given its verification record
  (``ravelscraper.pipelines.records``) and renamed into place. With ``RAVEL_RECHECK=quick`` (the
  default) a stored file whose record still matches its size and mtime is up to date without
  being read; ``full`` hashes every stored file.
* When every chosen file of an item (``item_files``) ended verified in this crawl, the item is
  recorded complete (``ItemRecords.complete``) for the next run's ``unchanged``.
* In a dry run (``RAVEL_DRY_RUN``) nothing is downloaded or written: a file is ``uptodate``
  or ``planned`` (``ravelscraper.extensions.plan`` sums them up).

The pipeline owns the order of one file's life and what reaches the item and the manifest
(``files``, ``error``). The names it gets were judged by the spider
(``ravelscraper.archive.names``); the per-file lines and stats are ``TransferLog``'s
(``ravelscraper.extensions.progress``); the records, the dry run's plan and the items'
completion are ``Bookkeeping``'s (``ravelscraper.pipelines.bookkeeping``); how each store kind
is asked is ``ravelscraper.stores``'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import FileException, FileInfo, FileInfoOrError, MediaPipeline
from twisted.python.failure import Failure

from ravelscraper.downloader import TransferCancelled
from ravelscraper.downloader.streaming import STREAM_META, PartFiles, StoreWriteError
from ravelscraper.downloadermiddlewares.storage import DIR_META, FRONT_META, StorageLocations
from ravelscraper.extensions.progress import TransferLog
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.bodies import ReceivedBody, received_body
from ravelscraper.pipelines.bookkeeping import Bookkeeping
from ravelscraper.pipelines.verify import expected_checksum, up_to_date, verified_body
from ravelscraper.scrapy_compat import forget_media_results
from ravelscraper.stop import fatal, stop_crawl
from ravelscraper.stores import (
    STORE_SCHEMES,
    call_store,
    store_check_problem,
    store_uri_problem,
)
from ravelscraper.stores.base import StoreProblem, is_name_problem
from ravelscraper.stores.parts import NAMED_PART_MIN_SIZE

logger = logging.getLogger(__name__)


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

    blocking = False
    streams_parts = False
    checksums = frozenset({"md5"})
    keeps_records = False
    restamps = False

    def stat_file(self, path: str, info: Any) -> Any:
        raise StoreProblem("FILES_STORE is not usable")

    persist_file = stat_file


class VerifiedFilesPipeline(FilesPipeline):
    """FilesPipeline that keeps archive.org's names and stores only what it has checked."""

    STORE_SCHEMES = {**FilesPipeline.STORE_SCHEMES, **STORE_SCHEMES}

    def __init__(self, store_uri: str, *, crawler: Crawler):
        self.store_problem = store_uri_problem(str(store_uri or ""))
        # A bad FILES_STORE is reported by open_spider, not by a traceback or a warning here:
        # the local store's constructor does no I/O, so "-" builds and is then replaced.
        super().__init__(store_uri if self.store_problem is None else "-", crawler=crawler)
        if self.store_problem is not None:
            self.store = RefusedStore()
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.verify_retries = crawler.settings.getint("RAVEL_VERIFY_RETRIES")
        self.part_max_age = crawler.settings.getfloat("RAVEL_PART_MAX_AGE")
        self.transfers = TransferLog(crawler)
        self.part_files = PartFiles(crawler.stats)
        self.store_error: str | None = None
        self.failures: dict[tuple[str, str], str] = {}  # (identifier, name) -> reason
        self.book = Bookkeeping(crawler, self.store)  # records, the dry run, items
        self.locations = StorageLocations.of(crawler)  # items' storage nodes, once known
        # /download URL -> its request's fingerprint (the key of MediaPipeline's cached
        # result), until its item is done
        self.requested: dict[str, bytes] = {}

    def open_spider(self) -> None:
        super().open_spider()
        problem = self.store_problem or store_check_problem(self.store, self.book.dry_run)
        if problem is not None:
            raise fatal(self.crawler, "files_store_unusable", problem)
        self.book.store_opened()
        if self.store.streams_parts and not self.book.dry_run:
            self.store.remove_old_parts(self.part_max_age)

    def close_spider(self) -> None:
        self.part_files.discard_all()  # the crawl stopped before their files were verified
        self.transfers.log_unverified()

    async def process_item(self, item: AudioFile) -> AudioFile:
        if item.failed_item:  # an item of many that failed: a manifest row, nothing to fetch
            return item
        if item.error:  # the spider could not list it as a file to fetch (or store)
            self.file_failed(item.name, item.error, item)
            return item
        # An item's first file goes through /download; its others wait for that 302, which
        # may show where the item's files are served (downloadermiddlewares.storage).
        teaching = None
        if not self.book.dry_run:
            teaching = await self.locations.wait_turn(item.url, item.name, item.storage_dir)
        try:
            item = await super().process_item(item)
        finally:
            if teaching is not None:
                self.locations.taught(teaching)
        await self.book.file_ended(item)
        return item

    def get_media_requests(self, item: AudioFile, info: MediaPipeline.SpiderInfo) -> list[Request]:
        return [self.file_request(url, item) for url in item.file_urls]

    def file_request(self, url: str, item: AudioFile) -> Request:
        """The request of a file's /download ``url``, or of its storage node's URL once its
        item's location is known (``ravelscraper.downloadermiddlewares.storage``)."""
        # The redirect to a storage node, or a direct request there, keeps the /download
        # URL's slot: one politeness budget.
        meta = {"download_slot": urlsplit(url).hostname, "ravel_name": item.name}
        meta["ravel_identifier"] = item.identifier
        direct = self.locations.direct_url(url, item.name)
        if direct is not None:
            meta[FRONT_META] = url
        elif item.storage_dir and self.locations.may_teach(url, item.name):
            meta[DIR_META] = item.storage_dir  # its 302 may teach the item's location
        meta.update(self.stream_meta(item))
        request = Request(direct or url, callback=NO_CALLBACK, meta=meta)
        # Scrapy caches a request's fingerprint: MediaPipeline's own look-up costs nothing.
        self.requested[url] = self.crawler.request_fingerprinter.fingerprint(request)
        return request

    def stream_meta(self, item: AudioFile) -> dict[str, Any]:
        """On the local store, the meta that streams the body to the target's folder: at its
        named part (resumable by a later run), unless it is listed smaller than
        ``NAMED_PART_MIN_SIZE``."""
        if not self.store.streams_parts:
            return {}
        folder = self.store.folder_of(f"{item.identifier}/{item.name}")
        if folder is None:
            return {}
        place = None
        if item.size is None or item.size >= NAMED_PART_MIN_SIZE:
            listing = {"size": item.size, "mtime": getattr(item, "mtime", None)}
            listing.update(md5=item.md5, sha1=item.sha1)
            place = self.store.part_place(item.identifier, item.name, listing)
        return self.part_files.meta(folder, expected_checksum(item)[0], place)

    def file_path(
        self,
        request: Request,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: AudioFile | None = None,
    ) -> str:
        assert item is not None, "VerifiedFilesPipeline names files after their item"
        return f"{item.identifier}/{item.name}"  # judged by the spider (ravelscraper.archive.names)

    async def media_to_download(
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: AudioFile | None = None
    ) -> FileInfo | None:
        assert item is not None
        path = self.file_path(request, info=info, item=item)
        algorithm, expected = expected_checksum(item)
        if algorithm not in self.store.checksums:  # S3's ETag, FTP's checksum: md5s
            algorithm, expected = "md5", item.md5
        stat = partial(self.store.stat_file, path, info, algorithm, expected, item.size)
        if self.store.streams_parts and self.store.lacks(path):
            stored = None  # a new file: no stored copy to check (and no thread to ask)
        else:
            stored = await up_to_date(item, partial(self.book.stat, stat), algorithm, expected)
        if stored is None and not self.book.dry_run:
            return None
        # Not downloaded: nothing streams to the request's target (kept until the crawl's end
        # otherwise: a dry run's or a re-run's memory would grow with every file).
        self.part_files.drop(request)
        if stored is None:
            self.book.planned(item)
            return file_info(request, path, expected, algorithm, "planned")
        if item.mtime is not None and self.store.restamps and not self.book.dry_run:
            await self.restamp(path, item.mtime)
        self.transfers.uptodate(item)
        self.inc_stats("uptodate")
        checksum = stored.get("checksum")
        return file_info(request, path, checksum, algorithm, "uptodate")

    async def restamp(self, path: str, mtime: int) -> None:
        """Give an up-to-date stored file archive.org's mtime, if its own differs (its
        record follows); a file that can't be restamped keeps its time, with a warning."""
        try:
            if await call_store(self.store, partial(self.store.set_mtime, path, mtime)):
                self.stats.inc_value("ravel/files_mtime_set")
        except OSError as exc:
            logger.warning(f"cannot set the mtime of {path!r}: {exc.strerror or exc}")

    async def media_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: AudioFile | None = None,
    ) -> FileInfo:
        assert item is not None

        async def fetch(attempt: int) -> ReceivedBody:
            nonlocal response, request
            if attempt:  # the same file again, with a fresh target: its own part file
                request = request.replace(
                    dont_filter=True, meta={**request.meta, **self.stream_meta(item)}
                )
                try:
                    response = await self.crawler.engine.download_async(request)
                except BaseException:
                    self.part_files.drop(request)
                    raise
            target = request.meta.get(STREAM_META)
            streamed = self.part_files.release(request)
            write_error = getattr(target, "error", None)  # writing the part file failed
            try:
                return await received_body(
                    response, streamed, write_error, expected_checksum(item)[0]
                )
            except StoreWriteError as exc:
                raise self.write_failed(exc.error) from None

        body = await verified_body(item, self.verify_retries, fetch)
        try:
            return await self.store_body(body, request, info, item)
        finally:
            body.discard()

    async def store_body(
        self, body: ReceivedBody, request: Request, info: MediaPipeline.SpiderInfo, item: AudioFile
    ) -> FileInfo:
        path = self.file_path(request, item=item)
        algorithm, expected = expected_checksum(item)
        verified = expected is not None and body.checksum == expected
        record = (algorithm, body.checksum) if verified else None  # only a verified body's
        try:
            call = self.persist_call(path, info, body, record, item.mtime)
            await call_store(self.store, call)
        except OSError as exc:
            raise self.write_failed(exc) from None
        if body.streamed is not None:
            body.streamed.committed()
        self.transfers.stored(item, body.size, verified)
        self.inc_stats("downloaded")
        status = "downloaded" if verified else "unverified"
        return file_info(request, path, body.checksum, algorithm, status)

    def persist_call(
        self,
        path: str,
        info: MediaPipeline.SpiderInfo,
        body: ReceivedBody,
        record: Any,
        mtime: int | None = None,
    ) -> Callable[[], Any]:
        """The call that stores a received body: its part file put in place (a store that
        streams parts), or its bytes written; ``record`` is a verified body's (algorithm,
        digest), for a store that keeps records; ``mtime`` archive.org's (epoch seconds)."""
        if body.streamed is not None:
            fd, part = body.streamed.fd, body.streamed.path
            return partial(self.store.commit_part, fd, part, path, record=record, mtime=mtime)
        data = BytesIO(body.data or b"")
        return partial(self.store.persist_file, path, data, info, record=record, mtime=mtime)

    def write_failed(self, exc: OSError) -> FileException:
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
        # the failure again with a traceback (the crawl checks that private behaviour at
        # start: scrapy_compat.missing_names). The file is then missing from ``files``.
        self.part_files.drop(request)
        name = request.meta.get("ravel_name", request.url)
        key = (request.meta.get("ravel_identifier", ""), name)
        if isinstance(failure.value, TransferCancelled):
            self.transfers.cancelled()
            self.failures[key] = "not started: the crawl stopped"
            return
        reason = describe(failure)
        if isinstance(failure.value, StoreWriteError):  # a write while streaming
            reason = str(self.write_failed(failure.value.error))
        self.failures[key] = reason
        self.file_failed(name, f"{reason} ({request.meta.get(FRONT_META, request.url)})")

    def store_failed(self, exc: OSError) -> None:
        """A full or broken store fails every file after this one: stop, keep what is stored."""
        if self.store_error is not None:
            return
        self.store_error = f"FILES_STORE failed: {exc.strerror or exc}; stopping the crawl"
        stop_transfers = getattr(self.crawler.engine.downloader, "stop_transfers", None)
        if stop_transfers is not None:
            stop_transfers()  # cancels the queued files, silently: the one line comes next
        message = f"{self.store_error} (files already stored are kept)"
        stop_crawl(self.crawler, "files_store_failed", message)

    def file_failed(self, name: str, reason: str, item: AudioFile | None = None) -> None:
        if item is not None:
            item.error = reason
        self.transfers.failed(name, reason)

    def item_completed(
        self, results: list[FileInfoOrError], item: AudioFile, info: MediaPipeline.SpiderInfo
    ) -> AudioFile:
        item.files = [result for ok, result in results if ok and result]
        if not item.files and not item.error:  # the manifest says why it is missing
            item.error = self.failures.pop((item.identifier, item.name), "not stored")
        requested = [self.requested.pop(url, None) for url in item.file_urls]
        forget_media_results(info, [f for f in requested if f is not None])  # memory flat
        return item


def file_info(request: Request, path: str, checksum: Any, algorithm: str, status: str) -> FileInfo:
    """One entry of an item's ``files``, as the manifest shows it (the /download URL, also
    of a file fetched straight from its storage node)."""
    return {  # FileInfo plus checksum_type
        "url": request.meta.get(FRONT_META, request.url),
        "path": path,
        "checksum": checksum,
        "checksum_type": algorithm,
        "status": status,
    }
