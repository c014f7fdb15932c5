"""The scheduler of a fleet node: Scrapy's ``BaseScheduler`` with scrapy-redis parts inside.

Why not a subclass of ``scrapy_redis.scheduler.Scheduler``: every one of its methods would be
overridden, each because it is a bug or a warning in a fleet (pop for good, "seen" apart from
"queued", flush on close, pickle, a blocking pop, deprecated stats calls). So this is a plain
Scrapy scheduler built from what scrapy-redis does serve: its Redis connection
(``REDIS_URL``, ``REDIS_PARAMS``), its queue class (:class:`ReliableQueue` extends
``scrapy_redis.queue.Base``) and its dupefilter's fingerprints. What it adds:

* entries are leased; a file entry is acknowledged only together with its outcome in the
  run's ledger (verified, or failed with the reason), a page entry once all it produced is
  queued. Whatever a stopping node has not finished (a file waiting for its download-delay
  pause, a transfer cancelled, a page cut short) goes back to the queue, so a node stopped
  for any reason loses nothing;
* "seen" and "queued" happen in one Lua script; closing never flushes the shared keys
  (``SCHEDULER_PERSIST = False`` and ``SCHEDULER_FLUSH_ON_START`` are refused with a warning);
* entries are JSON, checked before use (:mod:`ravelscraper.distributed.serializer`, the only
  ``SCHEDULER_SERIALIZER``); an entry that cannot be decoded is refused in one line and
  recorded in ``<prefix>:rejected``;
* a node holds at most ``RAVEL_NODE_MAX_LEASES`` entries, so work spreads across nodes;
* a job that fails while listed (an unknown item...) fails in the ledger, not the node;
* Redis failing is ridden out, then stops the node (:meth:`Fleet.redis_failed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Self

from redis import RedisError
from scrapy import Request, Spider, signals
from scrapy.core.scheduler import BaseScheduler
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy_redis.dupefilter import RFPDupeFilter
from twisted.python.failure import Failure

from ravelscraper._scrapy_compat import engine_closing, in_progress
from ravelscraper.archive import ItemLocation
from ravelscraper.distributed import serializer
from ravelscraper.distributed.connection import FleetUnavailable
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.queue import ENTRY_META, RejectedEntry, ReliableQueue, describe
from ravelscraper.distributed.schema import JobData
from ravelscraper.distributed.serializer import FILE_ENTRY_CALLBACK
from ravelscraper.downloader import TransferCancelled
from ravelscraper.items import AudioFile
from ravelscraper.stop import report_fatal
from ravelscraper.stores import UnsafeName, safe_relative_path

logger = logging.getLogger(__name__)

MAX_REJECTED_PER_CALL = 20  # bad entries skipped in one next_request() call
OWNER_META = "ravel_owner"  # "file:<path>" of a file entry, set where it is listed
STORED = ("downloaded", "uptodate", "unverified")  # FilesPipeline results that count as done


class FleetDupeFilter(RFPDupeFilter):
    """scrapy-redis's fingerprints, in ``<prefix>:dupefilter``. The queue's push script adds
    them atomically with the entry, so the scheduler never calls ``request_seen``."""

    # scrapy-redis deletes the fingerprints on close: they belong to the whole fleet.
    def close(self, reason: str = "") -> None:
        pass

    # scrapy-redis logs at DEBUG, through the spider: one INFO line says what a fleet means.
    def log(self, request: Request, spider: Spider) -> None:
        if self.debug or self.logdupes:
            logger.info(
                f"[fleet] already queued or done by the fleet in this run: {request.url[:200]!r}"
                + ("" if self.debug else " (further duplicates not shown)")
            )
            self.logdupes = self.debug


@dataclass
class Lease:
    """An entry this node took from the queue, and what became of it."""

    entry_id: str
    request: Request
    is_file: bool
    outcome: tuple[str, str, str, int] | None = None  # (path, verified|failed, reason, size)
    completed: bool = False  # a page entry whose output is all queued
    unfinished: bool = False  # cut short (the node is stopping): goes back to the queue
    rejected: str | None = None  # a bad entry: recorded in <prefix>:rejected


class GuardedErrback:
    """A page entry's errback, run by the fleet: while the node stops, a cancelled download
    goes back to the queue instead of reaching the spider; files an errback lists become
    entries; a job the errback fails fails in the ledger, not the node."""

    def __init__(self, scheduler: RavelScheduler, original: Any) -> None:
        self.scheduler = scheduler
        self.ravel_original = original  # what ReliableQueue queues on a redirect

    def __call__(self, failure: Failure) -> list[Any]:
        request = failure.request  # type: ignore[attr-defined]
        scheduler = self.scheduler
        if scheduler.stopping() or failure.check(TransferCancelled):
            scheduler.unfinished(request)
            return []
        try:
            result = self.ravel_original(failure)
            outputs = [result] if isinstance(result, Request) else list(result or ())
        except Exception as exc:
            if scheduler.job_failed(request, exc):
                return []
            raise
        files = [o for o in outputs if isinstance(o, AudioFile)]
        others = [o for o in outputs if not isinstance(o, AudioFile)]
        others += scheduler.queue_files(files, request)
        scheduler.page_done(request)
        return others


class RavelScheduler(BaseScheduler):
    """``SCHEDULER`` for a fleet (installed by the add-on when ``REDIS_URL`` is set)."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.stats = crawler.stats
        self.fleet = Fleet.of(crawler)
        self.fleet.scheduler = self
        self.df = FleetDupeFilter(None, "", debug=settings.getbool("DUPEFILTER_DEBUG"))
        self.spider: Spider
        self.queue: ReliableQueue
        self.data: JobData
        self.leases: dict[str, Lease] = {}
        self.lease_of: dict[Request, Lease] = {}
        self.unsent: list[Request] = []  # requests to queue once Redis answers again
        self.failed = False  # the node could not join, or gave up on Redis
        if not settings.getbool("SCHEDULER_PERSIST") or settings.getbool(
            "SCHEDULER_FLUSH_ON_START"
        ):
            logger.warning(
                "[fleet] SCHEDULER_PERSIST=False / SCHEDULER_FLUSH_ON_START ignored: the queue is "
                "shared by the fleet; reset a job with `scrapy fleet reset`"
            )
        if settings.get("SCHEDULER_SERIALIZER") not in (serializer.__name__, serializer):
            logger.warning(
                f"[fleet] SCHEDULER_SERIALIZER={settings.get('SCHEDULER_SERIALIZER')!r} ignored:"
                f" fleet entries are always checked JSON ({serializer.__name__})"
            )
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.item_not_stored, signal=signals.item_error)
        crawler.signals.connect(self.item_not_stored, signal=signals.item_dropped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # --- opening and closing ---------------------------------------------------------------

    def open(self, spider: Spider) -> None:
        self.spider = spider
        try:
            self.queue = self.fleet.open(spider, serializer)
            assert self.fleet.data is not None
            self.data = self.fleet.data
            try:
                if not self.fleet.settings.wait_for_work:
                    self.fleet.joined_run(self.data.ledger.open_run())
                state = self.data.snapshot()
            except RedisError as error:
                raise FleetUnavailable(
                    f"Redis at {self.fleet.where} failed while this node joined "
                    f"({type(error).__name__})"
                ) from None
        except FleetUnavailable as exc:
            # Raising here would skip opening the pipelines (and fail their closing): the
            # extension's spider_opened raises CloseSpider("redis_unavailable") instead.
            self.fleet.error = f"[fleet] {exc}"
            report_fatal(self.crawler, self.fleet.error)
            self.failed = True
            return
        keys = self.data.keys
        self.df.server, self.df.key = self.data.client, keys.dupefilter
        logger.info(
            f"[fleet] node {self.fleet.node} joined {self.fleet.where}, keys {keys.prefix}:*"
            f" ({state['queued']} entries queued, {state['inflight']} being worked on, "
            f"{state['live_nodes']} live nodes)"
        )

    def close(self, reason: str) -> None:
        if not self.fleet.connected or self.failed:
            return
        held = len(self.leases)
        try:
            self.acknowledge_finished()
            back = [e for e, lease in self.leases.items() if not lease.rejected]
            handed_back = self.data.nack(back)
            if handed_back:
                logger.info(f"[fleet] handed {handed_back} unfinished entries back to the queue")
            self.leases.clear()
            self.lease_of.clear()
            self.data.leave()
        except RedisError as exc:
            logger.warning(
                f"[fleet] could not sign off from Redis ({type(exc).__name__}); "
                "other nodes will take this node's entries after RAVEL_NODE_TTL"
            )
            return
        if reason == "shutdown" and not held and self.fleet.settings.wait_for_work:
            # A waiting node stopped by a signal while it held no work: a normal stop.
            self.stats.set_value("ravel/fleet_clean_stop", 1)
        if reason == "shutdown" and handed_back:
            self.stats.set_value("ravel/entries_handed_back", handed_back)

    # --- queueing --------------------------------------------------------------------------

    def enqueue_request(self, request: Request) -> bool:
        if self.out_of_service:
            return False
        fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
        owner = owner_of(request)
        try:
            if owner.startswith("item:"):  # a job: it belongs to an open run
                self.fleet.joined_run(self.data.ledger.open_run())
            pushed = self.queue.push(request, fingerprint, owner)
        except RedisError as exc:
            if self.fleet.redis_failed(exc):
                return False
            # Kept here, and the entry that produced it stays leased, until Redis is back.
            self.unsent.append(request)
            return True
        except Exception as exc:  # BadEntry, or a request that can't be JSON
            logger.error(f"[fleet] cannot queue {request.url[:200]!r}: {exc}")
            return False
        if not pushed:
            self.df.log(request, self.spider)
            return False
        self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def next_request(self) -> Request | None:
        try:
            self.push_unsent()
            self.acknowledge_finished()
            self.fleet.recovered()
            for _ in range(MAX_REJECTED_PER_CALL):
                if self.out_of_service or len(self.leases) >= self.fleet.settings.max_leases:
                    return None
                if self.stopping():
                    return None
                try:
                    request = self.queue.pop()
                except RejectedEntry as bad:
                    self.reject(bad.entry_id, bad.reason)
                    continue
                if request is None:
                    return None
                entry_id = request.meta[ENTRY_META]
                if request.errback is not None:
                    request.errback = GuardedErrback(self, request.errback)
                lease = Lease(entry_id, request, is_file=request.callback == self.file_callback)
                self.leases[entry_id] = lease
                self.lease_of[request] = lease
                self.stats.inc_value("scheduler/dequeued/redis")
                return request
        except RedisError as exc:
            self.fleet.redis_failed(exc)
        return None

    @property
    def out_of_service(self) -> bool:
        """The node could not join, or gave up on Redis: it queues and takes nothing."""
        return self.failed or self.fleet.stopped

    @property
    def file_callback(self) -> Any:
        return getattr(self.spider, FILE_ENTRY_CALLBACK, None)

    def has_pending_requests(self) -> bool:
        if self.out_of_service:
            return False
        try:
            return bool(self.unsent) or len(self.queue) > 0
        except RedisError as exc:
            self.fleet.redis_failed(exc)
            return False

    def push_unsent(self) -> None:
        """Queue the requests kept while Redis was away (raises RedisError if it still is)."""
        while self.unsent:
            request = self.unsent[0]
            fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
            self.queue.push(request, fingerprint, owner_of(request))
            self.unsent.pop(0)

    # --- what became of each lease ---------------------------------------------------------

    def stopping(self) -> bool:
        """The node is stopping (a signal, a fatal error, the end): whatever is cut short now
        must go back to the queue, not count as done or failed."""
        engine = self.crawler.engine
        if engine is None:
            return True
        return (
            not engine.running
            or getattr(engine.downloader, "stopping", False)
            or engine_closing(engine)
        )

    def acknowledge_finished(self) -> None:
        """Settle the leased entries whose processing is over.

        A file entry is acknowledged with its outcome; a page entry once its output is
        queued; a cut-short entry is handed back. Not while requests they produced wait in
        ``unsent``. An entry whose Redis call fails stays leased, for a later call.
        """
        if not self.leases or self.unsent:
            return
        active = in_progress(self.crawler.engine)
        stopping = self.stopping()
        for entry_id, lease in list(self.leases.items()):
            if lease.request in active:
                continue
            if lease.rejected is not None:
                self.data.reject(entry_id, lease.rejected)
                acked = True
            elif lease.unfinished:
                if stopping:
                    continue  # handed back by close()
                self.data.nack([entry_id])
                acked = True
            elif lease.outcome is not None:
                path, outcome, reason, size = lease.outcome
                acked = self.data.ledger.complete(entry_id, path, outcome, reason, size)
            elif lease.is_file:
                if stopping:
                    continue  # cut short: handed back by close()
                # Its record was consumed without an item reaching the end of the pipelines.
                self.data.reject(entry_id, "file entry produced no file")
                acked = True
            elif lease.completed or not stopping:
                acked = self.data.ack(entry_id)
            else:
                continue  # a page cut short: handed back by close()
            del self.leases[entry_id]
            self.lease_of.pop(lease.request, None)
            if not acked:
                logger.warning(
                    f"[fleet] lease of {lease.request.url[:100]!r} was lost (this node missed "
                    "heartbeats for RAVEL_NODE_TTL); another node may process it again"
                )

    def lease_for(self, request: Request | None) -> Lease | None:
        return self.lease_of.get(request) if request is not None else None  # type: ignore[arg-type]

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
            lease.outcome = (path, "verified", "", item.size or 0)
            return
        if self.stopping():
            lease.unfinished = True  # cancelled or cut short: another node will do it
            return
        reason = (
            error
            or next((str(r["reason"]) for r in results if r.get("reason")), None)
            or item.error
            or f"not stored (see the log of node {self.fleet.node})"
        )
        lease.outcome = (path, "failed", reason, 0)

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

    def job_failed(self, request: Request, exc: Exception) -> bool:
        """A page entry's callback stopped its job (``RavelSpider.fail`` raises CloseSpider)
        or crashed: record the job as failed in the ledger and keep the node serving.
        False if this is no fleet job."""
        lease = self.lease_for(request)
        location = request.cb_kwargs.get("item")
        if lease is None or not isinstance(location, ItemLocation):
            return False
        if isinstance(exc, CloseSpider):
            message = str(self.stats.get_value("ravel/error") or exc.reason or "failed")
            code = exc.reason
        else:  # a bug or a malformed answer: one line, not a traceback
            message = f"cannot list {location.identifier!r}: {describe(exc)}"
            code = type(exc).__name__
            logger.error(f"[fleet] {message}")
        try:
            self.data.ledger.item_failed(location.identifier, message)
        except RedisError as error:
            self.fleet.redis_failed(error)
            lease.unfinished = True
            return True
        lease.completed = True
        self.stats.inc_value("ravel/jobs_failed")
        logger.info(
            f"[fleet] job {location.identifier!r} failed ({code}): recorded in "
            f"{self.fleet.keys.items if self.fleet.keys else 'the ledger'}; this node carries on"
        )
        return True

    def queue_files(self, files: list[AudioFile], request: Request | None) -> list[Request]:
        """The entries of files listed on this node, after putting them in the ledger.

        Names a single node would refuse (unsafe, or differing only in case from another
        file of the job, fleet-wide) fail here, in the ledger, and are not queued.
        """
        from ravelscraper.distributed.entries import entry_request

        if not files:
            return []
        by_item: dict[str, list[AudioFile]] = {}
        for item in files:
            by_item.setdefault(item.identifier, []).append(item)
        requests: list[Request] = []
        try:
            for identifier, group in by_item.items():
                listed = [(f"{f.identifier}/{f.name}", f) for f in group]
                refused = dict(
                    self.data.ledger.list_files(
                        identifier, [(p, p.casefold(), f.size or 0) for p, f in listed]
                    )
                )
                for path, item in listed:
                    if path in refused:
                        self.file_refused(item, f"it differs only in case from {refused[path]!r}")
                        continue
                    try:
                        safe_relative_path(item.identifier, item.name)
                        entry = entry_request(item, self.spider)
                    except UnsafeName as exc:
                        self.file_refused(item, str(exc), path)
                        continue
                    except Exception as exc:  # one file's problem, not the job's
                        self.file_refused(item, f"cannot queue it ({describe(exc)})", path)
                        continue
                    entry.meta[OWNER_META] = f"file:{path}"
                    requests.append(entry)
        except RedisError as exc:
            # The page entry stays leased and goes back to the queue: it is listed again.
            self.fleet.redis_failed(exc)
            if request is not None:
                self.unfinished(request)
            return []
        self.stats.inc_value("ravel/entries_queued", len(requests))
        return requests

    def file_refused(self, item: AudioFile, why: str, path: str | None = None) -> None:
        """A listed file a single node would refuse: failed, with one ERROR line."""
        reason = f"refused the name: {why}"
        if path is not None:
            self.data.ledger.complete("", path, "failed", reason)
        self.stats.inc_value("ravel/files_failed")
        logger.error(f"[download failed] {item.name!r}: {reason}")

    def reject(self, entry_id: str, reason: str) -> None:
        logger.error(f"[fleet] rejected queue entry {entry_id[:40]!r}: {reason}")
        self.stats.inc_value("ravel/entries_rejected")
        self.data.reject(entry_id, reason)


def owner_of(request: Request) -> str:
    """What the ledger fails if this entry is ever given up: its file, or its item."""
    owner = request.meta.get(OWNER_META)
    if isinstance(owner, str):
        return owner
    location = request.cb_kwargs.get("item")
    return f"item:{location.identifier}" if isinstance(location, ItemLocation) else ""
