"""Files as queue entries: whichever node pops an entry downloads that file.

FilesPipeline downloads bypass the scheduler, so without this every file of an item would be
downloaded by the node that listed it. :class:`FileEntries` (a spider middleware) turns each
listed :class:`AudioFile` into a ``data:`` request holding the file's record; the spider's
``parse_file_entry`` callback turns it back into the item, on the node that popped it, and
that node's FilesPipeline stores and verifies the file. The record is checked like any
other queue entry: it comes from a Redis others may write to.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.http import Response

from ravelscraper.archive import BadInput, ItemLocation
from ravelscraper.distributed.serializer import DATA_PREFIX, ENTRY_SLOT, AllowedOrigins
from ravelscraper.items import AudioFile
from ravelscraper.stores import UnsafeName, safe_relative_path

logger = logging.getLogger(__name__)

RECORD_FIELDS = [f.name for f in dataclasses.fields(AudioFile) if f.name not in ("files",)]
TEXT_FIELDS = {"format", "title", "track", "album", "creator"}
MD5 = re.compile(r"[0-9a-f]{32}")


class BadRecord(ValueError):
    """A file record that is not what this crawl would have queued."""


def entry_request(item: AudioFile, spider: Spider) -> Request:
    """The queue entry for one file: its record in a ``data:`` URL."""
    record = {name: getattr(item, name) for name in RECORD_FIELDS if name != "file_urls"}
    payload = json.dumps(record, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return Request(
        DATA_PREFIX + base64.b64encode(payload.encode()).decode(),
        callback=spider.parse_file_entry,  # type: ignore[attr-defined]
        meta={"download_slot": ENTRY_SLOT},
    )


def item_from_record(body: bytes, origins: AllowedOrigins) -> AudioFile:
    """Rebuild and check an AudioFile from an entry's record; raises BadRecord."""
    try:
        record = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRecord("not JSON") from None
    expected = set(RECORD_FIELDS) - {"file_urls"}
    if not isinstance(record, dict) or set(record) != expected:
        raise BadRecord(f"fields must be exactly {sorted(expected)}")
    for name in ("identifier", "name", "url", *TEXT_FIELDS):
        if not isinstance(record[name], str) or len(record[name]) > 4096:
            raise BadRecord(f"bad {name!r}")
    for name in ("size", "length"):
        value = record[name]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise BadRecord(f"bad {name!r}")
    if record["md5"] is not None and not (
        isinstance(record["md5"], str) and MD5.fullmatch(record["md5"])
    ):
        raise BadRecord("bad 'md5'")
    try:
        safe_relative_path(record["identifier"], record["name"])
        url = record["url"]
        location = ItemLocation.on(url, record["identifier"])
    except (UnsafeName, BadInput) as exc:
        raise BadRecord(str(exc)) from None
    if url not in origins:
        raise BadRecord(f"host of {url[:200]!r} is not allowed (allowed: {origins.describe()})")
    if url != location.download_url(record["name"]):
        raise BadRecord(f"url {url[:200]!r} is not the download URL of {record['name']!r}")
    if record["size"] is not None:
        record["size"] = int(record["size"])
    return AudioFile(**record, file_urls=[url])


def file_entry_items(response: Response, spider: Spider) -> Iterator[AudioFile]:
    """The body of the spider's ``parse_file_entry``: the item, or one ERROR line."""
    origins = AllowedOrigins.for_spider(spider)
    try:
        yield item_from_record(response.body, origins)
    except BadRecord as exc:
        spider.crawler.stats.inc_value("ravel/entries_rejected")
        logger.error(f"[fleet] rejected a file entry: {exc}")


class FileEntries:
    """Spider middleware: listed files become queue entries; ``RAVEL_WAIT_FOR_WORK`` skips
    the spider's own start item (the node then takes work from ``<prefix>:start_urls``)."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.wait_for_work = crawler.settings.getfloat("RAVEL_WAIT_FOR_WORK", 0) != 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        if self.wait_for_work:
            logger.info("[fleet] waiting for work: the spider's own start item is not crawled")
            return
        async for item_or_request in start:
            yield item_or_request

    async def process_spider_output(
        self, response: Response, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        from_entry = response.url.startswith(DATA_PREFIX)
        spider = self.crawler.spider
        async for output in result:
            if isinstance(output, AudioFile) and not from_entry:
                self.crawler.stats.inc_value("ravel/entries_queued")
                yield entry_request(output, spider)
            else:
                yield output
