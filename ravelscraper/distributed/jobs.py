"""A job's side of the fleet's ledger: the files of a listed item enter the ledger and become
queue entries (:mod:`.entries`); a job that fails while listed (an unknown item, a search that
archive.org refuses...) fails in the ledger, not the node; so does one item of a collection
that fails (the spider's ``item_failed``, see :meth:`JobListing.hook_spider`). Names a single
node refuses (the spider's verdict, and case-only duplicates fleet-wide) fail here, in the
ledger, and are never queued.

A collection (or a search) is one job: its search pages are queue entries, each page's answer
queues the next page (so one node at a time pages it) and its items' ``/metadata`` entries,
which any node takes at once. Its owner in the ledger is ``search:<query>``.
"""

from __future__ import annotations

import logging
from functools import partial

from redis import RedisError
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider

from ravelscraper.archive.metadata import ItemLocation
from ravelscraper.archive.names import NAME_REFUSED, UnsafeName, safe_relative_path
from ravelscraper.distributed.entries import chunks_of, file_entry_items, files_per_entry
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.fleetspider import FleetSpider
from ravelscraper.distributed.leases import Leases
from ravelscraper.distributed.queue import describe
from ravelscraper.distributed.schema.ledger import EntryFiles, ItemRecord, RunLedger
from ravelscraper.items import AudioFile
from ravelscraper.logtags import DOWNLOAD_FAILED, FLEET

logger = logging.getLogger(__name__)

OWNER_META = "ravel_owner"  # what the ledger fails if the entry is given up, when set


def owner_of(request: Request) -> str:
    """What the ledger fails if this entry is ever given up: its file, its item, or its
    search (a search page entry)."""
    owner = request.meta.get(OWNER_META)
    if isinstance(owner, str):
        return owner
    location = request.cb_kwargs.get("item")
    if isinstance(location, ItemLocation):
        return f"item:{location.identifier}"
    query = request.cb_kwargs.get("query")
    return search_ledger_name(query) if isinstance(query, str) else ""


def search_ledger_name(query: str) -> str:
    """A search's name in the ledger (``items``): ``search:<query>``."""
    return f"search:{query}"[:1000]


def item_record(files: list[AudioFile]) -> str:
    """What the node that settles the item's last file needs to record the item as complete
    (``ravelscraper.pipelines.records``), or "" when it has no fingerprint (nothing to record)."""
    first = files[0]
    if not first.item_fingerprint:
        return ""
    names = tuple(f.name for f in files)
    return ItemRecord(first.identifier, first.item_fingerprint, first.selection, names).encode()


def name_refused(item: AudioFile) -> str:
    """Why the file's name can't be stored ("" if it can): the spider's verdict, which it
    puts in ``item.error`` (``names.refused_name``). The spider judges only the names of
    files without another error; those, which fail anyway, are judged here, so that no
    unsafe name is ever queued."""
    if item.error.startswith(NAME_REFUSED):
        return item.error.removeprefix(NAME_REFUSED)
    if not item.error:
        return ""
    try:
        safe_relative_path(item.identifier, item.name)
    except UnsafeName as exc:
        return str(exc)
    return ""


class JobListing:
    """The ledger's side of the page entries this node works on (see :class:`Leases`)."""

    def __init__(self, crawler: Crawler, fleet: Fleet, leases: Leases) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.fleet = fleet
        self.leases = leases

    @property
    def ledger(self) -> RunLedger:
        assert self.fleet.data is not None  # jobs are listed only once the node joined
        return self.fleet.data.ledger

    def queue_files(self, files: list[AudioFile], request: Request | None) -> list[Request]:
        """Put the files listed on this node in the ledger and in the queue, each item's in
        one step (its files in entries of several, ``entries.chunks_of``); nothing is left
        for Scrapy to queue: returns [].

        Names a single node refuses fail here, in the ledger, and are not queued: a name the
        spider refused (``item.error``, see :func:`name_refused`), or all the files of an
        item whose identifier differs only in case from another item's, fleet-wide (the
        ledger's one folder per item).
        """
        if not files:
            return []
        by_item: dict[str, list[AudioFile]] = {}
        for item in files:
            by_item.setdefault(item.identifier, []).append(item)
        queued = 0
        try:
            for identifier, group in by_item.items():
                queued += self.list_item(identifier, group)
        except RedisError as exc:
            # The page entry stays leased and goes back to the queue: it is listed again.
            self.fleet.redis_failed(exc)
            if request is not None:
                self.leases.unfinished(request)
            return []
        self.stats.inc_value("ravel/entries_queued", queued)
        return []

    def list_item(self, identifier: str, group: list[AudioFile]) -> int:
        """One item's files in the ledger and the queue; how many entries were queued."""
        refused: list[tuple[str, str, AudioFile]] = []
        kept: list[AudioFile] = []
        seen: set[str] = set()
        for item in group:
            path = f"{item.identifier}/{item.name}"
            if path in seen:  # listed twice: one file, counted once
                continue
            seen.add(path)
            why = name_refused(item)
            if why:
                refused.append((path, NAME_REFUSED + why, item))
            else:
                kept.append(item)
        unique = [item for _, _, item in refused] + kept
        try:
            chunks = chunks_of(kept, files_per_entry(self.ledger.pending + len(kept)))
        except Exception as exc:  # the files' problem, not the job's
            why = f"{NAME_REFUSED}cannot queue it ({describe(exc)})"
            refused += [(f"{f.identifier}/{f.name}", why, f) for f in kept]
            chunks = []
        entries = [EntryFiles(c.encode(), len(c.rows), c.bytes) for c in chunks]
        status, other = self.ledger.list_item(
            identifier, entries, [(p, why) for p, why, _ in refused], item_record(group)
        )
        if status < 0:  # another identifier holds the item's folder
            why = f"{NAME_REFUSED}its item {identifier!r} differs only in case from {other!r}"
            refused = [(f"{f.identifier}/{f.name}", why, f) for f in unique]
            self.ledger.list_item(identifier, [], [(p, why) for p, why, _ in refused], claim=False)
            entries = []
        if status != 0:
            for _, why, item in refused:
                self.file_refused(item, why)
        return len(entries) if status > 0 else 0

    def file_refused(self, item: AudioFile, reason: str) -> None:
        """A listed file a single node would refuse: failed in the ledger, one ERROR line."""
        self.stats.inc_value("ravel/files_failed")
        logger.error(f"{DOWNLOAD_FAILED} {item.name!r}: {reason}")

    def job_failed(self, request: Request, exc: Exception) -> bool:
        """A page entry's callback stopped its job (``RavelSpider.fail`` raises CloseSpider)
        or crashed: record the job as failed in the ledger and keep the node serving.
        False if this is no fleet job."""
        lease = self.leases.lease_for(request)
        job = owner_of(request).removeprefix("item:")
        if lease is None or not job or job.startswith("file:"):
            return False
        if isinstance(exc, CloseSpider):
            message = str(self.stats.get_value("ravel/error") or exc.reason or "failed")
            code = exc.reason
        else:  # a bug or a malformed answer: one line, not a traceback
            message = f"cannot list {job!r}: {describe(exc)}"
            code = type(exc).__name__
            logger.error(f"{FLEET} {message}")
        try:
            self.ledger.item_failed(job, message)
        except RedisError as error:
            self.fleet.redis_failed(error)
            lease.unfinished = True
            return True
        lease.completed = True
        self.stats.inc_value("ravel/jobs_failed")
        logger.info(
            f"{FLEET} job {job[:200]!r} failed ({code}): recorded in "
            f"{self.fleet.keys.items if self.fleet.keys else 'the ledger'}; this node carries on"
        )
        return True

    def hook_spider(self, spider: FleetSpider) -> None:
        """Plug the fleet into the spider's hooks: its file entries are read here
        (``file_entry_items``), and each item of a collection that the spider fails alone
        (one ERROR line there, the crawl goes on) is recorded in the ledger: the run then
        ends with it named, and the closing node exits 1."""
        spider.file_entries = partial(file_entry_items, spider=spider)
        spider.many.on_item_failed = self.item_failed

    def item_failed(self, identifier: str, reason: str) -> None:
        try:
            self.ledger.item_failed(identifier, reason)
        except RedisError as exc:
            # Not recorded: the item is listed again by the next run, as unknown to this one.
            self.fleet.redis_failed(exc)
