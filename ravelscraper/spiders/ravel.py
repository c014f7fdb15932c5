from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import scrapy
from scrapy.exceptions import CloseSpider
from scrapy.http import Response
from twisted.python.failure import Failure

from ravelscraper.archive import (
    DEFAULT_IDENTIFIER,
    BadInput,
    ItemLocation,
    Metadata,
    RemoteFile,
    Selection,
    page_file_names,
)
from ravelscraper.distributed.entries import file_entry_items
from ravelscraper.items import AudioFile


class RavelSpider(scrapy.Spider):
    """Finds the files of one archive.org item and hands them to FilesPipeline.

    Arguments (``-a``): ``url`` (a details page) or ``item`` (an identifier on
    ``RAVEL_ORIGIN``, by default ThePianoMusicOfMauriceRavel);
    ``formats`` (archive.org format names, comma-separated) and/or ``glob``
    (file-name patterns, comma-separated) to choose other files than the mp3s.
    """

    name = "ravel"

    def __init__(
        self,
        url: str | None = None,
        item: str | None = None,
        formats: str | None = None,
        glob: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.item = item
        self.selection = Selection.from_args(formats, glob)

    def location(self) -> ItemLocation:
        if self.url and self.item:
            raise BadInput("give either -a url=<details page> or -a item=<identifier>, not both")
        if self.url:
            return ItemLocation.from_details_url(self.url)
        return ItemLocation.on(self.settings["RAVEL_ORIGIN"], self.item or DEFAULT_IDENTIFIER)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        try:
            item = self.location()
        except BadInput as exc:
            self.fail("bad_input", str(exc))
        for request in self.item_requests(item):
            yield request

    def item_requests(self, item: ItemLocation) -> list[scrapy.Request]:
        """The requests that list one item's files; the fleet queues the same ones."""
        return [
            scrapy.Request(
                item.details_url,
                callback=self.parse_details,
                errback=self.details_failed,
                cb_kwargs={"item": item},
            )
        ]

    def parse_details(self, response: Response, item: ItemLocation) -> scrapy.Request:
        return self.metadata_request(item, page_names=page_file_names(response.text, item))

    def details_failed(self, failure: Failure) -> scrapy.Request:
        # The details page is a courtesy; /metadata is what decides.
        item = failure.request.cb_kwargs["item"]
        self.logger.warning(f"details page {item.details_url} failed: {failure.getErrorMessage()}")
        return self.metadata_request(item, page_names=[])

    def metadata_request(self, item: ItemLocation, page_names: list[str]) -> scrapy.Request:
        return scrapy.Request(
            item.metadata_url,
            callback=self.parse_metadata,
            errback=self.metadata_failed,
            cb_kwargs={"item": item, "page_names": page_names},
        )

    def parse_metadata(
        self, response: Response, item: ItemLocation, page_names: list[str]
    ) -> Iterator[AudioFile]:
        try:
            metadata = Metadata.from_json(item.identifier, response.body)
        except ValueError:
            metadata = None
            if not page_names:
                self.fail("bad_metadata", f"{item.metadata_url} did not answer JSON")
        if metadata is None and not page_names:
            self.fail(
                "unknown_item",
                f"unknown item {item.identifier!r}: archive.org has no such identifier "
                f"({item.metadata_url} is empty)",
            )
        if metadata is None:
            yield from self.from_page(item, page_names)
            return
        chosen = self.selection.choose(metadata.files)
        if not chosen:
            self.fail(
                "no_matching_files",
                f"item {item.identifier!r} has no {self.selection.describe()} files; "
                f"its formats are: {', '.join(metadata.formats) or 'none'}",
            )
        yield from self.announce(
            [self.audio_file(item, f, metadata) for f in chosen], verified=True
        )

    def metadata_failed(self, failure: Failure) -> Iterator[AudioFile]:
        request = failure.request
        item, page_names = request.cb_kwargs["item"], request.cb_kwargs["page_names"]
        if not page_names:
            self.fail(
                "metadata_failed",
                f"cannot list the files of {item.identifier!r}: {request.url} failed "
                f"({failure.getErrorMessage()}) and the details page links none",
            )
        yield from self.from_page(item, page_names)

    def from_page(self, item: ItemLocation, page_names: list[str]) -> Iterator[AudioFile]:
        self.logger.warning(
            f"{item.metadata_url} unavailable: taking the details page's links; "
            "checksums can't be verified"
        )
        files = [RemoteFile(name=n) for n in page_names if self.selection.matches_name(n)]
        if self.selection.is_default:
            files = Selection().choose(files)
        if not files:
            self.fail(
                "no_matching_files",
                f"the details page of {item.identifier!r} links no "
                f"{self.selection.describe()} files",
            )
        yield from self.announce([self.audio_file(item, f) for f in files], verified=False)

    def announce(self, files: list[AudioFile], verified: bool) -> Iterator[AudioFile]:
        stats = self.crawler.stats
        stats.set_value("ravel/files_total", len(files))
        stats.set_value("ravel/bytes_total", sum(f.size or 0 for f in files))
        self.logger.info(
            f"[item] {files[0].identifier}: {len(files)} files"
            + ("" if verified else " (no checksums)")
        )
        yield from files

    @staticmethod
    def audio_file(
        item: ItemLocation, file: RemoteFile, metadata: Metadata | None = None
    ) -> AudioFile:
        url = item.download_url(file.name)
        return AudioFile(
            identifier=item.identifier,
            name=file.name,
            url=url,
            format=file.format,
            title=file.title,
            track=file.track,
            album=file.album or (metadata.title if metadata else ""),
            creator=file.creator or (metadata.creator if metadata else ""),
            length=file.length,
            size=file.size,
            md5=file.md5,
            file_urls=[url],
        )

    def parse_file_entry(self, response: Response) -> Iterator[AudioFile]:
        """A file entry from the fleet's Redis queue (see ravelscraper.distributed), checked."""
        yield from file_entry_items(response, self)

    def fail(self, reason: str, message: str) -> NoReturn:
        """Stop the crawl on input the user must fix: one ERROR line, a non-zero exit."""
        self.logger.error(message)
        self.crawler.stats.set_value("ravel/error", message)
        raise CloseSpider(reason)
