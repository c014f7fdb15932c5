"""Which files of an item the crawl takes, from what archive.org answers, or why none.

The spider's parts that need no crawl: reading ``/metadata``, the names a details page
links, the choice among the listed files, and the report of access-restricted files.
A listing that can't go on raises :class:`ListingRefused` with the stop reason and the line
to log; the spider stops the crawl (its one item) or fails that item alone (one of many).
"""

from __future__ import annotations

from dataclasses import dataclass

from scrapy.http import Response, TextResponse

from ravelscraper.archive.metadata import (
    BadInput,
    ItemLocation,
    Metadata,
    RemoteFile,
    Selection,
    page_file_names,
)

SAMPLES_HINT = '; only 30-second samples are public (-a formats="MP3 Sample" takes them)'


class ListingRefused(Exception):
    """No file to take: ``reason`` is the crawl's stop reason, the message its ERROR line."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def read_metadata(item: ItemLocation, body: bytes) -> Metadata:
    """The ``/metadata`` answer; raises ListingRefused when unreadable or empty."""
    try:
        metadata = Metadata.from_json(item.identifier, body)
    except BadInput as exc:
        message = f"cannot read the file list of {item.identifier!r}: {exc}"
        raise ListingRefused("bad_metadata", message) from exc
    if metadata is None:
        raise ListingRefused(
            "unknown_item",
            f"unknown item {item.identifier!r}: archive.org has no such identifier "
            f"({item.metadata_url} is empty)",
        )
    return metadata


@dataclass(frozen=True)
class Chosen:
    """The files to take, and a warning to log first ("" for none)."""

    files: list[RemoteFile]
    warning: str = ""


def choose_listed(item: ItemLocation, metadata: Metadata, selection: Selection) -> Chosen:
    """The files ``/metadata`` lists that ``selection`` takes; raises ListingRefused."""
    if metadata.collection:
        raise ListingRefused(
            "collection",
            f"{item.identifier!r} is a collection, not an item: ravelscraper mirrors the "
            "files of one item; give the details page of an item in it "
            f"(-a url={item.origin}/details/<item>)",
        )
    chosen = selection.choose(metadata.files)
    restricted = RestrictedFiles.of(item.identifier, metadata, selection)
    if restricted and not chosen:
        raise ListingRefused("access_restricted", restricted.refusal())
    if not chosen:
        raise ListingRefused(
            "no_matching_files",
            f"item {item.identifier!r} has no {selection.describe()} files; "
            f"its formats are: {', '.join(metadata.formats) or 'none'}",
        )
    return Chosen(chosen, restricted.warning() if restricted else "")


def linked_names(response: Response, item: ItemLocation) -> list[str]:
    """The file names a details page links; raises BadInput when the page can't be read."""
    content_type = response.headers.get(b"Content-Type", b"").decode("latin-1")
    if not isinstance(response, TextResponse) or "html" not in content_type.lower():
        raise BadInput(
            f"details page {item.details_url} is not HTML ({content_type[:80]!r}): ignored"
        )
    try:
        return page_file_names(response.text, item)
    except BadInput as exc:
        raise BadInput(f"details page {item.details_url}: {exc}") from exc


def choose_linked(item: ItemLocation, names: list[str], selection: Selection) -> list[RemoteFile]:
    """The files a details page links that ``selection`` takes (names only, no checksums);
    raises ListingRefused."""
    if not names:
        raise ListingRefused(
            "metadata_failed",
            f"cannot list the files of {item.identifier!r}: {item.metadata_url} is "
            "unavailable and the details page links no files",
        )
    files = [RemoteFile(name=n) for n in names if selection.matches_name(n)]
    if selection.is_default:
        files = Selection().choose(files)
    if not files:
        raise ListingRefused(
            "no_matching_files",
            f"the details page of {item.identifier!r} links no {selection.describe()} files",
        )
    return files


@dataclass(frozen=True)
class RestrictedFiles:
    """Access-restricted (private) files the selection would take: never requested, and
    said once, as a warning or, when nothing public is taken, as the crawl's end."""

    identifier: str
    selection: str  # as Selection.describe() says it
    count: int
    public_formats: tuple[str, ...]
    public_samples: bool  # a public 30-second sample exists

    @classmethod
    def of(
        cls, identifier: str, metadata: Metadata, selection: Selection
    ) -> RestrictedFiles | None:
        restricted = selection.restricted(metadata.files)
        if not restricted:
            return None
        return cls(
            identifier=identifier,
            selection=selection.describe(),
            count=len(restricted),
            public_formats=tuple(metadata.formats),
            public_samples=any(f.is_sample and not f.private for f in metadata.files),
        )

    @property
    def files(self) -> str:
        return f"{self.count} file{'s' if self.count != 1 else ''}"

    @property
    def hint(self) -> str:
        return SAMPLES_HINT if self.public_samples else ""

    def refusal(self) -> str:
        """Nothing public is taken: why the crawl ends."""
        formats = ", ".join(self.public_formats) or "none"
        return (
            f"the recordings of {self.identifier!r} are access-restricted ({self.files}, "
            f"{self.selection})" + (self.hint or f"; its public formats are: {formats}")
        )

    def warning(self) -> str:
        """Some are taken: the ones skipped."""
        verb = "are" if self.count != 1 else "is"
        return (
            f"{self.files} of {self.identifier!r} ({self.selection}) "
            f"{verb} access-restricted and skipped{self.hint}"
        )
