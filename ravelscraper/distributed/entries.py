"""Files as queue entries: whichever node pops an entry downloads that file.

FilesPipeline downloads bypass the scheduler, so without this every file of an item would be
downloaded by the node that listed it. :class:`FileEntries` (a spider middleware) hands the
files of each listed item to the scheduler's :class:`~.jobs.JobListing`, which puts them in
the ledger and queues each as the ``data:`` request built here (:func:`entry_request`),
holding the file's record; the spider's ``parse_file_entry`` callback turns it back into the
item, on the node that popped it, and that node's FilesPipeline stores and verifies the file.

The record carries the file as a ``/metadata`` entry (strings, as archive.org sends them),
so the popping node judges it with the very function a single node uses,
:meth:`RemoteFile.from_metadata`: the fleet accepts exactly the files a single node would.
It is checked like any other queue entry: it comes from a Redis others may write to.

A page callback that fails its job (``CloseSpider``: an unknown item, no matching files; or a
crash) is handed to ``JobListing.job_failed`` too: the job fails in the ledger, the node
carries on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Self

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.http import Response

from ravelscraper.archive.metadata import BadInput, ItemLocation, RemoteFile, storage_dir
from ravelscraper.archive.names import UnsafeName, safe_relative_path
from ravelscraper.distributed.connection import ENTRY_SLOT
from ravelscraper.distributed.fleetspider import FleetSpider
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.items import AudioFile
from ravelscraper.logtags import FLEET

logger = logging.getLogger(__name__)

RECORD_FIELDS = {"identifier", "url", "file", "regenerated", "error"}
FILE_FIELDS = {
    "name",
    "format",
    "title",
    "track",
    "album",
    "creator",
    "length",
    "size",
    "md5",
    "sha1",
    "mtime",
}
MAX_TEXT = 4096
ENTRY_URL = "data:,"  # a file entry's request: its files are in its meta


class BadRecord(ValueError):
    """A file record that is not what this crawl would have queued."""


def file_record(item: AudioFile) -> dict[str, Any]:
    """An item's record: its file as the ``/metadata`` entry it came from (all strings)."""
    entry = {
        "name": item.name,
        "format": item.format,
        "title": item.title,
        "track": item.track,
        "album": item.album,
        "creator": item.creator,
    }
    if item.length is not None:
        entry["length"] = repr(float(item.length))  # "nan", "-5.0": judged as a node would
    if item.size is not None:
        entry["size"] = str(item.size)
    if item.md5 is not None:
        entry["md5"] = item.md5
    if item.sha1 is not None:
        entry["sha1"] = item.sha1
    if item.mtime is not None:
        entry["mtime"] = str(item.mtime)
    return {
        "identifier": item.identifier,
        "url": item.url,
        "file": entry,
        "regenerated": bool(item.regenerated),
        "error": item.error,
    }


# A file entry carries several files of one item (a chunk): at most FILES_PER_ENTRY, and
# at most ENTRY_BYTES of files unless one file alone is larger. An item of 10,000 files is
# 500 entries, shared by the nodes; a node takes a new entry while it has fewer than
# RAVEL_NODE_MAX_LEASES files in hand. While few files are pending (the run's, with the item's
# own), entries are smaller, down to one file each: the nodes share even a small item, and
# Redis memory only counts when many files wait (files_per_entry).
FILES_PER_ENTRY = 20
SPREAD_FILES = 50  # pending files per file of an entry, up to FILES_PER_ENTRY
ENTRY_BYTES = 256 * 1024 * 1024
CHUNK_VERSION = 2
# A file's row in an entry: its /metadata fields (strings, as archive.org sends them; null
# for none), the item's album and creator only where they differ from the entry's, then
# regenerated (0/1) and the spider's error; trailing empty fields are left out.
ROW_FIELDS = ("name", "size", "md5", "sha1", "mtime", "format", "title", "track", "length")
ROW_ALBUM = len(ROW_FIELDS)  # then creator, regenerated, error
ROW_LEN = ROW_ALBUM + 4
CHUNK_META = "ravel_chunk"  # a popped file entry's Chunk, on its request


@dataclass(frozen=True)
class Chunk:
    """A file entry: files of one item, checked for their shape (not yet judged as files)."""

    origin: str
    identifier: str
    album: str
    creator: str
    rows: tuple[tuple[Any, ...], ...]
    # The item's folder on its storage nodes (/metadata's ``dir``; "" when not known): the
    # popping node's files pipeline then sends one file per item through /download's 302
    # and the others straight to the storage node (RAVEL_STORAGE_DIRECT), as a single node.
    storage_dir: str = ""

    def path(self, row: tuple[Any, ...]) -> str:
        return f"{self.identifier}/{row[0]}"

    @property
    def bytes(self) -> int:
        """The files' listed sizes, added up."""
        sizes = (row[1] if len(row) > 1 else None for row in self.rows)
        return sum(int(size) for size in sizes if isinstance(size, str) and size.isdigit())

    @property
    def paths(self) -> list[str]:
        return [self.path(row) for row in self.rows]

    def encode(self, rows: tuple[tuple[Any, ...], ...] | None = None) -> bytes:
        """The entry (with only ``rows`` of it: what is left of a chunk handed back)."""
        chunk = [CHUNK_VERSION, self.origin, self.identifier, self.album, self.creator]
        chunk.append([list(r) for r in (self.rows if rows is None else rows)])
        if self.storage_dir:
            chunk.append(self.storage_dir)
        return json.dumps(chunk, separators=(",", ":")).encode()

    def record(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """The file's record (:func:`file_record`'s form), for :func:`item_from_record`."""
        full = tuple(row) + (None,) * (ROW_LEN - len(row))
        entry = {k: v for k, v in zip(ROW_FIELDS, full, strict=False) if v is not None}
        album, creator, regenerated, error = full[ROW_ALBUM:]
        entry["album"] = self.album if album is None else album
        entry["creator"] = self.creator if creator is None else creator
        name = entry.get("name")
        return {
            "identifier": self.identifier,
            "url": ItemLocation(self.origin, self.identifier).download_url(name)
            if isinstance(name, str)
            else "",
            "file": entry,
            "regenerated": bool(regenerated),
            "error": "" if error is None else error,
        }


def file_row(item: AudioFile, album: str, creator: str) -> tuple[Any, ...]:
    """A file's row in its entry (see ``ROW_FIELDS``)."""
    entry = file_record(item)["file"]
    row: list[Any] = [entry.get(k) or None for k in ROW_FIELDS]
    row += [None if item.album == album else item.album]
    row += [None if item.creator == creator else item.creator]
    row += [1 if item.regenerated else None, item.error or None]
    while row and row[-1] is None:
        row.pop()
    return tuple(row)


def files_per_entry(pending: int) -> int:
    """How many files an entry holds when ``pending`` files wait, this item's included."""
    return max(1, min(FILES_PER_ENTRY, pending // SPREAD_FILES))


def chunks_of(files: list[AudioFile], per_entry: int = FILES_PER_ENTRY) -> list[Chunk]:
    """The file entries of one item's files (all of one identifier and origin), of at most
    ``per_entry`` files each."""
    if not files:
        return []
    first = files[0]
    origin = ItemLocation.on(first.url, first.identifier).origin
    album, creator, folder = first.album, first.creator, first.storage_dir
    chunks: list[Chunk] = []
    rows: list[tuple[Any, ...]] = []
    size = 0
    for item in files:
        grown = size + (item.size or 0)
        if rows and (len(rows) >= per_entry or grown > ENTRY_BYTES):
            chunks.append(Chunk(origin, first.identifier, album, creator, tuple(rows), folder))
            rows, grown = [], item.size or 0
        rows.append(file_row(item, album, creator))
        size = grown
    chunks.append(Chunk(origin, first.identifier, album, creator, tuple(rows), folder))
    return chunks


def parse_chunk(raw: Any) -> Chunk:
    """A file entry's chunk, from its parsed JSON; raises BadRecord for any other shape."""
    if not isinstance(raw, list) or len(raw) not in (6, 7) or raw[0] != CHUNK_VERSION:
        raise BadRecord("not a file entry")
    _, origin, identifier, album, creator, rows, *rest = raw
    folder = rest[0] if rest else ""
    if folder != "" and storage_dir(folder) != folder:
        raise BadRecord("bad storage folder")
    for name, value in (("origin", origin), ("identifier", identifier)):
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            raise BadRecord(f"bad {name!r}")
    for name, value in (("album", album), ("creator", creator)):
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise BadRecord(f"bad {name!r}")
    if not isinstance(rows, list) or not 0 < len(rows) <= FILES_PER_ENTRY:
        raise BadRecord(f"an entry holds 1 to {FILES_PER_ENTRY} files")
    for row in rows:
        if not isinstance(row, list) or not 0 < len(row) <= ROW_LEN:
            raise BadRecord("bad file row")
        full = row + [None] * (ROW_LEN - len(row))
        fields, (regenerated, error) = full[: ROW_ALBUM + 2], full[ROW_ALBUM + 2 :]
        if not all(v is None or (isinstance(v, str) and len(v) <= MAX_TEXT) for v in fields):
            raise BadRecord(f"'file' must be a /metadata entry of strings ({sorted(FILE_FIELDS)})")
        if regenerated not in (None, 0, 1) or isinstance(regenerated, bool):
            raise BadRecord("bad 'regenerated'")
        if error is not None and (not isinstance(error, str) or len(error) > MAX_TEXT):
            raise BadRecord("bad 'error'")
    return Chunk(origin, identifier, album, creator, tuple(tuple(r) for r in rows), folder)


def entry_request(chunk: Chunk, spider: FleetSpider) -> Request:
    """The request of a popped file entry: its files ride in ``meta`` (``CHUNK_META``)."""
    return Request(
        ENTRY_URL,
        callback=spider.parse_file_entry,
        meta={"download_slot": ENTRY_SLOT, CHUNK_META: chunk},
        dont_filter=True,
    )


def is_file_entry(request: Request | None) -> bool:
    return request is not None and CHUNK_META in request.meta


def item_from_record(body: bytes | dict[str, Any], origins: AllowedOrigins) -> AudioFile:
    """Rebuild and check an AudioFile from an entry's record; raises BadRecord (only)."""
    try:
        return _item_from_record(body, origins)
    except BadRecord:
        raise
    except Exception as exc:  # whatever the record holds, one line
        raise BadRecord(f"unreadable record ({type(exc).__name__})") from None


def _item_from_record(body: bytes | dict[str, Any], origins: AllowedOrigins) -> AudioFile:
    if isinstance(body, dict):
        record = body
    else:
        try:
            record = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadRecord("not JSON") from None
    if not isinstance(record, dict) or set(record) != RECORD_FIELDS:
        raise BadRecord(f"fields must be exactly {sorted(RECORD_FIELDS)}")
    for name in ("identifier", "url", "error"):
        if not isinstance(record[name], str) or len(record[name]) > MAX_TEXT:
            raise BadRecord(f"bad {name!r}")
    if not isinstance(record["regenerated"], bool):
        raise BadRecord("bad 'regenerated'")
    entry = record["file"]
    if (
        not isinstance(entry, dict)
        or not set(entry) <= FILE_FIELDS
        or not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in entry.values())
    ):
        raise BadRecord(f"'file' must be a /metadata entry of strings ({sorted(FILE_FIELDS)})")
    try:
        identifier, url = record["identifier"], record["url"]
        remote = RemoteFile.from_metadata(entry, identifier)  # the single node's judge
        # Judged again: the record comes from a Redis others may write to, not from our spider.
        safe_relative_path(identifier, remote.name)
        location = ItemLocation.on(url, identifier)
    except (UnsafeName, BadInput, KeyError) as exc:
        raise BadRecord(str(exc)) from None
    if url not in origins:
        raise BadRecord(f"host of {url[:200]!r} is not allowed (allowed: {origins.describe()})")
    if url != location.download_url(remote.name):
        raise BadRecord(f"url {url[:200]!r} is not the download URL of {remote.name[:200]!r}")
    file = AudioFile.listed(location, remote)  # the single node's item, field for field
    file.regenerated = record["regenerated"]
    file.error = record["error"] or remote.error
    return file


def file_entry_items(response: Response, spider: Spider) -> Iterator[AudioFile]:
    """The body of the spider's ``parse_file_entry``: the entry's items, or one ERROR line
    (an entry with a file that is not what this crawl would have queued is refused whole)."""
    origins = AllowedOrigins.for_spider(spider)
    chunk = response.request.meta.get(CHUNK_META) if response.request is not None else None
    try:
        if not isinstance(chunk, Chunk):
            raise BadRecord("not a file entry")
        items = [item_from_record(chunk.record(row), origins) for row in chunk.rows]
        for item in items:
            item.storage_dir = chunk.storage_dir
    except BadRecord as exc:
        spider.crawler.stats.inc_value("ravel/entries_rejected")
        logger.error(f"{FLEET} rejected a file entry: {exc}")
        from ravelscraper.distributed.fleet import Fleet  # only a fleet pops file entries

        scheduler = Fleet.of(spider.crawler).scheduler
        if scheduler is not None:
            scheduler.leases.entry_rejected(response.request, f"bad file record: {exc}")
        return
    yield from items


class FileEntries:
    """Spider middleware: listed files become queue entries; ``RAVEL_WAIT_FOR_WORK`` skips
    the spider's own start item (the node then takes work from ``<prefix>:start_urls``)."""

    def __init__(self, crawler: Crawler) -> None:
        from ravelscraper.distributed.fleet import Fleet  # a fleet crawl: redis is there

        self.crawler = crawler
        self.fleet = Fleet.of(crawler)
        self.wait_for_work = self.fleet.settings.wait_for_work != 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        if self.wait_for_work:
            spider = self.fleet.spider
            try:  # -a formats/glob apply to the jobs it takes: a typo must not pass unseen
                spider.check_arguments()
            except BadInput as exc:
                spider.fail("bad_input", str(exc))
            logger.info(f"{FLEET} waiting for work: the spider's own start item is not crawled")
            return
        async for item_or_request in start:
            yield item_or_request

    async def process_spider_output(
        self, response: Response, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        from_entry = is_file_entry(response.request)
        files: list[AudioFile] = []
        try:
            async for output in result:
                if isinstance(output, AudioFile) and not from_entry and not output.failed_item:
                    files.append(output)
                else:
                    yield output
        except Exception as exc:  # CloseSpider from RavelSpider.fail, or a crash
            if from_entry or self.fleet.scheduler is None:
                raise
            if not self.fleet.scheduler.jobs.job_failed(response.request, exc):
                raise
            return
        if self.fleet.scheduler is None:
            raise RuntimeError("FileEntries needs the fleet's scheduler (RavelScheduler)")
        for request in self.fleet.scheduler.jobs.queue_files(files, response.request):
            yield request
        self.fleet.scheduler.leases.page_done(response.request)

    def process_spider_exception(self, response: Response, exception: Exception) -> Any:
        """A page callback that raised before yielding (not a generator): same as above."""
        scheduler = self.fleet.scheduler
        if is_file_entry(response.request) or scheduler is None:
            return None
        if scheduler.jobs.job_failed(response.request, exception):
            return []
        return None
