"""What a crawl remembers of what it verified, so that a re-run need not read it again.

Owns two records. The file record is the local store's only (S3's check is already a HEAD of
the ETag; FTP's reads the file back); item records are kept on every store:

* **The file record**: an extended attribute ``user.ravel.verified`` on each stored file,
  ``v1 <algorithm> <hex digest> <size> <mtime_ns>``. It is set on the part file, through its
  open descriptor, after the body was verified and *before* the file gets its real name
  (:func:`write_record`), so a name never appears with a record that vouches for other bytes,
  and a crash leaves no name, or a name with its record. A re-run trusts a stored file
  without reading it (:func:`quick_match`, rsync's quick check) only when the record parses,
  its algorithm and digest are the ones archive.org lists now, and the file's size and mtime
  are still the recorded ones. Anything else is hashed again (and a match re-records it).
  A rewrite that also restores the mtime, or bit rot, is not seen: ``RAVEL_RECHECK=full``.
* **The item record**: ``<FILES_STORE>/.ravel/items/<identifier>.json`` (``.ravel`` can't be
  an item's folder: identifiers start with a letter or digit), written with a temporary file
  and a rename, so a crash leaves the old record or the new one. It says: every chosen file
  of this item was stored and verified in a crawl, with this search fingerprint and this
  selection, and which files (name, size, mtime) they were. An item with a file stored
  unverified is never recorded: where the store keeps file records, every file must carry
  On S3 and FTP (stores whose ``keeps_item_records`` is true) the record is an object under
  the store's prefix, ``.ravel/items/<identifier>.json``, written by the store, and each file
  is named with its size and what the store's listing says of it besides (S3: its ETag, the
  md5 of a single-part upload; FTP: its ``MLSD`` modification time). ``unchanged`` then costs
  one read of the record and one listing of the item's folder (S3: ``ListObjectsV2``, 1,000
  objects a request): no file is downloaded, and no ``/metadata`` asked.
  one that matches its size and mtime (whichever node of a fleet says the item is done).
  :meth:`ItemRecords.unchanged` trusts it only while each of those files is still there
  with that size and mtime.

Every node of a fleet sharing one store writes and reads the same records: a file's record
is written by the node that stored it; an item's, whole, by a node that saw all its files
verified (two nodes writing one item's record write the same thing; the last rename wins).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from scrapy.settings import BaseSettings

from ravelscraper.folders import open_below
from ravelscraper.logtags import ITEM_NOT_RECORDED

logger = logging.getLogger(__name__)

XATTR = "user.ravel.verified"
RECORD_VERSION = "v1"
ITEM_RECORDS = (".ravel", "items")  # under the store's folder
ITEM_RECORD_VERSION = 1
MAX_ITEM_RECORD = 8 * 1024 * 1024  # bytes; a record names an item's files (~100 bytes each)
RECHECK_MODES = ("quick", "full")
DIGEST_LENGTHS = {"md5": 32, "sha1": 40}
NO_XATTR_MESSAGE = (
    "FILES_STORE keeps no extended attributes: the stored files of the items listed are "
    "re-hashed on every run"
)


@dataclass(frozen=True)
class FileRecord:
    """What was verified of a stored file: its digest (of ``algorithm``), size and mtime."""

    algorithm: str
    digest: str
    size: int
    mtime_ns: int

    def encode(self) -> bytes:
        fields = (RECORD_VERSION, self.algorithm, self.digest, self.size, self.mtime_ns)
        return " ".join(str(field) for field in fields).encode("ascii")

    @classmethod
    def parse(cls, raw: bytes) -> Self | None:
        """The record in ``raw``, or None unless it is exactly one this version writes."""
        try:
            version, algorithm, digest, size, mtime_ns = raw.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return None
        if version != RECORD_VERSION or DIGEST_LENGTHS.get(algorithm) != len(digest):
            return None
        if not all(c in "0123456789abcdef" for c in digest):
            return None
        if not all(n.isdigit() and str(int(n)) == n for n in (size, mtime_ns)):
            return None
        return cls(algorithm, digest, int(size), int(mtime_ns))


def local_root(files_store: str) -> Path | None:
    """The local store's folder for ``FILES_STORE``, or None for S3, FTP and the like."""
    if "://" not in files_store:
        return Path(files_store)
    scheme, _, rest = files_store.partition("://")
    return Path(rest) if scheme.lower() == "file" and rest else None


def write_record(
    fd: int, algorithm: str, digest: str, before: os.stat_result | None = None
) -> bool:
    """Record, on the open file ``fd`` (complete: no write follows), that it holds ``digest``.

    The size and mtime are the file's now; ``before`` is its stat when its digest was
    computed: if the file changed since, nothing is recorded. False when nothing was
    recorded, e.g. on a filesystem without extended attributes: the file is then hashed on
    the next run.
    """
    try:
        found = os.fstat(fd)
        if before is not None and (found.st_size, found.st_mtime_ns) != (
            before.st_size,
            before.st_mtime_ns,
        ):
            return False
        record = FileRecord(algorithm, digest, found.st_size, found.st_mtime_ns)
        os.setxattr(fd, XATTR, record.encode())
    except OSError:
        return False
    return True


def read_record(path: str | os.PathLike[str]) -> FileRecord | None:
    """The record on the file at ``path``, or None (none, unreadable, malformed)."""
    try:
        raw = os.getxattr(path, XATTR, follow_symlinks=False)
    except OSError:
        return None
    return FileRecord.parse(raw)


def quick_match(
    record: FileRecord | None,
    found: os.stat_result,
    algorithm: str,
    expected: str | None,
    listed_size: int | None,
) -> bool:
    """True when the file ``found`` (its stat) can be trusted without reading it: its record
    says it was verified as ``expected`` (listed now, with ``algorithm``), and its size
    (also the listed one, if any) and mtime are still the recorded ones."""
    return (
        record is not None
        and expected is not None
        and record.algorithm == algorithm
        and record.digest == expected.lower()
        and record.size == found.st_size
        and (listed_size is None or listed_size == found.st_size)
        and record.mtime_ns == found.st_mtime_ns
    )


def verified_as_is(record: FileRecord | None, found: os.stat_result) -> bool:
    """Whether a file (its stat) carries the record of a verification of its present bytes."""
    return (
        record is not None and record.size == found.st_size and record.mtime_ns == found.st_mtime_ns
    )


def xattrs_supported(directory: str | os.PathLike[str]) -> bool:
    """Whether files in ``directory`` (existing, writable) keep a ``user.`` extended attribute."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".xattr-probe-") as probe:
            os.setxattr(probe.fileno(), XATTR, b"probe")
            return os.getxattr(probe.fileno(), XATTR) == b"probe"
    except OSError:
        return False


class ItemRecords:
    """The item records of one local store (see the module's docstring); on any other store
    kind, or with ``RAVEL_RECHECK=full``, an item is never ``unchanged`` and nothing is
    recorded."""

    def __init__(
        self,
        root: Path | None,
        recheck: str,
        write: bool = True,
        *,
        store: Any = None,
        files_store: str = "",
        make_store: Callable[[str], Any] | None = None,
    ):
        self.root = root
        self.recheck = recheck
        self.write = write  # False in a dry run: nothing is written
        self.file_records: bool | None = None  # whether the store keeps them; probed once
        self.write_failed = False  # a record could not be written (said once)
        self.store = store  # a store that keeps item records itself (S3, FTP), or None
        self.files_store = files_store  # FILES_STORE, to make that store on first use
        self.make_store = make_store  # ravelscraper.stores.item_record_store, or None
        self.store_made = store is not None
        self.making = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: BaseSettings,
        store: Any = None,
        make_store: Callable[[str], Any] | None = None,
    ) -> ItemRecords:
        """Reads ``FILES_STORE``, ``RAVEL_RECHECK`` and ``RAVEL_DRY_RUN``; ``store``, the
        pipeline's, if the caller has it, else one is made on first use by ``make_store``
        (``ravelscraper.stores.item_record_store``: S3 and FTP keep item records)."""
        files_store = str(settings["FILES_STORE"] or "")
        root = local_root(files_store)
        write = not settings.getbool("RAVEL_DRY_RUN")
        keeping = store if store is not None and store.keeps_item_records else None
        return cls(
            root,
            str(settings["RAVEL_RECHECK"]),
            write,
            store=keeping,
            files_store=files_store,
            make_store=make_store,
        )

    def remote(self) -> Any:
        """The store that keeps the item records as objects (S3, FTP), or None: the local
        store (its records are files here), or a store that keeps none."""
        if self.root is not None:
            return None
        with self.making:  # records are written from threads: the store is made once
            if not self.store_made and self.make_store is not None:
                self.store = self.make_store(self.files_store)
            self.store_made = True
        return self.store

    @staticmethod
    def can_have_record(identifier: str) -> bool:
        return bool(identifier) and "/" not in identifier and identifier[0] != "."

    def path(self, identifier: str) -> Path | None:
        """Where ``identifier``'s record is, or None if it can have none."""
        if self.root is None or not self.can_have_record(identifier):
            return None
        return self.root.joinpath(*ITEM_RECORDS, f"{identifier}.json")

    def read(self, identifier: str) -> dict[str, Any] | None:
        """The item's record, or None: an unreadable record is no record (the item is listed
        again). Only a regular file of at most ``MAX_ITEM_RECORD`` bytes is read, never
        through a symbolic link, never blocking on a FIFO or a device."""
        path = self.path(identifier)
        if path is None:
            return None
        try:
            folder = self.records_folder(create=False)
        except OSError:
            return None
        try:
            record = json.loads(read_bounded(path.name, MAX_ITEM_RECORD, folder))
        except (OSError, ValueError, RecursionError, MemoryError):
            return None
        finally:
            os.close(folder)
        return record if isinstance(record, dict) else None

    def records_folder(self, create: bool) -> int:
        """A descriptor of ``<root>/.ravel/items`` (made if ``create``), reached without
        following any symbolic link below the store's folder, so that records are never
        read from, nor written to, outside the store; raises OSError."""
        assert self.root is not None
        root = self.root
        return open_below(
            root,
            ITEM_RECORDS,
            create,
            0o755,
            lambda code, index: OSError(
                code,
                f"{root.joinpath(*ITEM_RECORDS[: index + 1])} is a symbolic link or not a folder"
                " (refused)",
            ),
        )

    def unchanged(self, identifier: str, fingerprint: str, selection: str) -> bool:
        """True only if a record says this item was complete (every chosen file stored and
        verified) with this ``fingerprint`` and ``selection``, every file it names is still
        in the store with its recorded size and mtime, and ``RAVEL_RECHECK`` is not "full".
        False on any doubt (no record, unreadable, another store kind)."""
        if self.recheck != "quick" or not fingerprint:
            return False
        if self.root is None:
            return self.unchanged_remote(identifier, fingerprint, selection)
        record = self.read(identifier)
        files = vouched_files(record, identifier, fingerprint, selection)
        if files is None:
            return False
        folder = self.root / identifier
        for entry in files:
            try:
                name, size, mtime_ns = entry["name"], int(entry["size"]), int(entry["mtime_ns"])
                found = os.stat(folder.joinpath(*str(name).split("/")), follow_symlinks=False)
            except (OSError, KeyError, TypeError, ValueError):
                return False
            if found.st_size != size or found.st_mtime_ns != mtime_ns:
                return False
        return True

    def unchanged_remote(self, identifier: str, fingerprint: str, selection: str) -> bool:
        """:meth:`unchanged` on a store that keeps its item records (S3, FTP): the record,
        then one listing of the item's folder, whose size and tag (ETag, modification time)
        must be the recorded ones. False on any doubt, or any error of the store."""
        store = self.remote()
        if store is None or not self.can_have_record(identifier):
            return False
        try:
            raw = store.read_item_record(identifier)
            record = json.loads(raw) if raw is not None else None
            files = vouched_files(record, identifier, fingerprint, selection)
            if files is None:
                return False
            found = store.item_files(identifier)
        except Exception as exc:  # any doubt: list the item again
            logger.debug(f"item record of {identifier!r} not read: {type(exc).__name__}")
            return False
        for entry in files:
            try:
                name, size, tag = str(entry["name"]), int(entry["size"]), str(entry["tag"])
            except (KeyError, TypeError, ValueError):
                return False
            if found.get(name) != (size, tag):
                return False
        return True

    def complete_remote(
        self, store: Any, identifier: str, fingerprint: str, selection: str, files: list[str]
    ) -> None:
        """:meth:`complete` on a store that keeps its item records: each file's size and
        tag as the store lists them now."""
        found = store.item_files(identifier)
        stored: list[dict[str, Any]] = []
        for name in files:
            if name not in found:
                return  # gone already: no record
            size, tag = found[name]
            stored.append({"name": name, "size": size, "tag": tag})
        store.write_item_record(
            identifier, record_bytes(identifier, fingerprint, selection, stored)
        )

    def complete(
        self,
        identifier: str,
        fingerprint: str,
        selection: str,
        files: Iterable[str] | None = None,
    ) -> None:
        """Record that every chosen file of the item (``files``: their names, whose size and
        mtime are read now) ended verified in this crawl, with this fingerprint and
        selection. Never raises: a record that can't be written only costs a re-listing."""
        if not self.write or not fingerprint or not self.can_have_record(identifier):
            return
        store = self.remote()
        if store is not None:
            try:
                self.complete_remote(store, identifier, fingerprint, selection, sorted(files or ()))
            except Exception as exc:  # a record not written costs a listing
                why = " ".join(str(exc).split())[:200] or type(exc).__name__
                logger.warning(f"cannot record item {identifier!r} as complete: {why}")
            return
        path = self.path(identifier)
        if path is None:
            return
        assert self.root is not None
        if self.file_records is None:
            self.file_records = xattrs_supported(self.root)
        stored: list[dict[str, Any]] = []
        for name in sorted(files or ()):
            file = self.root / identifier / name
            try:
                found = os.stat(file, follow_symlinks=False)
            except OSError:
                return  # gone already: no record
            if self.file_records and not verified_as_is(read_record(file), found):
                # Stored without a checksum match (unverified), or changed since: whoever
                # reported it verified, the item is not complete, and is listed again.
                logger.info(f"{ITEM_NOT_RECORDED} {identifier}: {name!r} is not verified")
                return
            stored.append({"name": name, "size": found.st_size, "mtime_ns": found.st_mtime_ns})
        record = record_bytes(identifier, fingerprint, selection, stored)
        try:
            folder = self.records_folder(create=True)
            try:
                write_atomically(path.name, record, folder)
            finally:
                os.close(folder)
        except OSError as exc:
            if self.write_failed:  # said once: the next run lists these items again
                logger.debug(f"cannot record item {identifier!r} as complete: {exc}")
                return
            self.write_failed = True
            logger.warning(
                f"cannot record item {identifier!r} as complete: {exc}; items not recorded "
                "are listed again next run (further failures are not logged)"
            )


def record_bytes(
    identifier: str, fingerprint: str, selection: str, files: list[dict[str, Any]]
) -> bytes:
    """An item record: every chosen file (``files``) was stored and verified."""
    record = {
        "v": ITEM_RECORD_VERSION,
        "identifier": identifier,
        "fingerprint": fingerprint,
        "selection": selection,
        "complete": True,
        "files": files,
    }
    return json.dumps(record, sort_keys=True).encode()


def vouched_files(
    record: Any, identifier: str, fingerprint: str, selection: str
) -> list[Any] | None:
    """The files an item record names, if it is a complete record of ``identifier`` with
    this fingerprint and selection; None otherwise."""
    if not isinstance(record, dict) or record.get("v") != ITEM_RECORD_VERSION:
        return None
    if record.get("identifier") != identifier or record.get("complete") is not True:
        return None
    if record.get("fingerprint") != fingerprint or record.get("selection") != selection:
        return None
    files = record.get("files")
    return files if isinstance(files, list) else None


def read_bounded(name: str | Path, limit: int, dir_fd: int | None = None) -> bytes:
    """The bytes of the regular file ``name`` (in the folder ``dir_fd``, if given), never
    through a symbolic link; raises OSError for anything else, or for a file of more than
    ``limit`` bytes."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(f"{name} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomically(name: str, data: bytes, dir_fd: int) -> None:
    """Write ``data`` to ``name`` in the folder ``dir_fd`` through a temporary file and a
    rename (neither followed if a symbolic link)."""
    temporary = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        out = os.open(temporary, flags, 0o644, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise
