"""Checking a file against archive.org's listing: its size and checksum (sha1 where listed,
else md5).

Owns the comparison (``mismatch``), the up-to-date check of a stored copy (``up_to_date``,
``stale``), and the verify-and-retry loop (``verified_body``): a body that does not match
is fetched again ``RAVEL_VERIFY_RETRIES`` times, then refused, except a file archive.org
regenerates, kept marked unverified. It does no I/O of its own: the pipeline hands it the bodies.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from scrapy.pipelines.media import FileException

from ravelscraper.archive.names import shown
from ravelscraper.items import AudioFile
from ravelscraper.logtags import STALE, UNVERIFIED, VERIFY

logger = logging.getLogger(__name__)


def hex_digest(algorithm: str, data: bytes) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def expected_checksum(item: AudioFile) -> tuple[str, str | None]:
    """(algorithm, listed hex digest): sha1 where archive.org lists it (the faster to
    compute here, and the stronger), md5 otherwise; (``"md5"``, None) if neither is listed."""
    if item.sha1 is not None:
        return "sha1", item.sha1
    return "md5", item.md5


def mismatch(item: AudioFile, size: int, checksum: str, partial: bool = False) -> str | None:
    """Why the body can't be stored as this file, or None; ``checksum`` is the body's
    digest with the algorithm of ``expected_checksum(item)``."""
    if item.size is not None and size != item.size:
        return f"got {size} bytes, archive.org lists {item.size}"
    algorithm, expected = expected_checksum(item)
    if expected is not None and checksum != expected:
        return f"{algorithm} mismatch: archive.org lists {expected}, got {checksum}"
    if partial and expected is None and item.size is None:
        return (
            f"the connection closed after {size} bytes without the body's length, and "
            "archive.org lists no size or checksum to check it against: it may be incomplete"
        )
    return None


def stale(item: AudioFile, stored: dict, algorithm: str, expected: str | None) -> str | None:
    """Why a stored copy (``stat_file``'s answer, not empty) is not this file, or None.

    ``expected`` is the listed checksum of ``algorithm``, the one the store computed.
    """
    checksum, size = stored.get("checksum"), stored.get("size")
    if item.size is not None and size is not None and size != item.size:
        return f"stored size {size} != {item.size}"
    if expected is not None and checksum != expected:
        return f"stored {algorithm} {checksum} != {expected}"
    return None


async def up_to_date(
    item: AudioFile, stat: Callable[[], Awaitable[dict]], algorithm: str, expected: str | None
) -> dict | None:
    """The stored copy's ``stat_file`` answer when it is this file, else None: download it.

    ``stat()`` computes the stored copy's checksum with ``algorithm``, whose listed value is
    ``expected``. Nothing listed to compare it with, no copy, an unreadable copy (a warning)
    or a stale one (``[stale]``) all mean a download.
    """
    if expected is None and item.size is None:
        return None  # nothing to check a stored copy against: fetch it again
    try:
        stored = await stat()
    except Exception as exc:  # an unreadable copy is downloaded again
        logger.warning(f"cannot check the stored copy of {shown(item.name)}: {exc!r}")
        return None
    if not stored:
        return None
    why = stale(item, stored, algorithm, expected)
    if why:
        logger.info(f"{STALE} {shown(item.name)}: {why}, downloading again")
        return None
    return stored


class Body(Protocol):
    """One attempt's body, measured: its size, its checksum (``expected_checksum``'s
    algorithm), whether the connection closed without saying it was complete."""

    size: int
    checksum: str
    partial: bool

    def discard(self) -> None:
        """Forget the body (delete its part file, if any)."""


B = TypeVar("B", bound=Body)


async def verified_body(item: AudioFile, retries: int, fetch: Callable[[int], Awaitable[B]]) -> B:
    """The first body that matches the listing, fetching attempt 1, 2... again with
    ``fetch(attempt)`` (attempt 0 is the first download) up to ``retries`` times.

    After the last attempt a mismatch raises FileException, except for a file archive.org
    regenerates whose body is complete: that body is returned (stored unverified). Each
    refused body is discarded.
    """
    attempt = 0
    while True:
        body = await fetch(attempt)
        why = mismatch(item, body.size, body.checksum, partial=body.partial)
        if why is None:
            return body
        if attempt >= retries:
            if not (item.regenerated and not body.partial):
                body.discard()
                raise FileException(why)
            # INFO: the one WARNING for unverified files comes at the end of the crawl.
            logger.info(
                f"{UNVERIFIED} {shown(item.name)}: {why}; archive.org regenerates this "
                "file, so it is stored unverified"
            )
            return body
        log = logger.info if item.regenerated else logger.warning  # expected, for those
        log(f"{VERIFY} {shown(item.name)}: {why}; downloading it again")
        body.discard()
        attempt += 1
