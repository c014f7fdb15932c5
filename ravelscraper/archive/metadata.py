"""What archive.org serves, read without the network: URLs, /metadata and the details page.

Owns the shapes of archive.org's answers (``Metadata``, ``RemoteFile``, ``ItemLocation``),
the user's file selection (``Selection``: formats and globs) and the input errors a user can
fix (``BadInput``). Which files a crawl takes from an answer is ``ravelscraper.spiders.choice``'s.
Whether a listed name can be stored is ``ravelscraper.archive.names``'s to say.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from urllib.parse import SplitResult, quote, unquote, urlsplit

from parsel import Selector

from ravelscraper.archive.names import shown

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
        try:
            path = urlsplit(url).path
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return None
        prefix = f"/download/{self.identifier}/"
        if not path.startswith(prefix) or path == prefix:
            return None
        name = unquote(path[len(prefix) :])
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return None
        return name


def http_url(url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. a port that is not a number
        valid = False
    if not valid:
        raise BadInput(f"not an http(s) URL: {url!r}")
    if "@" in parts.netloc:  # never sent on: archive.org items need no login
        raise BadInput("a URL with a user name or password is not supported: leave them out")
    return parts


def check_identifier(identifier: str) -> str:
    if not IDENTIFIER.fullmatch(identifier):
        raise BadInput(f"not an archive.org identifier: {identifier!r}")
    return identifier


# Files archive.org rewrites after listing them: their listed md5 may not match what is served.
REGENERATED_SUFFIXES = ("_files.xml", "_meta.xml", "_reviews.xml")
SAMPLE_FORMAT = "mp3 sample"  # the 30-second excerpt of an access-restricted recording
MD5 = re.compile(r"[0-9a-fA-F]{32}")
SHA1 = re.compile(r"[0-9a-fA-F]{40}")
SIZE = re.compile(r"[0-9]{1,19}")  # ASCII digits only: "²".isdigit() is True, int("²") fails
MTIME = re.compile(r"[0-9]{1,12}")  # ASCII digits, as for SIZE
MAX_MTIME = 253402300799  # 9999-12-31T23:59:59Z
MAX_TEXT = 1024  # longest title, album... kept (the fleet's records allow 4096)
MAX_NAME_LINKS = 10_000  # links taken from one details page


def text(value: object, limit: int = MAX_TEXT) -> str:
    """A remote string field as safe text: "" for a non-string, lone surrogates replaced."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    value = str(value)[:limit]
    return value.encode("utf-8", "replace").decode("utf-8")


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
    sha1: str | None = None  # listed for every file but <id>_files.xml; verified first
    mtime: int | None = None  # archive.org's modification time, epoch seconds
    private: bool = False
    # archive.org rewrites it (<id>_files.xml, _meta.xml, _reviews.xml): md5 may not match.
    regenerated: bool = False
    # Why the file can't be fetched as listed (malformed md5, duplicates that disagree).
    error: str = ""
    # Listed values that were ignored, one warning each (e.g. a size that is not a number).
    notes: tuple[str, ...] = ()

    @classmethod
    def from_metadata(cls, entry: object, identifier: str = "") -> RemoteFile:
        """One ``/metadata`` file entry; raises BadInput for an entry that must be skipped.

        A malformed ``size`` or ``mtime`` is ignored (noted: the checksum still verifies the
        file; the file keeps its download time); a
        malformed ``md5`` or ``sha1`` sets ``error`` (the file fails rather than being stored
        unchecked).
        """
        if not isinstance(entry, dict):
            raise BadInput(f"a file entry is not an object: {str(entry)[:80]!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise BadInput(f"a file entry has no 'name': {str(entry)[:80]!r}")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(f"the name {name[:300]!r} is not valid Unicode") from None
        if len(name) > 4096:
            raise BadInput(f"the name {name[:80]!r}... is {len(name)} characters long")
        notes: list[str] = []
        size = parse_size(entry.get("size"))
        if size is None and entry.get("size") not in (None, ""):
            notes.append(f"{name!r}: ignored its size {text(entry['size'], 40)!r} (not a number)")
        mtime = parse_mtime(entry.get("mtime"))
        if mtime is None and entry.get("mtime") not in (None, ""):
            notes.append(
                f"{name!r}: ignored its mtime {text(entry['mtime'], 40)!r} (not a time in seconds)"
            )
        md5, md5_error = parse_digest(entry.get("md5"), MD5, "md5")
        sha1, sha1_error = parse_digest(entry.get("sha1"), SHA1, "sha1")
        error = md5_error or sha1_error
        regenerated = is_regenerated(name, identifier)
        if regenerated and name.endswith("_files.xml"):
            # It lists its own checksum, which can never match its bytes.
            md5 = sha1 = None
            error = ""
        return cls(
            name=name,
            format=text(entry.get("format")),
            source=text(entry.get("source")),
            original=text(entry.get("original"), 4096),
            title=text(entry.get("title")),
            track=text(entry.get("track")),
            album=text(entry.get("album")),
            creator=text(entry.get("creator") or entry.get("artist")),
            length=parse_length(entry.get("length")),
            size=size,
            md5=md5,
            sha1=sha1,
            mtime=mtime,
            private=text(entry.get("private")).lower() == "true" or entry.get("private") is True,
            regenerated=regenerated,
            error=error,
            notes=tuple(notes),
        )

    @property
    def recording(self) -> str:
        """The original a file derives from: files of one recording share it."""
        return self.original or self.name

    @property
    def is_sample(self) -> bool:
        return self.format.casefold() == SAMPLE_FORMAT


def parse_digest(value: object, shape: re.Pattern[str], kind: str) -> tuple[str | None, str]:
    """(lower-case hex digest or None, "" or why the listed value is malformed)."""
    if isinstance(value, str) and shape.fullmatch(value):
        return value.lower(), ""
    if value in (None, ""):
        return None, ""
    return None, f"archive.org lists a malformed {kind} for it: {text(value, 80)!r}"


def is_regenerated(name: str, identifier: str = "") -> bool:
    if identifier:
        return name in {identifier + suffix for suffix in REGENERATED_SUFFIXES}
    return "/" not in name and name.endswith(REGENERATED_SUFFIXES)


def parse_size(value: object) -> int | None:
    """Bytes from archive.org's ``"6666752"`` (or a JSON integer); None if malformed."""
    if isinstance(value, str) and SIZE.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 2**63 else None  # 19 digits can still overflow Redis
    return None


def parse_mtime(value: object) -> int | None:
    """Epoch seconds from archive.org's ``"1430212164"`` (or a JSON integer); None if
    malformed or outside what a filesystem can hold (before 1970, after 9999)."""
    if isinstance(value, str) and MTIME.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= MAX_MTIME else None
    return None


def parse_length(value: object) -> float | None:
    """Seconds from archive.org's ``"351.4"`` or ``"04:26"`` (or ``"1:02:03"``).

    None for anything else, including negative, infinite or NaN values.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
        return None
    try:
        seconds = 0.0
        for part in str(value)[:40].split(":"):
            seconds = seconds * 60 + float(part)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class Metadata:
    """The parts of a ``/metadata/<identifier>`` answer this project uses."""

    identifier: str
    title: str
    creator: str
    files: tuple[RemoteFile, ...]
    mediatype: str = ""
    is_collection: bool = False
    # The item's folder on its storage nodes (``/15/items/<id>``), "" if absent or odd: a
    # /download 302 that leads there lets the item's next files skip the 302 (storage.py).
    dir: str = ""
    # One line per entry skipped or value ignored, for the spider to log as warnings.
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, identifier: str, body: str | bytes) -> Metadata | None:
        """The item's metadata, or None for an unknown item (archive.org answers ``{}``).

        Raises BadInput when the answer can't be read (not JSON, not the expected shape).
        Bad file entries are skipped, with a warning each; they never sink the item.
        """
        data = load_json(body, "/metadata")
        if not isinstance(data, dict):
            raise BadInput(f"/metadata is not a JSON object but {type(data).__name__}")
        if not data or ("files" not in data and "metadata" not in data):
            return None
        entries = data.get("files", [])
        meta = data.get("metadata", {})
        if not isinstance(entries, list):
            raise BadInput(f'"files" is {type(entries).__name__}, not a list')
        if not isinstance(meta, dict):
            raise BadInput(f'"metadata" is {type(meta).__name__}, not an object')
        warnings: list[str] = []
        files: dict[str, RemoteFile] = {}
        for entry in entries:
            try:
                file = RemoteFile.from_metadata(entry, identifier)
            except BadInput as exc:
                warnings.append(f"skipped a file entry of /metadata: {exc}")
                continue
            warnings.extend(file.notes)
            if file.name in files:
                file = merge_duplicates(files[file.name], file)
            files[file.name] = file
        return cls(
            identifier=identifier,
            title=first_string(meta.get("title")),
            creator=first_string(meta.get("creator")),
            files=tuple(files.values()),
            mediatype=first_string(meta.get("mediatype")).casefold(),
            is_collection=data.get("is_collection") is True,
            dir=storage_dir(data.get("dir")),
            warnings=tuple(warnings),
        )

    @property
    def formats(self) -> list[str]:
        """The public formats, escaped for a log line."""
        return sorted({shown(f.format) for f in self.files if f.format and not f.private})

    @property
    def collection(self) -> bool:
        return self.is_collection or self.mediatype == "collection"


def merge_duplicates(first: RemoteFile, again: RemoteFile) -> RemoteFile:
    """One file for a name listed twice; if the listings disagree, it fails with both."""
    if first.md5 and again.md5 and first.md5 != again.md5:
        reason = f"listed twice with different md5s: {first.md5} and {again.md5}"
    elif first.sha1 and again.sha1 and first.sha1 != again.sha1:
        reason = f"listed twice with different sha1s: {first.sha1} and {again.sha1}"
    elif first.size is not None and again.size is not None and first.size != again.size:
        reason = f"listed twice with different sizes: {first.size} and {again.size} bytes"
    else:
        return replace(
            first,
            md5=first.md5 or again.md5,
            sha1=first.sha1 or again.sha1,
            size=first.size if first.size is not None else again.size,
            mtime=first.mtime if first.mtime is not None else again.mtime,
            error=first.error or again.error,
        )
    return replace(first, error=first.error or reason)


def load_json(body: str | bytes, what: str) -> object:
    """JSON from the remote side; BadInput for anything that is not (deep nesting included)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise BadInput(f"{what} is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise BadInput(f"{what} is not JSON ({text(str(exc), 120)!r})") from None


STORAGE_DIR = re.compile(r"(/[A-Za-z0-9._-]+)+")  # archive.org's: /<n>/items/<identifier>
MAX_DIR = 512


def storage_dir(value: object) -> str:
    """/metadata's ``dir``, or "" unless it is a plain absolute path (no ``.`` or ``..``)."""
    if not isinstance(value, str) or len(value) > MAX_DIR or not STORAGE_DIR.fullmatch(value):
        return ""
    if any(part in (".", "..") for part in value.split("/")):
        return ""
    return value


def first_string(value: object) -> str:
    """archive.org gives a string or a list of strings for repeatable fields."""
    if isinstance(value, list):
        return text(value[0]) if value else ""
    return text(value)


@dataclass(frozen=True)
class Selection:
    """Which files of an item to fetch: by archive.org format and/or file-name globs, then
    leaving out the names that match an exclusion (case-insensitive globs too)."""

    formats: tuple[str, ...] = ()
    globs: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    @classmethod
    def from_args(
        cls, formats: str | None, glob: str | None, exclude: str | None = None
    ) -> Selection:
        return cls(split_list(formats), split_list(glob), split_list(exclude))

    @property
    def is_default(self) -> bool:
        return not self.formats and not self.globs

    def describe(self) -> str:
        """The selection in words: also what item records compare (a new exclusion is a new
        selection)."""
        if self.is_default:
            chosen = "mp3 (one per recording)"
        else:
            parts = [f"formats {', '.join(self.formats)}" if self.formats else ""]
            parts.append(f"names {', '.join(self.globs)}" if self.globs else "")
            chosen = " and ".join(p for p in parts if p)
        return f"{chosen} except {', '.join(self.excludes)}" if self.excludes else chosen

    def choose(self, files: Iterable[RemoteFile]) -> list[RemoteFile]:
        """The files to fetch: never a private one."""
        return self.wanted([f for f in files if not f.private])

    def restricted(self, files: Iterable[RemoteFile]) -> list[RemoteFile]:
        """Private files this selection would take if they were public (one per recording
        for the default selection), leaving out recordings it takes a public file of."""
        files = list(files)
        public = {f.recording for f in self.choose(files)}
        return [f for f in self.wanted(files) if f.private and f.recording not in public]

    def wanted(self, files: list[RemoteFile]) -> list[RemoteFile]:
        if self.is_default:
            return [f for f in one_mp3_per_recording(files) if not self.excluded(f.name)]
        formats = {f.casefold() for f in self.formats}
        return [
            f
            for f in files
            if (not formats or f.format.casefold() in formats) and self.matches_name(f.name)
        ]

    def matches_name(self, name: str) -> bool:
        """Whether ``name`` matches a glob (any name, without globs) and no exclusion."""
        folded = name.casefold()
        chosen = not self.globs or any(fnmatchcase(folded, g.casefold()) for g in self.globs)
        return chosen and not self.excluded(name)

    def excluded(self, name: str) -> bool:
        """Whether ``name`` matches one of the exclusions (case-insensitive)."""
        folded = name.casefold()
        return any(fnmatchcase(folded, e.casefold()) for e in self.excludes)


def split_list(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def is_mp3(name: str) -> bool:
    return name.casefold().endswith(".mp3")


def is_low_bitrate(file: RemoteFile) -> bool:
    return file.format.casefold() == LOW_BITRATE_FORMAT or file.name.casefold().endswith(
        "_64kb.mp3"
    )


def one_mp3_per_recording(files: Iterable[RemoteFile]) -> list[RemoteFile]:
    """The best mp3 of each recording: VBR first, then originals; never the 64 kbps transcode
    nor the 30-second sample of an access-restricted recording.

    A recording is an original file and everything derived from it, so an mp3 original and
    an mp3 derived from a FLAC of the same track are never both taken.
    """
    best: dict[str, RemoteFile] = {}
    for file in files:
        if not is_mp3(file.name) or is_low_bitrate(file) or file.is_sample:
            continue
        recording = file.recording
        current = best.get(recording)
        if current is None or rank(file) < rank(current):
            best[recording] = file
    return list(best.values())


def rank(file: RemoteFile) -> tuple[bool, bool]:
    return (file.format.casefold() != "vbr mp3", file.source != "original")


def page_file_names(html: str, item: ItemLocation) -> list[str]:
    """File names the details page links: track microdata and the player's playlist.

    Raises BadInput if the page can't be read as HTML.
    """
    try:
        page = Selector(text=html, type="html")
        links = page.css('[itemprop="associatedMedia"]::attr(href)').getall()
        playlists = page.css("play-av::attr(playlist), input.js-play8-playlist::attr(value)")
        for playlist in playlists.getall():
            links.extend(playlist_sources(playlist))
        names = [item.name_from_url(link) for link in links[:MAX_NAME_LINKS]]
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadInput(f"the details page can't be read: {text(str(exc), 120)!r}") from None
    return list(dict.fromkeys(name for name in names if name))


def playlist_sources(raw: str) -> Iterator[str]:
    """The ``file`` of each source in a player playlist; malformed parts are left out."""
    try:
        entries = load_json(raw, "the playlist")
    except BadInput:
        return
    for entry in entries if isinstance(entries, list) else ():
        sources = entry.get("sources") if isinstance(entry, dict) else None
        for source in sources if isinstance(sources, list) else ():
            if isinstance(source, dict) and isinstance(source.get("file"), str):
                yield source["file"]
