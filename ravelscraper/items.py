"""The item: one archive.org file as the spider lists it and the pipeline stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

from ravelscraper.archive.metadata import ItemLocation, Metadata, RemoteFile


@dataclass
class AudioFile:
    """One file of an archive.org item; ``files`` is FilesPipeline's result."""

    identifier: str
    name: str
    url: str
    format: str = ""
    title: str = ""
    track: str = ""
    album: str = ""
    creator: str = ""
    length: float | None = None  # seconds
    size: int | None = None  # bytes, from /metadata
    md5: str | None = None  # from /metadata; None when only the details page was read
    sha1: str | None = None  # from /metadata (all but <id>_files.xml): checked instead of md5
    # archive.org's modification time (epoch seconds, from /metadata): the stored file's
    # mtime; None keeps the download time.
    mtime: int | None = None
    # archive.org rewrites this file (<id>_files.xml, _meta.xml, _reviews.xml): its listed
    # checksum may not match what is served, so a mismatch stores it marked "unverified".
    regenerated: bool = False
    # The item's folder on its storage nodes, from /metadata (``dir``); "" when not known.
    storage_dir: str = ""
    # Set by the spider when the file can't be fetched as listed (e.g. conflicting md5s):
    # the pipeline then fails it with this reason instead of downloading it.
    error: str = ""
    # Set by the spider on each file of an item. What the search answer said of the item's
    # state (ravelscraper.archive.search.fingerprint; None when no search found the item), how many
    # files the crawl takes from the item, and the selection that chose them.
    item_fingerprint: str | None = None
    item_files: int = 0
    selection: str = ""
    file_urls: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_item(self) -> bool:
        """A row for an item that failed as a whole (no file: ``name`` empty, ``error`` set):
        it reaches the ``-O`` manifest and nothing else (never downloaded, never counted as a
        file)."""
        return not self.name and bool(self.error)

    @classmethod
    def item_failed(cls, item: ItemLocation, reason: str) -> Self:
        """The manifest's row for an item of many that can't be listed: its identifier, its
        details page and why (``[item failed]``)."""
        return cls(identifier=item.identifier, name="", url=item.details_url, error=reason)

    @classmethod
    def listed(cls, item: ItemLocation, file: RemoteFile, metadata: Metadata | None = None) -> Self:
        """A file as the item's listing gives it (``metadata`` fills in album and creator)."""
        url = item.download_url(file.name)
        return cls(
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
            sha1=file.sha1,
            mtime=file.mtime,
            regenerated=file.regenerated,
            storage_dir=metadata.dir if metadata else "",
            error=file.error,
            file_urls=[url],
        )
