"""Named part files on the local store: where a cut-off download waits for the next run.

A file streamed to the local store is written to ``<FILES_STORE>/.ravel/parts/<identifier>/
<name>.part`` (never under its real name), next to a sidecar ``<name>.part.json`` that says
what the part was started for: the listed size, mtime and checksum, and the server's
validator (the ``ETag``, else the ``Last-Modified`` date) of the answer it holds. A crawl
killed at any moment (even SIGKILL) leaves both; the next run that lists the file resumes
the part (``Range`` from its size, ``If-Range`` its validator) when the sidecar still
matches the listing and the part is no longer than the listed size, and deletes it
otherwise (:func:`claim_part`). Parts no listing claims are deleted once untouched for
``RAVEL_PART_MAX_AGE`` days (:func:`remove_old_parts`).

Safety: ``.ravel`` and every folder below ``.ravel/parts`` are opened without following
symbolic links (``O_NOFOLLOW``): a symlinked ``.ravel`` or part folder is refused, and a
symlink found in place of a part or sidecar is never opened. An open part file holds an
exclusive ``flock``, so two processes sharing a store never write the same part.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ravelscraper.folders import open_below
from ravelscraper.logtags import RESUME

logger = logging.getLogger("ravelscraper.stores")

PARTS = (".ravel", "parts")  # under the store's folder
PART_SUFFIX = ".part"
SIDECAR_SUFFIX = ".part.json"
SIDECAR_VERSION = 1
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# A file listed smaller gets no named part (an unnamed one, as without a listing): fetching
# it whole again after a kill costs less than its part's and sidecar's ~20 system calls.
NAMED_PART_MIN_SIZE = 64 * 1024


class UnsafePartPlace(OSError):
    """A symbolic link (or something else than a folder) where a part folder should be."""


@dataclass(frozen=True)
class PartPlace:
    """Where one file's part lives (``root`` = the store's folder) and what it is for."""

    root: Path
    identifier: str
    name: str
    listing: dict[str, Any]  # listed size, mtime, md5, sha1: what the part is started for

    @property
    def folders(self) -> list[str]:
        """The folders from the store's root to the part file's folder."""
        return [*PARTS, self.identifier, *self.name.split("/")[:-1]]

    @property
    def part_name(self) -> str:
        return self.name.split("/")[-1] + PART_SUFFIX

    @property
    def sidecar_name(self) -> str:
        return self.name.split("/")[-1] + SIDECAR_SUFFIX

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.folders, self.part_name)

    def sidecar(self, validator: str) -> dict[str, Any]:
        return {
            "version": SIDECAR_VERSION,
            "identifier": self.identifier,
            "name": self.name,
            "listing": self.listing,
            "validator": validator,
        }


def part_place(
    root: str | os.PathLike[str], identifier: str, name: str, **listing: Any
) -> PartPlace | None:
    """The part place of a file, or None when it can't have one: a name with an odd
    component, or a listing without a size or checksum to check a part against."""
    components = [identifier, *name.split("/")]
    if any(c in ("", ".", "..") or "\0" in c for c in components):
        return None
    if listing.get("size") is None and not (listing.get("md5") or listing.get("sha1")):
        return None
    return PartPlace(Path(root), identifier, name, dict(listing))


def open_folder(root: Path, folders: list[str], create: bool) -> int:
    """An fd of ``root/folders...``, each component opened without following a symlink
    (created if ``create``); raises UnsafePartPlace for a symlink, OSError otherwise."""
    return open_below(
        root,
        folders,
        create,
        0o777,
        lambda code, index: UnsafePartPlace(
            code, f"{folders[index]!r} under the store is not a folder (a symlink?)"
        ),
    )


def lock(fd: int) -> bool:
    """Take the part's exclusive lock; False if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


# Held while a part folder is made and a part created in it, and while emptied part folders
# are removed: in one process, a finished part of an item never removes the folder another
# file of that item is being created in (that ENOENT stopped a 100,000-file crawl).
FOLDERS_LOCK = threading.Lock()
CREATE_ATTEMPTS = 10  # another process (a fleet node on the same store) may still race it


def create_part(place: PartPlace, validator: str, mode: int) -> int | None:
    """A new, empty, locked part file for ``place`` (its sidecar written first), or None
    when another process holds that part. Raises OSError (UnsafePartPlace for a symlink)."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return create_part_once(place, validator, mode)
        except FileNotFoundError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
    return None


def create_part_once(place: PartPlace, validator: str, mode: int) -> int | None:
    with FOLDERS_LOCK:  # a few system calls: the folder stays until the part is in it
        folder = open_folder(place.root, place.folders, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(place.part_name, flags, mode, dir_fd=folder)
            try:
                if not lock(fd):
                    os.close(fd)
                    return None
                os.ftruncate(fd, 0)
                os.fchmod(fd, mode)
                write_sidecar(folder, place, validator)
            except BaseException:
                os.close(fd)
                raise
            return fd
        finally:
            os.close(folder)


def write_sidecar(folder: int, place: PartPlace, validator: str) -> None:
    data = json.dumps(place.sidecar(validator), sort_keys=True).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(place.sidecar_name, flags, 0o600, dir_fd=folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def remove_place(place: PartPlace) -> None:
    """Delete the part and its sidecar, then the folders left empty below ``.ravel/parts``
    (never through a symlink); errors are ignored."""
    with contextlib.suppress(OSError):
        folder = open_folder(place.root, place.folders, create=False)
        try:
            for name in (place.part_name, place.sidecar_name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=folder)
        finally:
            os.close(folder)
    with FOLDERS_LOCK:
        remove_empty_part_folders(place.root, place.folders)


def part_committed(folder: int, root: Path, folders: list[str], part_name: str) -> None:
    """After the part ``part_name`` of ``folder`` (``root/folders...``) was renamed into
    place: its sidecar deleted, then the folders left empty (errors ignored). Done by the
    store where it renamed the part, so that nothing is left to delete on the reactor."""
    with contextlib.suppress(OSError):
        os.unlink(part_name[: -len(PART_SUFFIX)] + SIDECAR_SUFFIX, dir_fd=folder)
    with FOLDERS_LOCK:
        remove_empty_part_folders(root, folders)


def remove_empty_part_folders(root: Path, folders: list[str]) -> None:
    """``root/folders...`` and its parents below ``.ravel/parts``, deepest first, each only
    if empty."""
    while len(folders) > len(PARTS):
        *folders, name = folders
        try:
            parent = open_folder(root, folders, create=False)
        except OSError:
            return
        try:
            os.rmdir(name, dir_fd=parent)  # only if empty
        except OSError:
            return
        finally:
            os.close(parent)


def nothing_to_claim(place: PartPlace) -> bool:
    """True when neither the part of ``place`` nor its sidecar is there: the usual case, told
    by two ``lstat`` calls, cheap enough for the reactor thread (no thread to hand
    :func:`claim_part` to, whose own checks never follow a symbolic link)."""
    path = place.path
    return not os.path.lexists(path) and not os.path.lexists(path.with_name(place.sidecar_name))


@dataclass
class ClaimedPart:
    """A part left by an earlier attempt, checked against the listing and open for writing
    at its end: ``size`` bytes, ``digest`` the hash object over them."""

    fd: int
    path: Path
    size: int
    digest: Any  # a hashlib object
    validator: str


def claim_part(place: PartPlace, algorithm: str) -> ClaimedPart | None:
    """The part an earlier run left for ``place``, if it can be resumed; otherwise it is
    deleted (and None returned). Reads the part once to hash it (the digest can't be saved).

    Resumed only when the sidecar names this listing (size, mtime, checksums) and a
    validator, and the part is a regular file no longer than the listed size. A complete
    part loses its last byte, so that the resumed request asks for a range that exists.
    """
    try:
        folder = open_folder(place.root, place.folders, create=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning(f"cannot use the part folder of {place.name!r}: {exc}")
        return None
    try:
        why = None
        try:
            with open_nofollow(place.sidecar_name, folder, os.O_RDONLY) as sidecar_fd:
                sidecar = json.loads(os.read(sidecar_fd, 1 << 16) or b"null")
        except FileNotFoundError:
            sidecar = None
            why = "it has no sidecar"
        except (OSError, ValueError):
            sidecar = None
            why = "its sidecar is unreadable"
        if why is None:
            why = sidecar_problem(sidecar, place)
        fd = None
        if why is None:
            try:
                fd = os.open(
                    place.part_name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder
                )
            except FileNotFoundError:
                why = "the part itself is missing"
            except OSError as exc:
                why = f"it can't be opened ({exc.strerror or exc})"
        if fd is not None and not lock(fd):
            os.close(fd)
            return None  # another process writes it: leave it to that one
        if fd is not None:
            try:
                claimed = read_part(fd, place, algorithm, sidecar["validator"])
            except OSError as exc:
                claimed, why = None, f"it can't be read ({exc.strerror or exc})"
            if isinstance(claimed, str):
                claimed, why = None, claimed
            if claimed is not None:
                return claimed
            os.close(fd)
    finally:
        os.close(folder)
    if why == "it has no sidecar" and not os.path.lexists(place.path):
        return None  # nothing there (the usual case): nothing to delete
    logger.info(f"{RESUME} {place.identifier}/{place.name}: part discarded, {why}")
    remove_place(place)
    return None


@contextlib.contextmanager
def open_nofollow(name: str, folder: int, flags: int) -> Any:
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    try:
        yield fd
    finally:
        os.close(fd)


def sidecar_problem(sidecar: Any, place: PartPlace) -> str | None:
    if not isinstance(sidecar, dict) or sidecar.get("version") != SIDECAR_VERSION:
        return "its sidecar is of another version"
    if sidecar.get("identifier") != place.identifier or sidecar.get("name") != place.name:
        return "its sidecar names another file"
    if sidecar.get("listing") != place.listing:
        return "the file's listing (size, mtime or checksum) changed since it was started"
    if not isinstance(sidecar.get("validator"), str) or not sidecar["validator"]:
        return "its sidecar has no validator"
    return None


def read_part(fd: int, place: PartPlace, algorithm: str, validator: str) -> ClaimedPart | str:
    """Hash the part ``fd``; a ClaimedPart positioned at its end, or why it can't be."""
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        return "it is not a regular file"
    size = found.st_size
    listed = place.listing.get("size")
    if listed is not None and size > listed:
        return f"it holds {size} bytes, more than the {listed} listed"
    if listed is not None and size == listed and size > 0:
        size -= 1  # complete: fetch its last byte again rather than a range that can't be
        os.ftruncate(fd, size)
    digest = hashlib.new(algorithm)
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(1 << 20, size - offset), offset)
        if not chunk:
            return "it shrank while it was read"
        digest.update(chunk)
        offset += len(chunk)
    os.lseek(fd, size, os.SEEK_SET)
    return ClaimedPart(fd, place.path, size, digest, validator)


def parts_root(root: str | os.PathLike[str]) -> Path:
    return Path(root).joinpath(*PARTS)


def remove_old_parts(root: str | os.PathLike[str], max_age_days: float) -> int:
    """Delete the parts (and sidecars) under ``root``'s part folder untouched for
    ``max_age_days``, and the empty folders left; returns how many files were deleted.
    Symbolic links are neither followed nor deleted; a symlinked ``.ravel`` or ``parts``
    folder is refused (UnsafePartPlace)."""
    try:
        top = open_folder(Path(root), list(PARTS), create=False)
    except FileNotFoundError:
        return 0
    cutoff = time.time() - max_age_days * 86400
    try:
        return sweep(top, cutoff, depth=0)
    finally:
        os.close(top)


def sweep(folder: int, cutoff: float, depth: int) -> int:
    """Delete old part files under the open ``folder``; bounded in depth."""
    removed = 0
    if depth > 64:
        return 0
    for entry in os.listdir(folder):
        try:
            found = os.stat(entry, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(found.st_mode):
            try:
                inner = os.open(entry, DIR_FLAGS, dir_fd=folder)
            except OSError:
                continue
            try:
                removed += sweep(inner, cutoff, depth + 1)
            finally:
                os.close(inner)
            with contextlib.suppress(OSError):
                os.rmdir(entry, dir_fd=folder)  # only if empty
        elif stat.S_ISREG(found.st_mode) and entry.endswith(PART_SUFFIX):
            if found.st_mtime < cutoff and not in_use(entry, folder):
                for name in (entry, entry[: -len(PART_SUFFIX)] + SIDECAR_SUFFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=folder)
                        removed += 1
        elif stat.S_ISREG(found.st_mode) and entry.endswith(SIDECAR_SUFFIX):
            part = entry[: -len(SIDECAR_SUFFIX)] + PART_SUFFIX
            orphan = not exists(part, folder)
            if orphan and found.st_mtime < cutoff:  # a part's sidecar goes with its part
                with contextlib.suppress(OSError):
                    os.unlink(entry, dir_fd=folder)
                    removed += 1
    return removed


def exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def in_use(name: str, folder: int) -> bool:
    """Is the part ``name`` locked by a process writing it (another node, maybe)?"""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return True  # not ours to judge: leave it
    try:
        return not lock(fd)
    finally:
        os.close(fd)  # closing releases the lock taken
