"""What archive.org serves, read without the network: URLs, /metadata and the details page."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import SplitResult, quote, unquote, urlsplit

from parsel import Selector

DEFAULT_IDENTIFIER = "ThePianoMusicOfMauriceRavel"
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# The low-bitrate transcode archive.org derives from every mp3: never what a user wants.
LOW_BITRATE_FORMAT = "64kbps mp3"


class BadInput(ValueError):
    """Input a user can fix: the message says how."""


@dataclass(frozen=True)
class ItemLocation:
    """An archive.org item on a given origin (archive.org itself, a mirror, a test server)."""

    origin: str
    identifier: str

    @classmethod
    def from_details_url(cls, url: str) -> ItemLocation:
        parts = http_url(url)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if len(segments) < 2 or segments[0] != "details":
            raise BadInput(
                f"not a details page (https://archive.org/details/<identifier>): {url!r}"
            )
        return cls(f"{parts.scheme}://{parts.netloc}", check_identifier(segments[1]))

    @classmethod
    def on(cls, origin: str, identifier: str) -> ItemLocation:
        parts = http_url(origin)
        return cls(f"{parts.scheme}://{parts.netloc}", check_identifier(identifier))

    @property
    def details_url(self) -> str:
        return f"{self.origin}/details/{self.identifier}"

    @property
    def metadata_url(self) -> str:
        return f"{self.origin}/metadata/{self.identifier}"

    def download_url(self, name: str) -> str:
        return f"{self.origin}/download/{self.identifier}/{quote(name)}"

    def name_from_url(self, url: str) -> str | None:
        """The file name in a ``/download/<identifier>/<name>`` link, or None."""
        path = urlsplit(url).path
        prefix = f"/download/{self.identifier}/"
        if not path.startswith(prefix) or path == prefix:
            return None
        return unquote(path[len(prefix) :])


def http_url(url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. a port that is not a number
        valid = False
    if not valid:
        raise BadInput(f"not an http(s) URL: {url!r}")
    return parts


def check_identifier(identifier: str) -> str:
    if not IDENTIFIER.fullmatch(identifier):
        raise BadInput(f"not an archive.org identifier: {identifier!r}")
    return identifier


@dataclass(frozen=True)
class RemoteFile:
    """One entry of an item's file list, with archive.org's strings turned into types."""

    name: str
    format: str = ""
    source: str = ""
    original: str = ""
    title: str = ""
    track: str = ""
    album: str = ""
    creator: str = ""
    length: float | None = None
    size: int | None = None
    md5: str | None = None
    private: bool = False

    @classmethod
    def from_metadata(cls, entry: dict) -> RemoteFile:
        return cls(
            name=str(entry["name"]),
            format=str(entry.get("format", "")),
            source=str(entry.get("source", "")),
            original=str(entry.get("original", "")),
            title=str(entry.get("title", "")),
            track=str(entry.get("track", "")),
            album=str(entry.get("album", "")),
            creator=str(entry.get("creator", "")),
            length=parse_length(entry.get("length")),
            size=int(entry["size"]) if str(entry.get("size", "")).isdigit() else None,
            md5=str(entry["md5"]).lower() if entry.get("md5") else None,
            private=str(entry.get("private", "")).lower() == "true",
        )


def parse_length(value: object) -> float | None:
    """Seconds from archive.org's ``"351.4"`` or ``"04:26"`` (or ``"1:02:03"``)."""
    if value in (None, ""):
        return None
    try:
        seconds = 0.0
        for part in str(value).split(":"):
            seconds = seconds * 60 + float(part)
    except ValueError:
        return None
    return seconds


@dataclass(frozen=True)
class Metadata:
    """The parts of a ``/metadata/<identifier>`` answer this project uses."""

    identifier: str
    title: str
    creator: str
    files: tuple[RemoteFile, ...]

    @classmethod
    def from_json(cls, identifier: str, body: str | bytes) -> Metadata | None:
        """The item's metadata, or None for an unknown item (archive.org answers ``{}``)."""
        data = json.loads(body)
        if not isinstance(data, dict) or not data.get("files"):
            return None
        meta = data.get("metadata") or {}
        return cls(
            identifier=identifier,
            title=first_string(meta.get("title")),
            creator=first_string(meta.get("creator")),
            files=tuple(RemoteFile.from_metadata(f) for f in data["files"] if "name" in f),
        )

    @property
    def formats(self) -> list[str]:
        return sorted({f.format for f in self.files if f.format and not f.private})


def first_string(value: object) -> str:
    """archive.org gives a string or a list of strings for repeatable fields."""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Selection:
    """Which files of an item to fetch: by archive.org format and/or file-name globs."""

    formats: tuple[str, ...] = ()
    globs: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, formats: str | None, glob: str | None) -> Selection:
        return cls(split_list(formats), split_list(glob))

    @property
    def is_default(self) -> bool:
        return not self.formats and not self.globs

    def describe(self) -> str:
        if self.is_default:
            return "mp3 (one per recording)"
        parts = [f"formats {', '.join(self.formats)}" if self.formats else ""]
        parts.append(f"names {', '.join(self.globs)}" if self.globs else "")
        return " and ".join(p for p in parts if p)

    def choose(self, files: Iterable[RemoteFile]) -> list[RemoteFile]:
        public = [f for f in files if not f.private]
        if self.is_default:
            return one_mp3_per_recording(public)
        formats = {f.casefold() for f in self.formats}
        return [
            f
            for f in public
            if (not formats or f.format.casefold() in formats) and self.matches_name(f.name)
        ]

    def matches_name(self, name: str) -> bool:
        folded = name.casefold()
        return not self.globs or any(fnmatchcase(folded, g.casefold()) for g in self.globs)


def split_list(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def is_mp3(name: str) -> bool:
    return name.casefold().endswith(".mp3")


def is_low_bitrate(file: RemoteFile) -> bool:
    return file.format.casefold() == LOW_BITRATE_FORMAT or file.name.casefold().endswith(
        "_64kb.mp3"
    )


def one_mp3_per_recording(files: Iterable[RemoteFile]) -> list[RemoteFile]:
    """The best mp3 of each recording: VBR first, then originals; never the 64 kbps transcode.

    A recording is an original file and everything derived from it, so an mp3 original and
    an mp3 derived from a FLAC of the same track are never both taken.
    """
    best: dict[str, RemoteFile] = {}
    for file in files:
        if not is_mp3(file.name) or is_low_bitrate(file):
            continue
        recording = file.original or file.name
        current = best.get(recording)
        if current is None or rank(file) < rank(current):
            best[recording] = file
    return list(best.values())


def rank(file: RemoteFile) -> tuple[bool, bool]:
    return (file.format.casefold() != "vbr mp3", file.source != "original")


def page_file_names(html: str, item: ItemLocation) -> list[str]:
    """File names the details page links: track microdata and the player's playlist."""
    page = Selector(text=html)
    links = page.css('[itemprop="associatedMedia"]::attr(href)').getall()
    for playlist in page.css("play-av::attr(playlist), input.js-play8-playlist::attr(value)"):
        links.extend(playlist_sources(playlist.get()))
    names = (item.name_from_url(link) for link in links)
    return list(dict.fromkeys(name for name in names if name))


def playlist_sources(raw: str) -> Iterator[str]:
    try:
        entries = json.loads(raw)
    except ValueError:
        return
    for entry in entries if isinstance(entries, list) else ():
        for source in entry.get("sources", ()) if isinstance(entry, dict) else ():
            if isinstance(source, dict) and isinstance(source.get("file"), str):
                yield source["file"]
