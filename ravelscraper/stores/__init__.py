"""Where files land: the scheme table, and the checks made before any download.

Each store kind is one module (``local``, ``s3``, ``ftp``) implementing ``base.Store``; the
pipeline asks a store's capabilities, never its type. ``store_uri_problem`` checks the shape
of ``FILES_STORE``, each store's ``check()`` the store itself. The name rules live in
``ravelscraper.archive.names``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrapy.utils.defer import ensure_awaitable

from ravelscraper.extensions.redact import redact_url
from ravelscraper.stores.base import StoreProblem
from ravelscraper.stores.ftp import FTPStore
from ravelscraper.stores.local import AtomicFSFilesStore
from ravelscraper.stores.s3 import S3Store

# FILES_STORE's scheme -> its store (Scrapy's "gs" stays, refused: see scrapy_compat).
logger = logging.getLogger(__name__)

STORE_SCHEMES: dict[str, type] = {
    "": AtomicFSFilesStore,
    "file": AtomicFSFilesStore,
    "s3": S3Store,
    "ftp": FTPStore,
}


# (Written without "user:password@": the log's masking would show it as "***@".)
STORE_KINDS = "a folder, file:///folder, s3://bucket[/prefix] or ftp://host[:port]/folder"


def item_record_store(files_store: str) -> Any:
    """A store of ``FILES_STORE`` that keeps item records itself (S3, FTP), made for them
    (``pipelines.records.ItemRecords``); None for the others, or one that can't be made."""
    kind = STORE_SCHEMES.get(files_store.partition("://")[0].lower())
    if kind is None or not getattr(kind, "keeps_item_records", False):
        return None
    try:
        return kind(files_store)
    except Exception as exc:  # its start-up check said why already
        logger.warning(f"item records can't be used: {type(exc).__name__}")
        return None


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


async def call_store(store: Any, call: Callable[[], Any]) -> Any:
    """``call()`` on ``store``: in a thread for a blocking store (the local one: disk I/O and
    hashing), awaited for the others (they return Deferreds)."""
    if store.blocking:
        return await asyncio.to_thread(call)
    return await ensure_awaitable(call())
