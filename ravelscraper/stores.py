"""Where files land: a local store that never shows a half-written file under its real name."""

from __future__ import annotations

import os
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy.pipelines.files import FSFilesStore
from scrapy.pipelines.media import MediaPipeline

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
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".ravel-", suffix=PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(buf.getvalue())  # no copy: getbuffer() would copy a shared buffer
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def _get_filesystem_path(self, path: str | os.PathLike[str]) -> Path:
        root = Path(self.basedir).resolve()
        target = Path(root, *str(path).split("/"))
        if not target.resolve().is_relative_to(root):
            raise UnsafeName(f"{path!r} resolves outside the store")
        return target
