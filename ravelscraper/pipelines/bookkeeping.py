"""The files pipeline's bookkeeping beyond one file's life: records, the dry run, items.

Owns, for one ``VerifiedFilesPipeline``:

* how the local store keeps verification records (``ravelscraper.pipelines.records``): the quick
  check on with ``RAVEL_RECHECK=quick``; no records written in a dry run or on a filesystem
  without extended attributes (said once, when the crawl opens);
* the dry run (``RAVEL_DRY_RUN``; the pipeline checks the store without writing, with
  ``ravelscraper.stores.store_check_problem``): a file that would be downloaded is
  counted in ``ravel/files_planned`` and ``ravel/bytes_planned`` (``ravelscraper.extensions.plan``
  sums them up);
* how a stored file was checked (asked through :meth:`Bookkeeping.stat`):
  ``ravel/files_quick_checked`` (its record trusted) or ``ravel/files_rehashed`` (hashed);
* an item's completion: once every chosen file of an item (``item_files``) ended verified
  (``VERIFIED``, against a listed checksum) in this crawl, the item is recorded complete
  (``ItemRecords.complete``) for the next run's ``unchanged``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from scrapy.crawler import Crawler

from ravelscraper.items import AudioFile
from ravelscraper.pipelines.records import NO_XATTR_MESSAGE, ItemRecords, xattrs_supported
from ravelscraper.pipelines.verify import expected_checksum
from ravelscraper.stores import call_store

logger = logging.getLogger("ravelscraper.pipelines.files")  # its lines are the pipeline's
# A file's ends that count toward its item's completion: stored or found matching the
# checksum archive.org lists. Never "unverified" (stored without a checksum match), never a
# file listed without a checksum (the details page's links): such an item is listed again.
VERIFIED = frozenset({"downloaded", "uptodate"})


def counts_toward_item(item: AudioFile) -> bool:
    """Whether the file ended verified against a checksum archive.org lists: only then does
    it count toward its item's record (a fleet's ledger asks the same)."""
    if expected_checksum(item)[1] is None:
        return False  # nothing to verify it against: its item is never recorded complete
    return any(f.get("status") in VERIFIED for f in item.files)


class Bookkeeping:
    """The records, the dry run's plan and the items' completion of one pipeline."""

    def __init__(self, crawler: Crawler, store: Any) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.store = store
        self.dry_run = crawler.settings.getbool("RAVEL_DRY_RUN")
        self.item_records = ItemRecords.from_settings(crawler.settings, store)
        self.verified_files: dict[str, set[str]] = {}  # identifier -> names verified here
        if store.keeps_records:
            store.quick = crawler.settings["RAVEL_RECHECK"] == "quick"
            store.keep_records = not self.dry_run

    def store_opened(self) -> None:
        """After the store's check: records only where extended attributes are kept (never
        probed in a dry run, which writes nothing and keeps no records)."""
        store = self.store
        if not store.keeps_records or self.dry_run:
            return
        if not xattrs_supported(store.basedir):
            logger.info(NO_XATTR_MESSAGE)
            store.keep_records = False

    async def stat(self, call: Callable[[], Any]) -> dict:
        """The store's ``stat_file`` answer, counted: trusted on its record, or hashed."""
        stored: dict = await call_store(self.store, call)
        if stored and "quick" in stored:
            key = "ravel/files_quick_checked" if stored["quick"] else "ravel/files_rehashed"
            self.stats.inc_value(key)
        return stored

    def planned(self, item: AudioFile) -> None:
        """A file a dry run would download."""
        self.stats.inc_value("ravel/files_planned")
        self.stats.inc_value("ravel/bytes_planned", item.size or 0)

    async def file_ended(self, item: AudioFile) -> None:
        """Count the file toward its item; the item's last verified file records it."""
        fingerprint: str | None = getattr(item, "item_fingerprint", None)
        wanted: int = getattr(item, "item_files", 0)
        if not fingerprint or wanted <= 0 or self.dry_run:
            return
        if not counts_toward_item(item):
            return
        names = self.verified_files.setdefault(item.identifier, set())
        names.add(item.name)
        if len(names) == wanted:
            selection: str = getattr(item, "selection", "")
            del self.verified_files[item.identifier]
            complete = partial(self.item_records.complete, item.identifier, fingerprint, selection)
            await asyncio.to_thread(complete, files=sorted(names))
