"""What every store shares: the capabilities the files pipeline asks about, and its errors.

The pipeline never branches on a store's type: it asks these attributes. A new store kind is
one module implementing ``Store`` and one line in ``ravelscraper.stores.STORE_SCHEMES``.
"""

from __future__ import annotations

import errno
from io import BytesIO
from typing import Any, ClassVar, Protocol

PARTIAL_PREFIX = ".ravel-"
PARTIAL_SUFFIX = ".part"
# OSErrors that are one file's problem (its path), not the store's: that file fails alone.
NAME_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ELOOP}
)
STORE_CHECK_TIMEOUT = 10.0  # seconds for each network step of the start-up store check
ITEM_RECORD_FOLDER = ".ravel/items"  # item records, under the store's folder or prefix
MAX_ITEM_RECORD_BYTES = 16 * 1024 * 1024  # a larger record is not read (not trusted)


class StoreProblem(ValueError):
    """FILES_STORE can't be used: the message says why (credentials masked)."""


def is_name_problem(exc: OSError) -> bool:
    """True when the OSError is about this file's path (a directory in the way, too long)."""
    return exc.errno in NAME_ERRNOS


class Store(Protocol):
    """A store as the files pipeline uses it: Scrapy's ``FilesStoreProtocol`` with the
    checksum arguments and the ``record`` keyword every store accepts, and its capabilities."""

    # Its calls do disk I/O and run in a thread; otherwise they return Deferreds.
    blocking: ClassVar[bool]
    # Bodies stream to part files in ``folder_of(path)`` (or at ``part_place(...)``, where a
    # cut-off download waits for the next run; ``remove_old_parts`` ages them out), stored by
    # ``commit_part``; ``lacks(path)`` says, without a thread, that nothing is at ``path``.
    streams_parts: ClassVar[bool]
    # The checksums ``stat_file`` answers in; a file listed with another is checked by md5.
    checksums: ClassVar[frozenset[str]]
    # It keeps verification records (the quick check): ``quick`` and ``keep_records`` apply.
    keeps_records: ClassVar[bool]
    # It can give a stored file, found up to date, archive.org's mtime (``set_mtime``).
    # Every store takes ``mtime=`` (epoch seconds) when storing a file.
    restamps: ClassVar[bool]
    # It keeps item records itself, as objects under its prefix (``.ravel/items/<id>.json``):
    # ``read_item_record``, ``write_item_record`` and ``item_files`` (S3, FTP). The local
    # store's item records are files under its folder, read by ``pipelines.records``.
    keeps_item_records: ClassVar[bool]

    def stat_file(
        self,
        path: str,
        info: Any,
        algorithm: str = "md5",
        expected: str | None = None,
        size: int | None = None,
    ) -> Any: ...

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        record: tuple[str, str] | None = None,
        mtime: int | None = None,
    ) -> Any: ...

    def check(self, write: bool = True) -> None: ...
