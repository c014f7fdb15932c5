"""The fake archive.org's items: pure data, usable in-process without a server.

File contents are deterministic: a 1 MiB pseudo-random block (seed 0) read, wrapping, from an
offset derived from the identifier and name, so any byte range of any file, however large,
is generated at memory speed without being stored.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from typing import Any

BLOCK_SIZE = 1 << 20
_BLOCK = random.Random(0).randbytes(BLOCK_SIZE)
# Twice the block, so that any slice of up to BLOCK_SIZE bytes is contiguous (no copy).
_DOUBLE = memoryview(_BLOCK + _BLOCK)

AUDIO_FORMATS = frozenset(
    {"VBR MP3", "64Kbps MP3", "128Kbps MP3", "Ogg Vorbis", "Flac", "WAVE", "MP3 Sample"}
)
MP3_FORMATS = ("VBR MP3", "64Kbps MP3", "128Kbps MP3", "MP3 Sample")
DEFAULT_STORAGE_DIR = 28


# --- bytes -------------------------------------------------------------------------------


def _offset(identifier: str, name: str) -> int:
    key = f"{identifier}\0{name}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % BLOCK_SIZE


def _size_of(identifier: str, name: str, size: int | None) -> int:
    if size is not None:
        return size
    entry = _require(identifier, name)
    return entry.size


def _require(identifier: str, name: str) -> FileEntry:
    item = get_item(identifier)
    entry = item.file(name) if item else None
    if entry is None:
        raise KeyError(f"no file {name!r} in item {identifier!r} (pass size= for other items)")
    return entry


def iter_file_chunks(
    identifier: str,
    name: str,
    start: int = 0,
    end: int | None = None,
    chunk: int = 65536,
    size: int | None = None,
) -> Iterator[memoryview]:
    """Yield bytes ``start`` to ``end`` (exclusive; default: the file size) in chunks.

    ``size`` is the file's size; by default it is looked up in the default catalogue.
    Chunks are read-only views of a shared buffer: copy them (``bytes()``) to keep them.
    """
    stop = _size_of(identifier, name, size) if end is None else end
    chunk = max(1, min(chunk, BLOCK_SIZE))
    base = _offset(identifier, name)
    position = start
    while position < stop:
        length = min(chunk, stop - position)
        at = (base + position) % BLOCK_SIZE
        yield _DOUBLE[at : at + length]
        position += length


def file_bytes(identifier: str, name: str, size: int | None = None) -> bytes:
    """The whole content of a file (for small files; stream big ones)."""
    return b"".join(iter_file_chunks(identifier, name, chunk=BLOCK_SIZE, size=size))


@dataclass(frozen=True)
class Checksums:
    md5: str
    crc32: str
    sha1: str


@lru_cache(maxsize=16384)
def _checksums(identifier: str, name: str, size: int) -> Checksums:
    md5, sha1, crc = hashlib.md5(), hashlib.sha1(), 0
    for part in iter_file_chunks(identifier, name, chunk=BLOCK_SIZE, size=size):
        md5.update(part)
        sha1.update(part)
        crc = zlib.crc32(part, crc)
    return Checksums(md5.hexdigest(), f"{crc:08x}", sha1.hexdigest())


def checksums_of(identifier: str, name: str, size: int | None = None) -> Checksums:
    """md5, crc32 and sha1 of a file's bytes, computed once (cached)."""
    return _checksums(identifier, name, _size_of(identifier, name, size))


def sha1_of(identifier: str, name: str, size: int | None = None) -> str:
    """Hex sha1 of a file's bytes (cached)."""
    return checksums_of(identifier, name, size).sha1


def md5_of(identifier: str, name: str, size: int | None = None) -> str:
    """Hex md5 of a file's bytes (cached)."""
    return checksums_of(identifier, name, size).md5


# --- model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file of an item, as /metadata lists it (``tags`` are extra string fields)."""

    name: str
    format: str
    size: int
    source: str = "original"
    original: str = ""
    mtime: int = 1300000000
    private: bool = False
    # archive.org lists <id>_files.xml with name/source/format and an md5 that can never
    # match its bytes (no size, no other checksum).
    bare: bool = False
    # An md5 listed that does not match the bytes served (a file rewritten after listing).
    stale_md5: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    # A rewritten file (the fake's ``revisions`` knobs): revision N serves other bytes.
    revision: int = 0

    @property
    def content_key(self) -> str:
        """What its bytes derive from: the name, and the revision once rewritten."""
        return self.name if not self.revision else f"{self.name}\0r{self.revision}"

    @property
    def is_audio(self) -> bool:
        return self.format in AUDIO_FORMATS

    def length_seconds(self) -> float | None:
        """The ``length`` tag in seconds ("351.4" or "04:26" styles)."""
        value = self.tags.get("length", "")
        if not value:
            return None
        seconds = 0.0
        for part in value.split(":"):
            seconds = seconds * 60 + float(part)
        return seconds


@dataclass(frozen=True)
class Item:
    """An archive.org item: top-level metadata and files."""

    identifier: str
    metadata: Mapping[str, Any]
    files: tuple[FileEntry, ...]
    dir_number: int = DEFAULT_STORAGE_DIR
    created: int = 1700000000
    uniq: int = 1234567890
    reviews: tuple[Mapping[str, str], ...] = ()

    def file(self, name: str) -> FileEntry | None:
        return self._by_name().get(name)

    def _by_name(self) -> dict[str, FileEntry]:
        cached = self.__dict__.get("_names")
        if cached is None:
            cached = {f.name: f for f in self.files}
            object.__setattr__(self, "_names", cached)
        return cached

    @property
    def dir(self) -> str:
        return f"/{self.dir_number}/items/{self.identifier}"

    @property
    def item_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def last_updated(self) -> int:
        return max((f.mtime for f in self.files), default=self.created)

    def with_audio_size(self, size: int) -> Item:
        """This item with every audio file resized to ``size`` bytes."""
        files = tuple(replace(f, size=size) if f.is_audio else f for f in self.files)
        return replace(self, files=files)


# --- item builders -----------------------------------------------------------------------


def _dir_number(identifier: str) -> int:
    return 1 + zlib.crc32(identifier.encode()) % 40


def _metadata_files(identifier: str, mtime: int, rng: random.Random) -> list[FileEntry]:
    return [
        FileEntry(
            f"{identifier}_meta.xml", "Metadata", rng.randint(1500, 4000), "metadata", mtime=mtime
        ),
        FileEntry(
            f"{identifier}_files.xml", "Metadata", rng.randint(3000, 9000), bare=True, mtime=mtime
        ),
    ]


def _mmss(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _mp3_derivatives(
    original: FileEntry, rng: random.Random, *, full: bool = True
) -> list[FileEntry]:
    """What archive.org derives from an uploaded mp3."""
    stem = original.name.rsplit(".", 1)[0]
    length = original.length_seconds() or 0.0
    common = {k: v for k, v in original.tags.items() if k in ("title", "creator", "album", "track")}
    mtime = original.mtime + 3600 + rng.randint(0, 600)
    out = [
        FileEntry(
            f"{stem}_64kb.mp3",
            "64Kbps MP3",
            original.size // 2 + rng.randint(0, 999),
            "derivative",
            original.name,
            mtime,
            tags={**common, "length": _mmss(length), "height": "0", "width": "0"},
        )
    ]
    if full:
        out += [
            FileEntry(
                f"{stem}.ogg",
                "Ogg Vorbis",
                original.size * 7 // 10 + rng.randint(0, 999),
                "derivative",
                original.name,
                mtime + 60,
                tags={"length": f"{length:.2f}", "height": "0", "width": "0"},
            ),
            FileEntry(
                f"{stem}.png",
                "PNG",
                rng.randint(6000, 11000),
                "derivative",
                original.name,
                mtime + 90,
            ),
            FileEntry(
                f"{stem}_spectrogram.png",
                "Spectrogram",
                rng.randint(40000, 60000),
                "derivative",
                original.name,
                mtime + 120,
            ),
        ]
    return out


RAVEL_ID = "ThePianoMusicOfMauriceRavel"
_RAVEL_TRACKS = (
    # name, title, seconds, size
    (
        "01PavanePourUneInfanteDfuntePourPianoMr19.mp3",
        "Pavane pour une infante défunte",
        400.09,
        200107,
    ),
    ("02JeuxDeauPourPianoMr30.mp3", "Jeux d'eau", 317.81, 158911),
    ("03SonatinePourPianoMr40-Modr.mp3", "Sonatine: I. Modéré", 261.15, 130573),
    ("04MouvementDeMenuet.mp3", "Sonatine: II. Mouvement de menuet", 182.46, 91229),
    ("05Anim.mp3", "Sonatine: III. Animé", 255.62, 127811),
)


def _ravel() -> Item:
    rng = random.Random(RAVEL_ID)
    files: list[FileEntry] = []
    for track, (name, title, seconds, size) in enumerate(_RAVEL_TRACKS, 1):
        original = FileEntry(
            name,
            "VBR MP3",
            size,
            mtime=1301046000 + track * 37,
            tags={
                "title": title,
                "track": str(track),
                "album": "The Piano Music of Maurice Ravel",
                "creator": "Maurice Ravel",
                "length": f"{seconds:.2f}",
                "bitrate": "128",
                "height": "0",
                "width": "0",
            },
        )
        files += [original, *_mp3_derivatives(original, rng)]
    first = _RAVEL_TRACKS[0][0]
    files += [
        FileEntry("__ia_thumb.jpg", "Item Tile", 9871, mtime=1537853412, tags={"rotation": "0"}),
        FileEntry(
            f"{RAVEL_ID}_archive.torrent", "Archive BitTorrent", 9312, "metadata", mtime=1537853420
        ),
        FileEntry(
            first.replace(".mp3", ".afpk"),
            "Columbia Peaks",
            21504,
            "derivative",
            first,
            1430214776,
            private=True,
        ),
        *_metadata_files(RAVEL_ID, 1537853418, rng),
    ]
    return Item(
        RAVEL_ID,
        {
            "identifier": RAVEL_ID,
            "mediatype": "audio",
            "collection": ["opensource_audio", "community"],
            "creator": "Maurice Ravel",
            "title": "The Piano Music of Maurice Ravel",
            "description": "Public-domain recordings of piano music by Maurice Ravel "
            "(1875&ndash;1937): Pavane pour une infante d&eacute;funte, Jeux d'eau, Sonatine.",
            "subject": ["Ravel", "piano", "classical", "impressionism"],
            "date": "1905",
            "licenseurl": "http://creativecommons.org/publicdomain/mark/1.0/",
            "publicdate": "2011-03-25 09:40:00",
            "addeddate": "2011-03-25 09:38:20",
            "uploader": "uploader@example.org",
            "language": "fre",
            "curation": "[curator]validator@archive.org[/curator][date]20110325094000[/date]",
        },
        tuple(files),
        dir_number=DEFAULT_STORAGE_DIR,
        created=1700000000,
        uniq=1700001234,
    )


AWKWARD_NAMES = (
    "01 Pavane pour une infante défunte.mp3",
    "Ondine (Gaspard de la nuit) é.mp3",
    "Menuet #2.mp3",
    "100% Ravel.mp3",
    "Ravel + Debussy.mp3",
    "Jeux d'eau & Miroirs?.mp3",
    "disc 2/07 Le Gibet.mp3",
    "08 Scarbo.MP3",
)


def _simple_item(
    identifier: str,
    names: tuple[str, ...],
    title: str,
    *,
    size: int = 48000,
    derivatives: bool = False,
) -> Item:
    """An item of VBR MP3 originals (optionally with their _64kb.mp3 derivatives)."""
    rng = random.Random(identifier)
    files: list[FileEntry] = []
    for track, name in enumerate(names, 1):
        original = FileEntry(
            name,
            "VBR MP3",
            size + rng.randint(0, 4096),
            mtime=1600000000 + track * 11,
            tags={
                "track": str(track),
                "length": f"{120 + track * 7.31:.2f}",
                "creator": "Maurice Ravel",
            },
        )
        files.append(original)
        if derivatives:
            files += _mp3_derivatives(original, rng, full=False)
    files += _metadata_files(identifier, 1600009000, rng)
    return Item(
        identifier,
        {
            "identifier": identifier,
            "mediatype": "audio",
            "collection": ["opensource_audio"],
            "title": title,
            "creator": "Maurice Ravel",
            "publicdate": "2020-09-13 12:26:40",
        },
        tuple(files),
        dir_number=_dir_number(identifier),
    )


# Names that try to leave a download folder. Links encode those with a "." or ".." segment
# (or an empty one) with quote(name, safe="") because clients remove dot segments from
# paths; the others are linked as quote(name) — see render.url_name.
HOSTILE_NAMES = (
    "../../escape.mp3",
    "/etc/evil.mp3",
    "sub/../../up.mp3",
    "back\\slash.mp3",
    "nul\x00byte.mp3",
    "long-" + "x" * 291 + ".mp3",
    "Case.mp3",
    "case.mp3",
    "safe.mp3",
)


def _no_mp3() -> Item:
    identifier = "no-mp3"
    rng = random.Random(identifier)
    files: list[FileEntry] = []
    for track in range(1, 4):
        flac = FileEntry(
            f"track{track:02d}.flac",
            "Flac",
            rng.randint(150000, 250000),
            mtime=1500000000 + track,
            tags={
                "title": f"Track {track}",
                "track": f"{track}/3",
                "length": f"{200 + track * 13.7:.2f}",
            },
        )
        ogg = FileEntry(
            f"track{track:02d}.ogg",
            "Ogg Vorbis",
            flac.size // 3,
            "derivative",
            flac.name,
            flac.mtime + 3600,
            tags={"length": f"{200 + track * 13.7:.2f}"},
        )
        files += [flac, ogg]
    files += _metadata_files(identifier, 1500009000, rng)
    meta = {
        "identifier": identifier,
        "mediatype": "audio",
        "title": "Lossless only",
        "creator": "Nobody",
    }
    return Item(identifier, meta, tuple(files), dir_number=_dir_number(identifier))


def synthetic_item(
    identifier: str, count: int, size: int = 65536, format: str = "VBR MP3", ext: str = ".mp3"
) -> Item:
    """``count`` originals ``track0001.mp3``… of ``size`` bytes each (plus _meta/_files.xml)."""
    width = max(2, len(str(count)))
    files = [
        FileEntry(
            f"track{n:0{width}d}{ext}",
            format,
            size,
            mtime=1650000000 + n,
            tags={"track": str(n), "title": f"Track {n}", "length": f"{60 + n % 300}.00"},
        )
        for n in range(1, count + 1)
    ]
    files += _metadata_files(identifier, 1650009999, random.Random(identifier))
    return Item(
        identifier,
        {
            "identifier": identifier,
            "mediatype": "audio",
            "title": f"Synthetic {identifier}",
            "creator": "Fake",
        },
        tuple(files),
        dir_number=_dir_number(identifier),
    )


# --- the gd1977-like item (an etree show: flac originals, derivatives of every kind) -----

GD_ID = "gd1977-like"
_GD_SETS = (
    (
        "Tuning",
        "Boléro",
        "Pavane pour une infante défunte",
        "Jeux d'eau",
        "Une barque sur l'océan",
        "Alborada del gracioso",
        "La vallée des cloches",
        "Oiseaux tristes",
        "Noctuelles",
    ),
    ("Prélude", "Forlane", "Rigaudon", "Menuet", "Toccata", "Fugue"),
    ("Ondine", "Le Gibet", "Scarbo", "Modéré", "Mouvement de menuet", "Animé", "Crowd"),
)


def _derived(
    original: str,
    rng: random.Random,
    name: str,
    fmt: str,
    size: int,
    *,
    private: bool = False,
    **tags: str,
) -> FileEntry:
    mtime = 1430212000 + rng.randint(0, 3000)
    return FileEntry(name, fmt, size, "derivative", original, mtime, private, tags=tags)


def _gd_like() -> Item:
    rng = random.Random(GD_ID)
    prefix = "rv28-03-08"
    album = "1928-03-08 - Salle Gaveau"
    creator = "Ravel Ensemble"
    files: list[FileEntry] = []
    flacs: list[FileEntry] = []
    for disc, titles in enumerate(_GD_SETS, 1):
        for number, title in enumerate(titles, 1):
            stem = f"{prefix}d{disc}t{number:02d}"
            seconds = round(rng.uniform(200, 900), 2)
            track = f"{number:02d}" if disc < 3 else f"{number}/{len(titles)}"
            flac = FileEntry(
                f"{stem}.flac",
                "Flac",
                rng.randint(150000, 290000),
                mtime=1235459500 + len(flacs) * 17,
                private=True,
                tags={
                    "title": title,
                    "creator": creator,
                    "album": album,
                    "track": track,
                    "length": f"{seconds:.2f}",
                    "height": "0",
                    "width": "0",
                    "external-identifier": f"urn:acoustid:{rng.randbytes(16).hex()}",
                },
            )
            flacs.append(flac)

            derived = partial(_derived, flac.name, rng)
            files += [
                flac,
                derived(f"{stem}.afpk", "Columbia Peaks", rng.randint(40000, 250000), private=True),
                derived(
                    f"{stem}.mp3",
                    "VBR MP3",
                    flac.size * 2 // 7,
                    creator=creator,
                    title=title,
                    track=track,
                    album=album,
                    bitrate=str(rng.randint(160, 240)),
                    length=_mmss(seconds),
                    height="0",
                    width="0",
                ),
                derived(
                    f"{stem}.ogg",
                    "Ogg Vorbis",
                    flac.size // 7,
                    length=f"{seconds + 0.01:.2f}",
                    height="0",
                    width="0",
                ),
                derived(f"{stem}.png", "PNG", rng.randint(6000, 11000)),
                derived(
                    f"{stem}_spectrogram.png",
                    "Spectrogram",
                    rng.randint(40000, 60000),
                    private=True,
                ),
                derived(f"{stem}_esslow.json.gz", "Essentia Low GZ", rng.randint(20000, 30000)),
            ]
            esshigh = derived(
                f"{stem}_esshigh.json.gz", "Essentia High GZ", rng.randint(1500, 2500)
            )
            files.append(replace(esshigh, original=f"{stem}_esslow.json.gz"))
    md5s = "\r\n".join(f"{md5_of(GD_ID, f.name, f.size)} *{f.name}" for f in flacs)
    shnid = "97596"
    files += [
        FileEntry("__ia_thumb.jpg", "Item Tile", 16461, mtime=1537853412, tags={"rotation": "0"}),
        FileEntry(f"rv1928-03-08.{shnid}.ffp", "Flac FingerPrint", 1187, mtime=1235459448),
        FileEntry(f"rv1928-03-08.{shnid}.md5", "Checksums", 1209, mtime=1235459448),
        FileEntry(f"rv1928-03-08.{shnid}.txt", "Text", 3917, mtime=1235459449),
        FileEntry(
            f"{GD_ID}_archive.torrent", "Archive BitTorrent", 12, mtime=1343417015, private=True
        ),
        FileEntry(f"{GD_ID}_files.xml", "Metadata", 40960, bare=True, mtime=1587669416),
        FileEntry(f"{GD_ID}_meta.xml", "Metadata", 4246, "metadata", mtime=1587669416),
        FileEntry(f"{GD_ID}_reviews.xml", "Metadata", 23870, "metadata", mtime=1587669414),
    ]
    for side in ("back", "front"):
        jpeg = FileEntry(
            f"rv280308_{side}.jpg",
            "JPEG",
            rng.randint(400000, 700000),
            mtime=1235460399,
            tags={"rotation": "0"},
        )
        thumb = FileEntry(
            f"rv280308_{side}_thumb.jpg",
            "JPEG Thumb",
            rng.randint(5000, 8000),
            "derivative",
            jpeg.name,
            1430212935,
        )
        files += [jpeg, thumb]
    runtime = sum(f.length_seconds() or 0 for f in flacs)
    setlist = "\n\n".join(
        f"Set {disc}\n\n" + "\n".join(f"{t}  " for t in titles)
        for disc, titles in enumerate(_GD_SETS, 1)
    )
    metadata = {
        "identifier": GD_ID,
        "title": "Ravel Ensemble Live at Salle Gaveau on 1928-03-08",
        "creator": creator,
        "mediatype": "etree",
        "collection": ["RavelEnsemble", "etree", "stream_only"],
        "type": "sound",
        "description": setlist,
        "date": "1928-03-08",
        "year": "1928",
        "subject": "Matrix;Soundboard;Fake Taper",
        "publicdate": "2009-02-24 14:57:02",
        "addeddate": "2009-02-24 07:02:43",
        "uploader": "uploader@example.org",
        "venue": "Salle Gaveau",
        "coverage": "Paris, France",
        "source": "Matrix mix (SBD/AUD)",
        "transferer": "Fake Taper",
        "runtime": f"{int(runtime // 60)}:{runtime % 60:05.2f}",
        "md5s": md5s,
        "notes": "*Matrix*\n\nSBD -&gt; Master Reel -&gt; Dat -&gt; CD",
        "updatedate": "2009-02-24 14:58:00",
        "updater": "Fake Updater",
        "backup_location": "ia903602_29",
        "access-restricted-item": "true",
    }
    review = {
        "reviewbody": "Great balance and clarity. The Boléro builds beautifully.",
        "reviewtitle": "Fantastic sound",
        "reviewer": "listener",
        "reviewdate": "2009-03-01 18:22:10",
        "createdate": "2009-03-01 18:22:10",
        "stars": "5",
    }
    return Item(
        GD_ID,
        metadata,
        tuple(files),
        dir_number=8,
        created=1611803141,
        uniq=1398592390,
        reviews=(review,),
    )


# --- items shaped like real ones (issue 9): restricted, collections, 78rpm, regenerated ---
# Shapes follow public /metadata answers (the internetarchive client's test data, the
# Internet Archive's UI stories); names, sizes and values are our own.

SAMPLES_ID = "samples-only-cd"
MIXED_ID = "mixed-access"
COLLECTION_ID = "ravel-collection"
REGENERATED_ID = "regenerated-metadata"
RPM78_ID = "rpm78-like"
FLAC_VBR_ID = "flac-vbr-64kb"
_CD_TITLES = ("Pavane", "Jeux d'eau", "Ondine; Le Gibet", "Scarbo")


def _cd_track(
    identifier: str, rng: random.Random, number: int, title: str, *, private: bool
) -> list[FileEntry]:
    """A CD rip's track: a Flac original and its derivatives; restricted, the recordings are
    private and only a 30-second ``MP3 Sample`` is public."""
    stem = f"disc1/{number:02d}. Maurice Ravel; Orchestre Fictif - {title}"
    seconds = round(rng.uniform(150, 400), 2)
    tags = {"title": title, "track": str(number), "album": "Ravel: Piano Works (CD)"}
    flac = FileEntry(
        f"{stem}.flac",
        "Flac",
        rng.randint(60000, 90000),
        mtime=1507872000 + number * 40,
        private=private,
        tags={**tags, "artist": "Maurice Ravel; Orchestre Fictif", "length": f"{seconds}"},
    )
    derived = partial(_derived, flac.name, rng)
    files = [
        flac,
        derived(f"{stem}.afpk", "Columbia Peaks", rng.randint(200, 9000)),
        derived(
            f"{stem}.mp3",
            "VBR MP3",
            flac.size // 3,
            private=private,
            creator="Maurice Ravel; Orchestre Fictif",
            length=_mmss(seconds),
            **tags,
        ),
        derived(f"{stem}.png", "PNG", rng.randint(3000, 12000)),
        derived(f"{stem}_spectrogram.png", "Spectrogram", rng.randint(20000, 40000)),
    ]
    if private:
        files.append(
            derived(
                f"{stem}_sample.mp3",
                "MP3 Sample",
                rng.randint(5000, 8000),
                creator="Maurice Ravel; Orchestre Fictif",
                length="00:30",
                **tags,
            )
        )
    else:
        files.append(derived(f"{stem}_64kb.mp3", "64Kbps MP3", flac.size // 6, **tags))
    return files


def _cd_item(identifier: str, restricted: tuple[bool, ...], collections: list[str]) -> Item:
    rng = random.Random(identifier)
    files: list[FileEntry] = []
    for number, (title, private) in enumerate(zip(_CD_TITLES, restricted, strict=True), 1):
        files += _cd_track(identifier, rng, number, title, private=private)
    files += [
        FileEntry("__ia_thumb.jpg", "Item Tile", 25439, mtime=1535192348),
        FileEntry(f"{identifier}_itemimage.png", "Item Image", 70982, mtime=1507872318),
        FileEntry(
            f"{identifier}_images.zip", "Generic Raw Book Zip", 12830, private=True, mtime=1507872
        ),
        *_metadata_files(identifier, 1580289938, rng),
    ]
    metadata = {
        "identifier": identifier,
        "mediatype": "audio",
        "collection": collections,
        "creator": ["Maurice Ravel", "Orchestre Fictif"],
        "title": "Ravel: Piano Works (CD)",
        "source": "CD",
        "date": "1994",
        "publicdate": "2017-10-13 05:22:22",
    }
    if all(restricted):
        metadata["access-restricted-item"] = "true"
    return Item(identifier, metadata, tuple(files), dir_number=_dir_number(identifier))


def _collection() -> Item:
    identifier = COLLECTION_ID
    rng = random.Random(identifier)
    files = [
        FileEntry(f"{identifier}_logo.jpg", "Collection Header", 38366, mtime=1236194645),
        FileEntry(f"{identifier}_reviews.xml", "Metadata", 168, "metadata", mtime=1221069786),
        *_metadata_files(identifier, 1423450255, rng),
    ]
    metadata = {
        "identifier": identifier,
        "title": "Ravel recordings",
        "mediatype": "collection",
        "collection": "audio_music",
        "publicdate": "2008-09-10 18:05:14",
    }
    return Item(identifier, metadata, tuple(files), dir_number=_dir_number(identifier))


def _regenerated() -> Item:
    """An item whose _files.xml/_meta.xml/_reviews.xml md5s do not match their bytes."""
    item = _simple_item(REGENERATED_ID, ("01 Pavane.mp3", "02 Ondine.mp3"), "Regenerated")
    meta = next(f for f in item.files if f.name.endswith("_meta.xml"))
    reviews = FileEntry(
        f"{REGENERATED_ID}_reviews.xml", "Metadata", 2370, "metadata", stale_md5=True
    )
    files = [f for f in item.files if f is not meta]
    return replace(item, files=(*files, replace(meta, stale_md5=True), reviews))


def _rpm78() -> Item:
    """A 78rpm side: a WAVE original, VBR MP3 and Flac derivatives."""
    identifier = RPM78_ID
    rng = random.Random(identifier)
    stem = "Gramophone 1234A - Bolero, Part 1 - 3.0 CT 400N-12.7 EQ"
    wave = FileEntry(
        f"{stem}.wav",
        "WAVE",
        160000,
        mtime=1627527993,
        tags={
            "length": "158.01",
            "track": "1",
            "title": "Bolero, Part 1",
            "album": "Gramophone 1234A",
            "artist": "Orchestre Fictif",
        },
    )
    derived = partial(_derived, wave.name, rng)
    scan = FileEntry("Gramophone 1234A - Bolero.jpg", "JPEG", 206538, mtime=1627528022)
    files = [
        wave,
        derived(f"{stem}.afpk", "Columbia Peaks", 3045),
        derived(f"{stem}.flac", "Flac", 88000, length="158.01", height="0", width="0"),
        derived(
            f"{stem}.mp3",
            "VBR MP3",
            24732,
            creator="Orchestre Fictif",
            title="Bolero, Part 1",
            track="1",
            album="Gramophone 1234A",
            bitrate="119",
            length="158.04",
            height="621",
            width="640",
        ),
        derived(f"{stem}.png", "PNG", 4081),
        derived(f"{stem}_spectrogram.png", "Spectrogram", 27333),
        scan,
        FileEntry(
            "Gramophone 1234A - Bolero_thumb.jpg", "JPEG Thumb", 8891, "derivative", scan.name
        ),
        FileEntry("__ia_thumb.jpg", "Item Tile", 11394, mtime=1627529920),
        FileEntry(f"{identifier}_archive.torrent", "Archive BitTorrent", 5708, "metadata"),
        FileEntry(f"{identifier}_meta.sqlite", "Metadata", 28672, mtime=1627528044),
        *_metadata_files(identifier, 1627529918, rng),
    ]
    metadata = {
        "identifier": identifier,
        "mediatype": "audio",
        "creator": "Orchestre Fictif",
        "title": "Bolero, Part 1",
        "subject": "78rpm;Ravel",
        "collection": ["78rpm", "audio_music"],
        "date": "1930",
        "publicdate": "2021-07-27 22:16:17",
    }
    return Item(identifier, metadata, tuple(files), dir_number=_dir_number(identifier))


def _flac_vbr_64kb() -> Item:
    """An audio item: Flac originals with VBR MP3, 64Kbps MP3 and Ogg derivatives."""
    identifier = FLAC_VBR_ID
    rng = random.Random(identifier)
    files: list[FileEntry] = []
    for number, title in enumerate(("Alborada", "Noctuelles", "Oiseaux tristes"), 1):
        stem = f"ravel{number:02d}"
        seconds = round(rng.uniform(200, 500), 2)
        flac = FileEntry(
            f"{stem}.flac",
            "Flac",
            rng.randint(50000, 80000),
            mtime=1600000000 + number,
            tags={"title": title, "track": f"{number}/3", "length": f"{seconds}"},
        )
        derived = partial(_derived, flac.name, rng)
        files += [
            flac,
            derived(f"{stem}.mp3", "VBR MP3", flac.size // 3, title=title, length=_mmss(seconds)),
            derived(f"{stem}_64kb.mp3", "64Kbps MP3", flac.size // 8, length=_mmss(seconds)),
            derived(f"{stem}.ogg", "Ogg Vorbis", flac.size // 4, length=f"{seconds}"),
            derived(f"{stem}.png", "PNG", rng.randint(5000, 9000)),
        ]
    files += _metadata_files(identifier, 1600009000, rng)
    metadata = {
        "identifier": identifier,
        "mediatype": "audio",
        "collection": ["opensource_audio"],
        "creator": "Maurice Ravel",
        "title": "Miroirs (selection)",
    }
    return Item(identifier, metadata, tuple(files), dir_number=_dir_number(identifier))


def _build_default() -> dict[str, Item]:
    items = [
        _ravel(),
        _simple_item("awkward-names", AWKWARD_NAMES, "Awkward file names", derivatives=True),
        _simple_item("hostile-names", HOSTILE_NAMES, "Hostile file names", size=41000),
        _gd_like(),
        _no_mp3(),
        synthetic_item("bulk-40", 40, 65536),
        _cd_item(SAMPLES_ID, (True, True, True, True), ["acdc", "samples_only", "audio_music"]),
        _cd_item(MIXED_ID, (False, True, False, True), ["opensource_audio"]),
        _collection(),
        _regenerated(),
        _rpm78(),
        _flac_vbr_64kb(),
    ]
    return {item.identifier: item for item in items}


CATALOG: dict[str, Item] = _build_default()


def build_catalog(config: Mapping[str, Any] | None = None) -> dict[str, Item]:
    """The catalogue as a server with this config serves it (``items`` and ``sizes`` knobs)."""
    config = config or {}
    items = dict(CATALOG)
    for identifier, spec in (config.get("items") or {}).items():
        items[identifier] = synthetic_item(
            identifier,
            int(spec["count"]),
            int(spec.get("size", 65536)),
            str(spec.get("format", "VBR MP3")),
            str(spec.get("ext", ".mp3")),
        )
    for identifier, size in (config.get("sizes") or {}).items():
        if identifier in items:
            items[identifier] = items[identifier].with_audio_size(int(size))
    return items


def get_item(identifier: str, config: Mapping[str, Any] | None = None) -> Item | None:
    """An item of the default catalogue, or of the catalogue ``config`` makes."""
    if not config:
        return CATALOG.get(identifier)
    return build_catalog(config).get(identifier)
