"""Where files land: the local store (never a half-written file under its real name), S3, FTP.

Owns the store classes (Scrapy's ``FilesStoreProtocol``: ``stat_file`` and ``persist_file``,
plus ``commit_part`` for a streamed body on the local store), the check made before any
download (``store_uri_problem`` for the shape of ``FILES_STORE``, each store's ``check()``
for the store itself), and which write errors are one file's problem
(``is_name_problem``). The name rules live in ``ravelscraper.archive.names``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ftplib
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from scrapy.pipelines.files import FTPFilesStore, S3FilesStore
from scrapy.pipelines.media import MediaPipeline
from scrapy.utils.defer import deferred_from_coro, ensure_awaitable, maybe_deferred_to_future
from scrapy.utils.ftp import ftp_makedirs_cwd
from twisted.internet.defer import Deferred

from ravelscraper.archive.names import UnsafeName
from ravelscraper.extensions.redact import redact_url
from ravelscraper.pipelines.records import quick_match, read_record, write_record

if TYPE_CHECKING:
    from ravelscraper.pipelines.bodies import ReceivedBody

logger = logging.getLogger(__name__)

PARTIAL_PREFIX = ".ravel-"
PARTIAL_SUFFIX = ".part"
# OSErrors that are one file's problem (its path), not the store's: that file fails alone.
NAME_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ELOOP}
)
STORE_CHECK_TIMEOUT = 10.0  # seconds for each network step of the start-up store check


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may run)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Stored files get the permissions open() would give them (0644 under umask 022).
FILE_MODE = 0o666 & ~current_umask()


class StoreProblem(ValueError):
    """FILES_STORE can't be used: the message says why (credentials masked)."""


def is_name_problem(exc: OSError) -> bool:
    """True when the OSError is about this file's path (a directory in the way, too long)."""
    return exc.errno in NAME_ERRNOS


# (Written without "user:password@": the log's masking would show it as "***@".)
STORE_KINDS = "a folder, file:///folder, s3://bucket[/prefix] or ftp://host[:port]/folder"


def store_uri_problem(uri: str) -> str | None:
    """What is wrong with the shape of ``FILES_STORE`` (None if nothing), before any I/O."""
    if not uri.strip():
        return f"FILES_STORE is empty: give {STORE_KINDS}"
    if Path(uri).is_absolute():
        return None
    shown_uri = repr(redact_url(uri))
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        why = redact_url(str(exc))
        return f"FILES_STORE {shown_uri} is not a valid URI ({why}): give {STORE_KINDS}"
    scheme = parts.scheme.lower()
    if scheme == "":
        return None
    if scheme == "file":
        return None if parts.path else f"FILES_STORE {shown_uri} names no folder"
    if scheme == "s3":
        if not parts.netloc:
            return f"FILES_STORE {shown_uri} names no bucket: use s3://bucket[/prefix]"
        return None
    if scheme == "ftp":
        if not parts.hostname:
            return f"FILES_STORE {shown_uri} names no host: use ftp://host[:port]/folder"
        return None
    return f"FILES_STORE {shown_uri} has an unknown scheme {scheme!r}: give {STORE_KINDS}"


def store_check_problem(store: Any, dry_run: bool = False) -> str | None:
    """What the store's start-up check (its ``check()``, if it has one) found wrong, or None.
    In a dry run, its ``check(write=False)``: a check that writes nothing."""
    check = getattr(store, "check", None)
    if check is not None and dry_run:
        check = partial(check, write=False)
    try:
        if check is not None:
            check()
    except StoreProblem as exc:
        return str(exc)
    return None


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


def s3_bucket_and_prefix(uri: str) -> tuple[str, str]:
    """(bucket, ``"prefix/"``) from ``s3://bucket/prefix`` or ``s3://bucket/prefix/``;
    (bucket, ``""``) from ``s3://bucket``."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


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

    def __init__(self, basedir: str | os.PathLike[str]):
        basedir = str(basedir)
        self.basedir = basedir.split("://", 1)[1] if "://" in basedir else basedir
        self.quick = True  # RAVEL_RECHECK=quick
        self.keep_records = True

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

    def persist_file(
        self,
        path: str | os.PathLike[str],
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        record: tuple[str, str] | None = None,
    ) -> None:
        """Store ``buf`` at ``path``; ``record`` is (algorithm, digest) of a verified body."""
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
    ) -> None:
        """Move a complete part file, made in the target's folder, into place.

        ``part`` is its name, or None for an unnamed (``O_TMPFILE``) file open as ``fd``:
        that one is linked under a temporary name (copied if linking fails), then renamed.
        ``record`` (algorithm, digest of a verified body) is set on the file before its
        rename: the name and the record appear together.
        """
        target = self.filesystem_path(path)
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
                self.copy_part(fd, target.parent / name, record if self.keep_records else None)
            try:
                os.replace(name, target.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=folder)
                raise
        finally:
            os.close(folder)

    @staticmethod
    def copy_part(fd: int, partial: Path, record: tuple[str, str] | None = None) -> None:
        """Copy the open file ``fd`` to the new file ``partial`` (deleted if that fails);
        ``record`` (algorithm, digest) is set on the copy once it is complete."""
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            offset = 0
            while chunk := os.pread(fd, 1 << 20, offset):
                write_all(out, chunk)
                offset += len(chunk)
            if record is not None:
                write_record(out, *record)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            os.close(out)

    def filesystem_path(self, path: str | os.PathLike[str]) -> Path:
        """Where ``path`` (``<identifier>/<name>``) is stored; UnsafeName if that is outside
        the store (a symbolic link out of it)."""
        root = Path(self.basedir).resolve()
        target = Path(root, *str(path).split("/"))
        if not target.resolve().is_relative_to(root):
            raise UnsafeName(f"{path!r} resolves outside the store")
        return target

    def folder_of(self, path: str) -> Path | None:
        """The folder ``path`` will be stored in (where its part file streams to), or None
        when its path is refused (storing it then fails with the reason)."""
        try:
            return self.filesystem_path(path).parent
        except (UnsafeName, OSError):
            return None


async def call_store(store: Any, call: Callable[[], Any]) -> Any:
    """``call()`` on ``store``: in a thread for the local store (its disk I/O and hashing),
    awaited for the remote stores (they return Deferreds)."""
    if isinstance(store, AtomicFSFilesStore):
        return await asyncio.to_thread(call)
    return await ensure_awaitable(call())


def stat_call(
    store: Any,
    path: str,
    info: MediaPipeline.SpiderInfo,
    algorithm: str,
    expected: str | None,
    size: int | None,
) -> Callable[[], Any]:
    """The store's ``stat_file`` call: the local store hashes with ``algorithm`` and may trust
    its record of ``expected`` and ``size`` (the quick check); the others give md5s."""
    if isinstance(store, AtomicFSFilesStore):
        return partial(store.stat_file, path, info, algorithm, expected, size)
    return partial(store.stat_file, path, info)


def persist_call(
    store: Any,
    path: str,
    info: MediaPipeline.SpiderInfo,
    body: ReceivedBody,
    record: tuple[str, str] | None,
) -> Callable[[], Any]:
    """The call that stores a received body: its part file renamed into place, or its bytes
    written; on the local store with ``record`` (a verified body's algorithm and digest)."""
    if body.streamed is not None:
        fd, partial_path = body.streamed.fd, body.streamed.path
        return partial(store.commit_part, fd, partial_path, path, record=record)
    data = BytesIO(body.data or b"")
    if isinstance(store, AtomicFSFilesStore):
        return partial(store.persist_file, path, data, info, record=record)
    return partial(store.persist_file, path, data, info)


class S3Store(S3FilesStore):
    """Scrapy's S3 store with ``[prefix/]<identifier>/<name>`` keys whatever the slashes.

    ``s3://bucket``, ``s3://bucket/prefix`` and ``s3://bucket/prefix/`` all work (Scrapy's
    own store wrote ``prefix<identifier>`` without a slash). A missing object is simply not
    stored yet, and :meth:`check` proves at start that the bucket exists and is writable.
    """

    def __init__(self, uri: str):
        import botocore.session
        from botocore.config import Config

        self.bucket, self.prefix = s3_bucket_and_prefix(uri)
        pool = (
            {"max_pool_connections": self.AWS_MAX_POOL_CONNECTIONS}
            if self.AWS_MAX_POOL_CONNECTIONS is not None
            else {}
        )
        # Scrapy's client, with a short connect timeout: an unreachable endpoint is reported
        # at start in seconds, not minutes.
        self.s3_client = botocore.session.get_session().create_client(
            "s3",
            aws_access_key_id=self.AWS_ACCESS_KEY_ID,
            aws_secret_access_key=self.AWS_SECRET_ACCESS_KEY,
            aws_session_token=self.AWS_SESSION_TOKEN,
            endpoint_url=self.AWS_ENDPOINT_URL,
            region_name=self.AWS_REGION_NAME,
            use_ssl=self.AWS_USE_SSL,
            verify=self.AWS_VERIFY,
            config=Config(
                connect_timeout=STORE_CHECK_TIMEOUT,
                retries={"max_attempts": 3, "mode": "standard"},
                **pool,
            ),
        )

    def stat_file(self, path: str, info: MediaPipeline.SpiderInfo) -> Deferred[dict]:
        return deferred_from_coro(self.stat_object(path))

    async def stat_object(self, path: str) -> dict:
        """The object's ETag (its md5, for a single-part upload), mtime and size; {} if none."""
        from botocore.exceptions import ClientError

        key = f"{self.prefix}{path}"
        try:
            found = await asyncio.to_thread(self.s3_client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return {}  # not stored yet: the normal case on a first run
            raise
        return {
            "checksum": found["ETag"].strip('"'),
            "last_modified": found["LastModified"].timestamp(),
            "size": found.get("ContentLength"),
        }

    def check(self, write: bool = True) -> None:
        """Raises StoreProblem unless the bucket exists and a probe object can be written
        (without ``write``, a dry run: only that the bucket exists and can be reached)."""
        import botocore.exceptions as boto

        where = f"s3://{self.bucket}/{self.prefix}"
        client = self.s3_client
        probe = f"{self.prefix}{PARTIAL_PREFIX}write-probe-{secrets.token_hex(8)}"
        try:
            client.head_bucket(Bucket=self.bucket)
            if not write:
                return
            # The same ACL as every upload: a bucket that refuses it fails here, not later.
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"", ACL=self.POLICY)
            client.delete_object(Bucket=self.bucket, Key=probe)
        except boto.NoCredentialsError:
            raise StoreProblem(
                f"FILES_STORE {where}: no AWS credentials found (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, ~/.aws or an instance role)"
            ) from None
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                why = f"the bucket {self.bucket!r} does not exist"
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                why = f"access denied ({code}): check the credentials and the bucket's policy"
            elif code == "AccessControlListNotSupported":
                why = f"the bucket refuses the ACL {self.POLICY!r} (set FILES_STORE_S3_ACL)"
            else:
                why = f"{code} {error.get('Message', '')}".strip()
            raise StoreProblem(f"FILES_STORE {where} is not writable: {why}") from None
        except boto.BotoCoreError as exc:
            why = redact_url(str(exc))
            raise StoreProblem(f"FILES_STORE {where} can't be reached: {why}") from None


class FTPStore(FTPFilesStore):
    """Scrapy's FTP store, accepting the default port (21) and checked at start."""

    def __init__(self, uri: str):
        parts = urlsplit(uri)
        self.host = parts.hostname or ""
        self.port = parts.port or 21
        self.username = unquote(parts.username or "") or self.FTP_USERNAME or "anonymous"
        self.password = unquote(parts.password or "") or self.FTP_PASSWORD or "guest"
        self.basedir = parts.path.rstrip("/")

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[Any]:
        return deferred_from_coro(self.persist_retrying(path, buf.getvalue(), info, meta, headers))

    async def persist_retrying(
        self,
        path: str,
        data: bytes,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None,
        headers: dict[str, str] | None,
    ) -> None:
        # Scrapy's ftp_makedirs_cwd races when two uploads create one folder: the loser
        # gets "550 ... exists". The folder is there by then, so that upload tries again.
        # Each attempt gets its own buffer: Scrapy's upload closes the one it is given.
        try:
            await maybe_deferred_to_future(
                super().persist_file(path, BytesIO(data), info, meta, headers)
            )
        except ftplib.error_perm as exc:
            if "exist" not in str(exc).lower():
                raise
            await maybe_deferred_to_future(
                super().persist_file(path, BytesIO(data), info, meta, headers)
            )

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
