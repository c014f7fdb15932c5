"""The local store: never a half-written file under its real name."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy.pipelines.media import MediaPipeline

from ravelscraper.archive.names import UnsafeName
from ravelscraper.pipelines.records import (
    XATTR,
    FileRecord,
    quick_match,
    read_record,
    write_record,
)
from ravelscraper.stores.base import PARTIAL_PREFIX, PARTIAL_SUFFIX, StoreProblem
from ravelscraper.stores.parts import (
    PartPlace,
    UnsafePartPlace,
    open_folder,
    part_committed,
    part_place,
    parts_root,
)
from ravelscraper.stores.parts import remove_old_parts as remove_parts_older_than

logger = logging.getLogger("ravelscraper.stores")


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may run)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Item folders whose resolution filesystem_path remembers (the latest items': memory flat).
FOLDERS_KEPT = 64

# Stored files get the permissions open() would give them (0644 under umask 022).
FILE_MODE = 0o666 & ~current_umask()


def check_readable(basedir: str) -> None:
    """Raises StoreProblem unless the local store's folder is missing or readable; writes
    nothing (the dry run's start-up check)."""
    try:
        found = os.stat(basedir)
    except FileNotFoundError:
        logger.info(f"FILES_STORE {basedir!r} does not exist: it would be created")
        return
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise StoreProblem(f"FILES_STORE {basedir!r} is not readable: {why}") from None
    if not stat.S_ISDIR(found.st_mode):
        raise StoreProblem(f"FILES_STORE {basedir!r} is not a folder")
    if not os.access(basedir, os.R_OK | os.X_OK):
        raise StoreProblem(f"FILES_STORE {basedir!r} is not readable: permission denied")


def stamp(fd: int, mtime: int | None) -> None:
    """Give the open file ``fd`` archive.org's ``mtime`` (epoch seconds; its access time too,
    as rclone does); None leaves the download time. A filesystem that refuses leaves it too."""
    if mtime is not None:
        with contextlib.suppress(OSError):
            os.utime(fd, ns=(mtime * 10**9, mtime * 10**9))


def fd_record(fd: int) -> FileRecord | None:
    """The verification record on the open file ``fd``, or None."""
    try:
        return FileRecord.parse(os.getxattr(fd, XATTR))
    except OSError:
        return None


def still_vouches(record: FileRecord, found: os.stat_result) -> bool:
    """Whether ``record`` was made for the file as ``found`` (its size and mtime)."""
    return record.size == found.st_size and record.mtime_ns == found.st_mtime_ns


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class AtomicFSFilesStore:
    """The local store (Scrapy's ``FilesStoreProtocol``): each file is written to a temporary
    file and renamed into place.

    A crawl killed mid-write leaves at most a ``.ravel-*.part`` file, never a truncated
    file under the real name. The folder is created by :meth:`ensure_writable` when the
    crawl opens, so that an unwritable store is reported before anything is downloaded.
    Nothing is read or written outside the folder (:meth:`filesystem_path`).

    Each verified file gets its verification record (``ravelscraper.pipelines.records``) before its
    rename, unless ``keep_records`` is off (a dry run, or a filesystem without extended
    attributes); with ``quick`` on, :meth:`stat_file` trusts a file its record vouches for.
    """

    blocking = True
    streams_parts = True
    checksums = frozenset({"md5", "sha1"})
    keeps_records = True
    restamps = True
    keeps_item_records = False  # its item records are files: pipelines.records

    def __init__(self, basedir: str | os.PathLike[str]):
        basedir = str(basedir)
        self.basedir = basedir.split("://", 1)[1] if "://" in basedir else basedir
        self.quick = True  # RAVEL_RECHECK=quick
        self.keep_records = True
        self.root: tuple[str, Path] | None = None  # (basedir, resolved): filesystem_path
        self.folders_inside: set[str] = set()  # folders of the latest items, found inside

    def ensure_writable(self) -> None:
        """Create the store and write a probe file there; raises OSError if that fails."""
        root = Path(self.basedir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-"):
            pass

    def check(self, write: bool = True) -> None:
        """The start-up check: raises StoreProblem if the folder can't be written. Without
        ``write`` (a dry run), nothing is written: an existing folder must be readable, and
        a missing one is said to be created by a run that downloads."""
        if not write:
            check_readable(self.basedir)
            return
        try:
            self.ensure_writable()
        except OSError as exc:
            raise StoreProblem(
                f"FILES_STORE {self.basedir!r} is not writable: {exc.strerror or exc}"
            ) from None

    def stat_file(
        self,
        path: str | os.PathLike[str],
        info: MediaPipeline.SpiderInfo,
        algorithm: str = "md5",
        expected: str | None = None,
        size: int | None = None,
    ) -> dict:
        """The stored file's checksum (``algorithm``), mtime and size; {} if no regular file
        is there. ``quick`` is True when its record vouched for it (``expected`` and ``size``
        are what archive.org lists now), False when it was read and hashed; a hash equal to
        ``expected`` (re)records it, so an older store becomes quick after one run."""
        target = self.filesystem_path(path)
        try:
            found = target.stat()
        except OSError:
            return {}
        if not stat.S_ISREG(found.st_mode):
            return {}  # a directory in the way: storing the file will fail with the reason
        if self.quick and quick_match(read_record(target), found, algorithm, expected, size):
            assert expected is not None
            return {
                "last_modified": found.st_mtime,
                "checksum": expected.lower(),
                "size": found.st_size,
                "quick": True,
            }
        with target.open("rb") as stored:
            before = os.fstat(stored.fileno())
            checksum = hashlib.file_digest(stored, algorithm).hexdigest()
            matches = checksum == expected and size in (None, before.st_size)
            if matches and self.keep_records:
                write_record(stored.fileno(), algorithm, checksum, before)
        return {
            "last_modified": before.st_mtime,
            "checksum": checksum,
            "size": before.st_size,
            "quick": False,
        }

    def lacks(self, path: str) -> bool:
        """True when nothing at all is at ``path`` (one ``lstat``, cheap enough for the
        reactor thread): a new file, with no stored copy to check in a thread first."""
        return not os.path.lexists(os.path.join(self.resolved_root(), path))

    def persist_file(
        self,
        path: str | os.PathLike[str],
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        record: tuple[str, str] | None = None,
        mtime: int | None = None,
    ) -> None:
        """Store ``buf`` at ``path``; ``record`` is (algorithm, digest) of a verified body,
        ``mtime`` archive.org's (set before the record, which holds it)."""
        target = self.filesystem_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(
            dir=target.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX
        )
        try:
            os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
            with os.fdopen(fd, "wb") as out:
                out.write(buf.getvalue())  # no copy: getbuffer() would copy a shared buffer
                out.flush()
                stamp(out.fileno(), mtime)
                self.record(out.fileno(), record)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def record(self, fd: int, record: tuple[str, str] | None) -> None:
        """Give the complete file ``fd`` its verification record (if it has one to get)."""
        if record is not None and self.keep_records:
            write_record(fd, *record)

    def commit_part(
        self,
        fd: int,
        part: str | os.PathLike[str] | None,
        path: str | os.PathLike[str],
        *,
        record: tuple[str, str] | None = None,
        mtime: int | None = None,
    ) -> None:
        """Move a complete part file, made in the target's folder, into place.

        ``part`` is its name, or None for an unnamed (``O_TMPFILE``) file open as ``fd``:
        that one is linked under a temporary name (copied if linking fails), then renamed.
        ``record`` (algorithm, digest of a verified body) is set on the file before its
        rename: the name and the record appear together. ``mtime`` (archive.org's) is set
        before the record, so that the record holds it and a re-run's quick check trusts it.
        """
        target = self.filesystem_path(path)
        stamp(fd, mtime)
        if part is not None and Path(part).is_relative_to(parts_root(self.basedir)):
            self.commit_named_part(fd, Path(part), target, record)
            return
        if part is not None:
            if Path(part).parent != target.parent:
                raise UnsafeName(f"{str(part)!r} is not in the folder of {str(path)!r}")
            self.record(fd, record)
            os.replace(part, target)
            return
        name = f"{PARTIAL_PREFIX}{secrets.token_hex(8)}{PARTIAL_SUFFIX}"
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                self.record(fd, record)
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder, follow_symlinks=True)
            except OSError:  # no /proc, or a filesystem that refuses: copy it
                keep = record if self.keep_records else None
                self.copy_part(fd, target.parent / name, keep, mtime)
            try:
                os.replace(name, target.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)
                raise
        finally:
            os.close(folder)

    @staticmethod
    def copy_part(
        fd: int,
        partial: Path,
        record: tuple[str, str] | None = None,
        mtime: int | None = None,
    ) -> None:
        """Copy the open file ``fd`` to the new file ``partial`` (deleted if that fails);
        ``mtime``, then ``record`` (algorithm, digest), are set on the copy once complete."""
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            offset = 0
            while chunk := os.pread(fd, 1 << 20, offset):
                write_all(out, chunk)
                offset += len(chunk)
            stamp(out, mtime)
            if record is not None:
                write_record(out, *record)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            os.close(out)

    def set_mtime(self, path: str | os.PathLike[str], mtime: int) -> bool:
        """Give the stored file at ``path``, just found up to date, archive.org's ``mtime``
        if its own differs (as rclone does); a record that vouched for it is written again
        with the new mtime, so the next run's quick check still trusts it. True if changed."""
        target = self.filesystem_path(path)
        wanted = mtime * 10**9
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or before.st_mtime_ns == wanted:
                return False
            vouched = fd_record(fd)
            os.utime(fd, ns=(wanted, wanted))
            if vouched is not None and self.keep_records and still_vouches(vouched, before):
                write_record(fd, vouched.algorithm, vouched.digest)
            return True
        finally:
            os.close(fd)

    def part_place(self, identifier: str, name: str, listing: dict[str, Any]) -> PartPlace | None:
        """Where the named part of ``<identifier>/<name>`` waits between runs (``parts``)."""
        return part_place(self.basedir, identifier, name, **listing)

    def commit_named_part(
        self, fd: int, part: Path, target: Path, record: tuple[str, str] | None
    ) -> None:
        """Rename a part of ``.ravel/parts`` into place, its folders opened without following
        a symbolic link (UnsafeName for one), each side by its folder (no long paths); then
        its sidecar and the part folders left empty are deleted (``parts.part_committed``)."""
        folders = list(part.relative_to(self.basedir).parts[:-1])
        try:
            source = open_folder(Path(self.basedir), folders, create=False)
        except UnsafePartPlace as exc:
            raise UnsafeName(f"{str(part)!r}: {exc.strerror}") from None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # the part streamed elsewhere
            destination = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self.record(fd, record)
                os.replace(part.name, target.name, src_dir_fd=source, dst_dir_fd=destination)
            finally:
                os.close(destination)
            part_committed(source, Path(self.basedir), folders, part.name)
        finally:
            os.close(source)

    def remove_old_parts(self, max_age_days: float) -> None:
        """Delete the named parts untouched for ``max_age_days`` (no listing claimed them)."""
        try:
            removed = remove_parts_older_than(self.basedir, max_age_days)
        except UnsafePartPlace as exc:
            logger.warning(f"leftover parts not cleaned: {exc}")
            return
        except OSError as exc:
            logger.warning(f"leftover parts not cleaned: {exc.strerror or exc}")
            return
        if removed:
            logger.info(f"removed {removed} leftover part files older than {max_age_days:g} days")

    def filesystem_path(self, path: str | os.PathLike[str]) -> Path:
        """Where ``path`` (``<identifier>/<name>``) is stored; UnsafeName if that is outside
        the store (a symbolic link out of it).

        Resolving every component costs a system call each, three times per file: the
        store's root and the folders of the latest items found inside it are remembered
        (``FOLDERS_KEPT``), so that a file in a known folder costs one ``lstat`` (a name that
        is a symbolic link is resolved in full)."""
        root = self.resolved_root()
        parts = str(path).split("/")
        target = Path(root, *parts)
        folder = "/".join(parts[:-1])
        plain = all(part not in ("", ".", "..") for part in parts)
        if plain and folder in self.folders_inside and not os.path.islink(target):
            return target
        if not target.resolve().is_relative_to(root):
            raise UnsafeName(f"{path!r} resolves outside the store")
        if plain and target.parent.resolve().is_relative_to(root):
            if len(self.folders_inside) >= FOLDERS_KEPT:
                self.folders_inside.clear()
            self.folders_inside.add(folder)
        return target

    def resolved_root(self) -> Path:
        """The store's folder, resolved once (again if ``basedir`` changes)."""
        if self.root is None or self.root[0] != self.basedir:
            self.root = (self.basedir, Path(self.basedir).resolve())
            self.folders_inside.clear()
        return self.root[1]

    def folder_of(self, path: str) -> Path | None:
        """The folder ``path`` will be stored in (where its part file streams to), or None
        when its path is refused (storing it then fails with the reason)."""
        try:
            return self.filesystem_path(path).parent
        except (UnsafeName, OSError):
            return None
