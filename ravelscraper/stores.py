"""Where files land: a local store that never shows a half-written file under its real name."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy.pipelines.files import FSFilesStore
from scrapy.pipelines.media import MediaPipeline

PARTIAL_PREFIX = ".ravel-"
PARTIAL_SUFFIX = ".part"


class UnsafeName(ValueError):
    """A remote file name that would not stay inside the store."""


def safe_relative_path(identifier: str, name: str) -> str:
    """``<identifier>/<name>``, refusing any name that could leave its folder."""
    for part in (identifier, name):
        if any(ord(c) < 32 or ord(c) == 127 for c in part):
            raise UnsafeName("it contains a control character")
        if "\\" in part:
            raise UnsafeName("it contains a backslash")
    if name.startswith("/"):
        raise UnsafeName("it is an absolute path")
    for component in [identifier, *name.split("/")]:
        if component in ("", ".", ".."):
            raise UnsafeName(f"it has a {component or 'empty'!r} path component")
        if len(component.encode()) > 255:
            raise UnsafeName("a path component is longer than 255 bytes")
    return f"{identifier}/{name}"


class AtomicFSFilesStore(FSFilesStore):
    """FSFilesStore that writes to a temporary file and renames it into place.

    A crawl killed mid-write leaves at most a ``.ravel-*.part`` file, never a truncated
    file under the real name. The folder is created by :meth:`ensure_writable` when the
    crawl opens, so that an unwritable store is reported before anything is downloaded.
    """

    def __init__(self, basedir: str | os.PathLike[str]):
        basedir = str(basedir)
        self.basedir = basedir.split("://", 1)[1] if "://" in basedir else basedir
        self.created_directories: dict = {}

    def ensure_writable(self) -> None:
        """Create the store and write a probe file there; raises OSError if that fails."""
        root = Path(self.basedir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-probe-"):
            pass

    def persist_file(
        self,
        path: str | os.PathLike[str],
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        target = self._get_filesystem_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(
            dir=target.parent, prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(buf.getvalue())  # no copy: getbuffer() would copy a shared buffer
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def commit_part(
        self, fd: int, part: str | os.PathLike[str] | None, path: str | os.PathLike[str]
    ) -> None:
        """Move a complete part file, made in the target's folder, into place.

        ``part`` is its name, or None for an unnamed (``O_TMPFILE``) file open as ``fd``:
        that one is linked under a temporary name (copied if linking fails), then renamed.
        """
        target = self._get_filesystem_path(path)
        if part is not None:
            if Path(part).parent != target.parent:
                raise UnsafeName(f"{str(part)!r} is not in the folder of {str(path)!r}")
            os.replace(part, target)
            return
        name = f"{PARTIAL_PREFIX}{secrets.token_hex(8)}{PARTIAL_SUFFIX}"
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder, follow_symlinks=True)
            except OSError:  # no /proc, or a filesystem that refuses: copy it
                self._copy_part(fd, target.parent / name)
            try:
                os.replace(name, target.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)
                raise
        finally:
            os.close(folder)

    @staticmethod
    def _copy_part(fd: int, partial: Path) -> None:
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            offset = 0
            while chunk := os.pread(fd, 1 << 20, offset):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                offset += len(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            os.close(out)

    def _get_filesystem_path(self, path: str | os.PathLike[str]) -> Path:
        root = Path(self.basedir).resolve()
        target = Path(root, *str(path).split("/"))
        if not target.resolve().is_relative_to(root):
            raise UnsafeName(f"{path!r} resolves outside the store")
        return target
