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

import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.http import Response

from ravelscraper.archive.metadata import BadInput, ItemLocation, RemoteFile
from ravelscraper.archive.names import UnsafeName, safe_relative_path
from ravelscraper.distributed.connection import ENTRY_SLOT
from ravelscraper.distributed.fleetspider import FleetSpider
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.serializer import DATA_PREFIX
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


def entry_request(item: AudioFile, spider: FleetSpider) -> Request:
    """The queue entry for one file: its record in a ``data:`` URL."""
    payload = json.dumps(file_record(item), separators=(",", ":"), sort_keys=True)
    return Request(
        DATA_PREFIX + base64.b64encode(payload.encode()).decode(),
        callback=spider.parse_file_entry,
        meta={"download_slot": ENTRY_SLOT},
        dont_filter=False,
    )


def item_from_record(body: bytes, origins: AllowedOrigins) -> AudioFile:
    """Rebuild and check an AudioFile from an entry's record; raises BadRecord (only)."""
    try:
        return _item_from_record(body, origins)
    except BadRecord:
        raise
    except Exception as exc:  # whatever the record holds, one line
        raise BadRecord(f"unreadable record ({type(exc).__name__})") from None


def _item_from_record(body: bytes, origins: AllowedOrigins) -> AudioFile:
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
    """The body of the spider's ``parse_file_entry``: the item, or one ERROR line."""
    origins = AllowedOrigins.for_spider(spider)
    try:
        yield item_from_record(response.body, origins)
    except BadRecord as exc:
        spider.crawler.stats.inc_value("ravel/entries_rejected")
        logger.error(f"{FLEET} rejected a file entry: {exc}")
        from ravelscraper.distributed.fleet import Fleet  # only a fleet pops file entries

        scheduler = Fleet.of(spider.crawler).scheduler
        if scheduler is not None:
            scheduler.leases.entry_rejected(response.request, f"bad file record: {exc}")


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
        from_entry = response.url.startswith(DATA_PREFIX)
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
        if response.url.startswith(DATA_PREFIX) or scheduler is None:
            return None
        if scheduler.jobs.job_failed(response.request, exception):
            return []
        return None
