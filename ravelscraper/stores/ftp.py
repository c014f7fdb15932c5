"""The FTP store: Scrapy's, with the default port, checked at start."""

from __future__ import annotations

import ftplib
import posixpath
import secrets
import time
from io import BytesIO
from typing import Any
from urllib.parse import unquote, urlsplit

from scrapy.pipelines.files import FTPFilesStore
from scrapy.pipelines.media import MediaPipeline
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.ftp import ftp_makedirs_cwd
from twisted.internet.defer import Deferred

from ravelscraper.extensions.redact import redact_url
from ravelscraper.stores.base import (
    ITEM_RECORD_FOLDER,
    MAX_ITEM_RECORD_BYTES,
    PARTIAL_PREFIX,
    STORE_CHECK_TIMEOUT,
    StoreProblem,
)

MAX_FOLDERS = 1000  # folders of one item walked by item_files


def set_remote_mtime(ftp: ftplib.FTP, name: str, mtime: int) -> bool:
    """``MFMT`` (draft-somers-ftp-mfxx): the file ``name``'s mtime, in UTC; False where the
    server refuses or lacks the command (the file keeps the time of its upload)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))
    try:
        ftp.voidcmd(f"MFMT {stamp} {name}")
    except ftplib.Error:
        return False
    return True


class FTPStore(FTPFilesStore):
    """Scrapy's FTP store, accepting the default port (21) and checked at start."""

    blocking = False
    streams_parts = False
    checksums = frozenset({"md5"})  # Scrapy's FTP store hashes what it reads back
    keeps_records = False
    restamps = False  # a file found up to date keeps its time (one MDTM+MFMT each otherwise)
    keeps_item_records = True  # files under the folder: <folder>/.ravel/items/<id>.json

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        self.host = parts.hostname or ""
        self.port = parts.port or 21
        self.username = unquote(parts.username or "") or self.FTP_USERNAME or "anonymous"
        self.password = unquote(parts.password or "") or self.FTP_PASSWORD or "guest"
        self.basedir = parts.path.rstrip("/")

    def stat_file(
        self,
        path: str,
        info: MediaPipeline.SpiderInfo,
        algorithm: str = "md5",
        expected: str | None = None,
        size: int | None = None,
    ) -> Deferred[dict]:
        return super().stat_file(path, info)

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        record: tuple[str, str] | None = None,
        mtime: int | None = None,
    ) -> Deferred[Any]:
        return deferred_from_coro(self.persist_retrying(path, buf.getvalue(), mtime))

    async def persist_retrying(self, path: str, data: bytes, mtime: int | None = None) -> None:
        # Scrapy's ftp_makedirs_cwd races when two uploads create one folder: the loser
        # gets "550 ... exists". The folder is there by then, so that upload tries again.
        try:
            await maybe_deferred_to_future(self.upload(path, data, mtime))
        except ftplib.error_perm as exc:
            if "exist" not in str(exc).lower():
                raise
            await maybe_deferred_to_future(self.upload(path, data, mtime))

    def upload(self, path: str, data: bytes, mtime: int | None) -> Deferred[None]:
        return deferred_from_coro(run_in_thread(self.store_file, path, data, mtime))

    def store_file(self, path: str, data: bytes, mtime: int | None) -> None:
        """Scrapy's ``ftp_store_file``, then ``MFMT`` to give the file archive.org's mtime
        where the server has that command (a server without it leaves the upload time)."""
        folder, name = posixpath.split(f"{self.basedir}/{path}")
        with ftplib.FTP() as ftp:  # noqa: S321 - the user's choice
            ftp.connect(self.host, self.port)
            ftp.login(self.username, self.password)
            if self.USE_ACTIVE_MODE:
                ftp.set_pasv(False)
            ftp_makedirs_cwd(ftp, folder)
            ftp.storbinary(f"STOR {name}", BytesIO(data))
            if mtime is not None:
                set_remote_mtime(ftp, name, mtime)

    # --- item records (ravelscraper.pipelines.records.ItemRecords): blocking calls ---------

    def session(self) -> ftplib.FTP:
        """A logged-in connection (the caller closes it)."""
        ftp = ftplib.FTP(timeout=STORE_CHECK_TIMEOUT)  # noqa: S321 - the user's choice
        try:
            ftp.connect(self.host, self.port)
            ftp.login(self.username, self.password)
            if self.USE_ACTIVE_MODE:
                ftp.set_pasv(False)
        except BaseException:
            ftp.close()
            raise
        return ftp

    def read_item_record(self, identifier: str) -> bytes | None:
        """The item's record file, or None if there is none (one RETR)."""
        chunks: list[bytes] = []
        size = 0

        def keep(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > MAX_ITEM_RECORD_BYTES:
                raise ValueError("item record too large")
            chunks.append(chunk)

        with self.session() as ftp:
            try:
                ftp.retrbinary(f"RETR {self.basedir}/{ITEM_RECORD_FOLDER}/{identifier}.json", keep)
            except ftplib.error_perm as exc:
                if str(exc).startswith("550"):
                    return None
                raise
        return b"".join(chunks)

    def write_item_record(self, identifier: str, data: bytes) -> None:
        """Store the item's record: a temporary file renamed over the old one."""
        folder = f"{self.basedir}/{ITEM_RECORD_FOLDER}"
        temporary = f"{PARTIAL_PREFIX}{identifier}-{secrets.token_hex(6)}.json"
        with self.session() as ftp:
            ftp_makedirs_cwd(ftp, folder)
            ftp.storbinary(f"STOR {temporary}", BytesIO(data))
            try:
                ftp.rename(temporary, f"{identifier}.json")
            except ftplib.Error:
                ftp.delete(temporary)
                raise

    def item_files(self, identifier: str) -> dict[str, tuple[int, str]]:
        """Every stored file of the item: name -> (size, modification time), from ``MLSD``
        listings of its folders (nothing is downloaded)."""
        found: dict[str, tuple[int, str]] = {}
        with self.session() as ftp:
            folders = [""]
            for _ in range(MAX_FOLDERS):
                if not folders:
                    break
                relative = folders.pop()
                where = f"{self.basedir}/{identifier}" + (f"/{relative}" if relative else "")
                try:
                    entries = list(ftp.mlsd(where, facts=["type", "size", "modify"]))
                except ftplib.error_perm as exc:
                    if str(exc).startswith("550"):
                        return found
                    raise
                for name, facts in entries:
                    path = f"{relative}/{name}" if relative else name
                    if facts.get("type") == "dir":
                        folders.append(path)
                    elif facts.get("type") == "file":
                        found[path] = (int(facts.get("size", -1)), facts.get("modify", ""))
        return found

    def check(self, write: bool = True) -> None:
        """Raises StoreProblem unless we can log in and write (then delete) a probe file
        (without ``write``, a dry run: only that we can log in)."""
        where = f"ftp://{self.host}:{self.port}{self.basedir}"
        probe = f"{PARTIAL_PREFIX}write-probe-{secrets.token_hex(8)}"
        try:
            with ftplib.FTP(timeout=STORE_CHECK_TIMEOUT) as ftp:  # noqa: S321 - the user's choice
                ftp.connect(self.host, self.port)
                ftp.login(self.username, self.password)
                if self.USE_ACTIVE_MODE:
                    ftp.set_pasv(False)
                if not write:
                    return
                if self.basedir:
                    ftp_makedirs_cwd(ftp, self.basedir)
                ftp.storbinary(f"STOR {probe}", BytesIO(b""))
                ftp.delete(probe)
        except ftplib.Error as exc:
            raise StoreProblem(
                f"FILES_STORE {where} refused us: {redact_url(str(exc)).strip()!r}"
            ) from None
        except (OSError, EOFError) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise StoreProblem(f"FILES_STORE {where} can't be reached: {why}") from None
