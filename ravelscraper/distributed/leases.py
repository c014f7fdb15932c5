"""The entries a fleet node holds (its leases) and settling each in Redis once its work is over.

A file entry is acknowledged only together with its outcome in the run's ledger (verified, or
failed with the reason), a page entry once all it produced is queued. Whatever a stopping node
has not finished (a file waiting for its download-delay pause, a transfer cancelled, a page cut
short) goes back to the queue, so a node stopped for any reason loses nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from twisted.internet.threads import deferToThread

from ravelscraper.distributed.entries import CHUNK_META, Chunk
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.queue import describe
from ravelscraper.distributed.schema.ledger import ItemRecord, Outcome
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.items import AudioFile
from ravelscraper.logtags import FLEET
from ravelscraper.pipelines.bookkeeping import counts_toward_item
from ravelscraper.pipelines.records import ItemRecords
from ravelscraper.scrapy_compat import engine_closing, in_progress
from ravelscraper.stores import item_record_store

logger = logging.getLogger(__name__)

STORED = ("downloaded", "uptodate", "unverified")  # FilesPipeline results that count as done


@dataclass
class Lease:
    """An entry this node took from the queue, and what became of it."""

    entry_id: str
    request: Request
    is_file: bool
    chunk: Chunk | None = None  # a file entry's files
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by path, as each file ends
    completed: bool = False  # a page entry whose output is all queued
    unfinished: bool = False  # cut short (the node is stopping): goes back to the queue
    rejected: str | None = None  # a bad entry: recorded in <prefix>:rejected

    def left(self) -> tuple[tuple[Any, ...], ...]:
        """The rows of a file entry's files without an outcome yet."""
        if self.chunk is None:
            return ()
        return tuple(r for r in self.chunk.rows if self.chunk.path(r) not in self.outcomes)

    @property
    def in_hand(self) -> int:
        """Files still to do (a page entry counts as one)."""
        if self.chunk is None:
            return 1
        return len(self.chunk.rows) - len(self.outcomes)


def node_stopping(crawler: Crawler) -> bool:
    """The node is stopping (a signal, a fatal error, the end): whatever is cut short now
    must go back to the queue, not count as done or failed."""
    engine = crawler.engine
    if engine is None:
        return True
    return (
        not engine.running
        or getattr(engine.downloader, "stopping", False)
        or engine_closing(engine)
    )


class Leases:
    """This node's leases, by entry id and by request; the outcomes of file entries come from
    the pipelines' signals."""

    def __init__(self, crawler: Crawler, fleet: Fleet) -> None:
        self.crawler = crawler
        self.fleet = fleet
        self.by_entry: dict[str, Lease] = {}
        self.by_request: dict[Request, Lease] = {}
        self.item_records: ItemRecords | None = None  # once an item is recorded
        # Bumped whenever this node may hold no entry in Redis (it held none, or its leases
        # were taken back): while it is unchanged and a lease is held, the run seen open
        # since is still open (a run closes only once no entry is leased: the FINISH script).
        self.epoch = 0
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.item_not_stored, signal=signals.item_error)
        crawler.signals.connect(self.item_not_stored, signal=signals.item_dropped)

    @property
    def data(self) -> JobData:
        assert self.fleet.data is not None  # leases exist only once the node joined
        return self.fleet.data

    def __len__(self) -> int:
        return len(self.by_entry)

    def in_hand(self) -> int:
        """Files (and pages) this node holds and has not finished: it takes a new entry while
        they are fewer than ``RAVEL_NODE_MAX_LEASES``."""
        return sum(lease.in_hand for lease in self.by_entry.values())

    def take(self, entry_id: str, request: Request, is_file: bool) -> None:
        chunk = request.meta.get(CHUNK_META) if is_file else None
        lease = Lease(entry_id, request, is_file=is_file, chunk=chunk)
        self.by_entry[entry_id] = lease
        self.by_request[request] = lease

    def held_since(self, epoch: int) -> bool:
        """This node has held an entry without a break since ``epoch`` was read: no run could
        close meanwhile."""
        return bool(self.by_entry) and epoch == self.epoch

    def lost(self) -> None:
        """This node was presumed dead: its leases may be another node's now."""
        self.epoch += 1

    def lease_for(self, request: Request | None) -> Lease | None:
        return self.by_request.get(request) if request is not None else None  # type: ignore[arg-type]

    # --- what became of each lease ---------------------------------------------------------

    def entry_rejected(self, request: Request, reason: str) -> None:
        lease = self.lease_for(request)
        if lease is not None:
            lease.rejected = reason

    def unfinished(self, request: Request) -> None:
        lease = self.lease_for(request)
        if lease is not None:
            lease.unfinished = True

    def page_done(self, request: Request) -> None:
        lease = self.lease_for(request)
        if lease is not None:
            lease.completed = True

    def item_scraped(self, item: Any, response: Any, spider: Spider) -> None:
        self.settle_file(item, response, error=None)

    def item_not_stored(self, item: Any, response: Any, spider: Spider, **kwargs: Any) -> None:
        problem = kwargs.get("failure") or kwargs.get("exception")
        value = getattr(problem, "value", problem)
        self.settle_file(item, response, error=describe(value) if value else "dropped")

    def settle_file(self, item: Any, response: Any, error: str | None) -> None:
        """Note the outcome of a file entry's item once the pipelines are done with it."""
        lease = self.lease_for(getattr(response, "request", None))
        if lease is None or not lease.is_file or not isinstance(item, AudioFile):
            return
        path = f"{item.identifier}/{item.name}"
        results = [r for r in item.files or () if isinstance(r, dict)]
        if error is None and any(r.get("status") in STORED for r in results):
            size, recordable = item.size or 0, counts_toward_item(item)
            lease.outcomes[path] = Outcome(path, "verified", "", size, recordable)
            return
        if node_stopping(self.crawler):
            lease.unfinished = True  # cancelled or cut short: another node will do it
            return
        reason = (
            error
            or next((str(r["reason"]) for r in results if r.get("reason")), None)
            or item.error
            or f"not stored (see the log of node {self.fleet.node})"
        )
        lease.outcomes[path] = Outcome(path, "failed", reason, 0, False)

    # --- settling them in Redis ------------------------------------------------------------

    def acknowledge_finished(self) -> None:
        """Settle the leased entries whose processing is over.

        A file entry is acknowledged with its files' outcomes, in one call; a page entry once
        its output is queued; a cut-short entry is handed back (a file entry keeps the files
        not done). An entry whose Redis call fails stays leased, for a later call.
        """
        if not self.by_entry:
            return
        active = in_progress(self.crawler.engine)
        stopping = node_stopping(self.crawler)
        for entry_id, lease in list(self.by_entry.items()):
            if lease.request in active:
                continue
            if lease.rejected is not None:
                self.rejected(entry_id, lease.rejected)
                acked = True
            elif lease.is_file and lease.chunk is not None:
                left = lease.left()
                if left and stopping:
                    continue  # cut short: handed back by hand_back()
                if left and not lease.unfinished:
                    # Its files were read without an item reaching the end of the pipelines.
                    for row in left:
                        path = lease.chunk.path(row)
                        why = "file entry produced no file"
                        lease.outcomes[path] = Outcome(path, "failed", why, 0, False)
                    left = ()
                acked = self.settle(lease, left)
            elif lease.is_file:  # no files were read from it
                if stopping:
                    continue  # handed back by hand_back()
                self.rejected(entry_id, "file entry produced no file")
                acked = True
            elif lease.unfinished:
                if stopping:
                    continue  # handed back by hand_back()
                self.data.nack([entry_id])
                acked = True
            elif lease.completed or not stopping:
                acked = self.data.ack(entry_id)
            else:
                continue  # a page cut short: handed back by hand_back()
            del self.by_entry[entry_id]
            self.by_request.pop(lease.request, None)
            if not self.by_entry:
                self.epoch += 1
            if not acked:
                logger.warning(
                    f"{FLEET} lease of {lease.request.url[:100]!r} was lost (this node missed "
                    "heartbeats for RAVEL_NODE_TTL); another node may process it again"
                )

    def settle(self, lease: Lease, left: tuple[tuple[Any, ...], ...] = ()) -> bool:
        """Record a file entry's outcomes; the files ``left`` go back to the queue."""
        assert lease.chunk is not None
        acked, done = self.data.ledger.settle_entry(
            lease.entry_id,
            lease.chunk.identifier,
            list(lease.outcomes.values()),
            lease.chunk.encode(left) if left else b"",
        )
        if done is not None:
            self.record_item(done)
        return acked

    def rejected(self, entry_id: str, reason: str) -> None:
        """Reject a leased entry; the file or job it is part of fails in the ledger."""
        failed = self.data.reject(entry_id, reason)
        if failed:
            stat = "ravel/files_failed" if failed == "file" else "ravel/jobs_failed"
            self.crawler.stats.inc_value(stat)

    def record_item(self, done: ItemRecord) -> None:
        """This node verified the last file of an item whose every file was verified, by
        whichever node: record the item (``ravelscraper.pipelines.records``), so that a re-run skips
        it while archive.org reports it unchanged. On a store the nodes share, the record
        reads every file's size and mtime; where a file is not in this node's store (per-node
        folders) no record is written and the item is listed again next time."""
        if self.item_records is None:
            self.item_records = ItemRecords.from_settings(
                self.crawler.settings, make_store=item_record_store
            )
        records = self.item_records
        # Off the reactor thread, like the pipeline's: it stats files and fsyncs a record.
        deferToThread(
            records.complete, done.identifier, done.fingerprint, done.selection, done.names
        ).addErrback(lambda failure: logger.warning(f"{FLEET} {failure.getErrorMessage()}"))
        self.crawler.stats.inc_value("ravel/fleet_items_recorded")

    def hand_back(self) -> int:
        """The node stops: every lease left (except rejected entries) goes back to the queue;
        how many did."""
        handed_back, plain = 0, []
        for entry_id, lease in self.by_entry.items():
            if lease.rejected:
                continue
            if lease.chunk is not None and lease.outcomes:  # what is done is settled
                left = lease.left()
                handed_back += self.settle(lease, left) and bool(left)
                continue
            plain.append(entry_id)
        handed_back += self.data.nack(plain)
        self.epoch += 1
        self.by_entry.clear()
        self.by_request.clear()
        return handed_back
