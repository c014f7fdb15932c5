"""scrapy-redis's scheduler and dupefilter, made safe for a fleet on Scrapy 2.19.

Differences from ``scrapy_redis.scheduler.Scheduler`` (each one a bug or a warning there):

* entries are leased from a :class:`ReliableQueue`; a file entry is acknowledged only
  together with its outcome in the run's ledger (verified, or failed with the reason), a page
  entry once all it produced is queued. Whatever a stopping node has not finished (a file
  waiting for its download-delay pause, a transfer cancelled, a page cut short) goes back to
  the queue, so a node stopped for any reason loses nothing;
* "seen" and "queued" happen in one Lua script; closing never flushes the shared keys
  (``SCHEDULER_PERSIST = False`` and ``SCHEDULER_FLUSH_ON_START`` are refused with a warning);
* entries are JSON, checked before use (:mod:`ravelscraper.distributed.serializer`); any
  entry that cannot be decoded is refused in one line and recorded in ``<prefix>:rejected``;
* a node holds at most ``RAVEL_NODE_MAX_LEASES`` entries, so work spreads across nodes;
* a job that fails while listed (an unknown item...) fails in the ledger, not the node;
* no blocking pop, no ping in ``from_crawler``: an unusable Redis is one ERROR line and a
  close with reason ``redis_unavailable``; stats and logging without deprecated calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Self

from redis import RedisError
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import deferred_from_coro
from scrapy_redis.dupefilter import RFPDupeFilter
from scrapy_redis.scheduler import Scheduler
from twisted.python.failure import Failure

from ravelscraper.archive import ItemLocation
from ravelscraper.distributed import serializer
from ravelscraper.distributed.connection import FleetUnavailable
from ravelscraper.distributed.fleet import Fleet, is_wrong_type
from ravelscraper.distributed.queue import ReliableQueue
from ravelscraper.distributed.serializer import FILE_ENTRY_CALLBACK, AllowedOrigins, decode
from ravelscraper.downloader import TransferCancelled
from ravelscraper.items import AudioFile
from ravelscraper.stores import UnsafeName, safe_relative_path

logger = logging.getLogger(__name__)

MAX_REJECTED_PER_CALL = 20  # bad entries skipped in one next_request() call
OWNER_META = "ravel_owner"  # "file:<path>" of a file entry, set where it is listed
STORED = ("downloaded", "uptodate", "unverified")  # FilesPipeline results that count as done


class RavelDupeFilter(RFPDupeFilter):
    """Fingerprints for the queue's atomic push; never cleared by a closing node."""

    def __init__(self, server: Any = None, key: str = "", debug: bool = False) -> None:
        super().__init__(server, key, debug)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(debug=crawler.settings.getbool("DUPEFILTER_DEBUG"))

    def request_seen(self, request: Request) -> bool:
        raise NotImplementedError("RavelScheduler checks fingerprints inside its queue's push")

    def close(self, reason: str = "") -> None:
        """Nothing: the fingerprints belong to the whole fleet."""

    def log(self, request: Request, spider: Spider) -> None:
        if self.debug or self.logdupes:
            logger.info(
                f"[fleet] already queued or done by the fleet in this run: {request.url[:200]!r}"
                + ("" if self.debug else " (further duplicates not shown)")
            )
            self.logdupes = self.debug


def in_progress(engine: Any) -> set[Request]:
    """Requests the engine is still working on: downloading, in callbacks or in pipelines.

    A request leaves this set only after its callback's output was handled: child requests
    queued, items through the pipelines (the file stored). Scrapy has no public signal for
    that moment; the engine's slot is where it tracks it.
    """
    slot = getattr(engine, "_slot", None)
    return getattr(slot, "inprogress", set()) if slot is not None else set()


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


class RavelScheduler(Scheduler):
    """``SCHEDULER`` for a fleet (installed by the add-on when ``REDIS_URL`` is set)."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        super().__init__(
            server=None,
            persist=True,
            flush_on_start=False,
            queue_key="%(spider)s:requests",
            queue_cls=f"{ReliableQueue.__module__}.{ReliableQueue.__qualname__}",
            dupefilter=RavelDupeFilter.from_crawler(crawler),
            serializer=serializer,
        )
        self.crawler = crawler
        self.stats = crawler.stats
        self.fleet = Fleet.of(crawler)
        self.fleet.scheduler = self
        self.leases: dict[str, Lease] = {}
        self.lease_of: dict[Request, Lease] = {}
        self.unsent: list[Request] = []  # requests to queue once Redis answers again
        self.origins = AllowedOrigins([])
        self.failed = False
        if not settings.getbool("SCHEDULER_PERSIST", True) or settings.getbool(
            "SCHEDULER_FLUSH_ON_START"
        ):
            logger.warning(
                "[fleet] SCHEDULER_PERSIST=False / SCHEDULER_FLUSH_ON_START ignored: the queue is "
                "shared by the fleet; reset a job with `scrapy fleet reset`"
            )
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.item_not_stored, signal=signals.item_error)
        crawler.signals.connect(self.item_not_stored, signal=signals.item_dropped)

    @classmethod
    def from_settings(cls, settings: Any) -> Self:
        raise TypeError("RavelScheduler needs a crawler: use from_crawler()")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # --- opening and closing ---------------------------------------------------------------

    def open(self, spider: Spider) -> None:
        self.spider = spider
        try:
            self.queue = self.fleet.open(spider, self.serializer)
            try:
                if not self.fleet.settings.wait_for_work:
                    self.fleet.joined_run(self.queue.open_run())
                state = self.queue.snapshot()
            except RedisError as error:
                raise FleetUnavailable(
                    f"Redis at {self.fleet.where} failed while this node joined "
                    f"({type(error).__name__})"
                ) from None
        except FleetUnavailable as exc:
            # Raising here would skip opening the pipelines (and fail their closing): the
            # extension's spider_opened raises CloseSpider("redis_unavailable") instead.
            self.fleet.error = f"[fleet] {exc}"
            logger.error(self.fleet.error)
            self.stats.set_value("ravel/error", self.fleet.error)
            self.failed = True
            return
        self.server = self.fleet.client
        keys = self.fleet.keys
        assert keys is not None
        self.df.server, self.df.key = self.server, keys.dupefilter
        self.origins = AllowedOrigins.for_spider(spider)
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
            handed_back = self.queue.nack(back)
            if handed_back:
                logger.info(f"[fleet] handed {handed_back} unfinished entries back to the queue")
            self.leases.clear()
            self.lease_of.clear()
            self.queue.leave()
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
        if self.failed:
            return False
        fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
        owner = owner_of(request)
        try:
            if owner.startswith("item:"):  # a job: it belongs to an open run
                self.fleet.joined_run(self.queue.open_run())
            pushed = self.queue.push(request, fingerprint, owner)
        except RedisError as exc:
            if self.fleet.trouble(exc):
                self.redis_failed(exc)
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
                if self.failed or len(self.leases) >= self.fleet.settings.max_leases:
                    return None
                if self.stopping():
                    return None
                popped = self.queue.pop()
                if popped is None:
                    return None
                entry_id, payload = popped
                if isinstance(payload, int):
                    self.reject(entry_id, f"entry of {payload} bytes is larger than the limit")
                    continue
                try:
                    request = decode(payload, self.spider, self.origins)
                except Exception as exc:  # any bad entry: one line, never a crash
                    self.reject(entry_id, describe(exc))
                    continue
                if request.errback is not None:
                    request.errback = GuardedErrback(self, request.errback)
                lease = Lease(entry_id, request, is_file=request.callback == self.file_callback)
                self.leases[entry_id] = lease
                self.lease_of[request] = lease
                self.stats.inc_value("scheduler/dequeued/redis")
                return request
        except RedisError as exc:
            if self.fleet.trouble(exc):
                self.redis_failed(exc)
        return None

    @property
    def file_callback(self) -> Any:
        return getattr(self.spider, FILE_ENTRY_CALLBACK, None)

    def has_pending_requests(self) -> bool:
        if self.failed:
            return False
        try:
            return bool(self.unsent) or len(self.queue) > 0
        except RedisError as exc:
            if self.fleet.trouble(exc):
                self.redis_failed(exc)
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
        slot = getattr(engine, "_slot", None)
        return (
            not engine.running
            or getattr(engine.downloader, "stopping", False)
            or (slot is not None and slot.closing is not None)
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
                self.queue.reject(entry_id, lease.rejected)
                acked = True
            elif lease.unfinished:
                if stopping:
                    continue  # handed back by close()
                self.queue.nack([entry_id])
                acked = True
            elif lease.outcome is not None:
                path, outcome, reason, size = lease.outcome
                acked = self.queue.complete(entry_id, path, outcome, reason, size)
            elif lease.is_file:
                if stopping:
                    continue  # cut short: handed back by close()
                # Its record was consumed without an item reaching the end of the pipelines.
                self.queue.reject(entry_id, "file entry produced no file")
                acked = True
            elif lease.completed or not stopping:
                acked = self.queue.ack(entry_id)
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
            self.queue.item_failed(location.identifier, message)
        except RedisError as error:
            self.fleet.trouble(error)
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
                    self.queue.list_files(
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
            self.fleet.trouble(exc)
            if request is not None:
                self.unfinished(request)
            return []
        self.stats.inc_value("ravel/entries_queued", len(requests))
        return requests

    def file_refused(self, item: AudioFile, why: str, path: str | None = None) -> None:
        """A listed file a single node would refuse: failed, with one ERROR line."""
        reason = f"refused the name: {why}"
        if path is not None:
            self.queue.complete("", path, "failed", reason)
        self.stats.inc_value("ravel/files_failed")
        logger.error(f"[download failed] {item.name!r}: {reason}")

    def reject(self, entry_id: str, reason: str) -> None:
        logger.error(f"[fleet] rejected queue entry {entry_id[:40]!r}: {reason}")
        self.stats.inc_value("ravel/entries_rejected")
        self.queue.reject(entry_id, reason)

    def redis_failed(self, exc: Exception) -> None:
        """Redis failed for longer than RAVEL_REDIS_GRACE: stop; leases go to others later."""
        if self.failed:
            return
        self.failed = True
        if is_wrong_type(exc):
            message = (
                "[fleet] a key of the job has the wrong Redis type (WRONGTYPE): another program "
                "uses this prefix or it was written by hand; `scrapy fleet reset` clears it; "
                "stopping"
            )
        else:
            message = (
                f"[fleet] lost Redis at {self.fleet.where} for "
                f"{self.fleet.settings.redis_grace:.0f} s ({type(exc).__name__}); stopping"
            )
        logger.error(message)
        self.stats.set_value("ravel/error", message)
        deferred_from_coro(self.crawler.engine.close_spider_async(reason="redis_unavailable"))


def owner_of(request: Request) -> str:
    """What the ledger fails if this entry is ever given up: its file, or its item."""
    owner = request.meta.get(OWNER_META)
    if isinstance(owner, str):
        return owner
    location = request.cb_kwargs.get("item")
    return f"item:{location.identifier}" if isinstance(location, ItemLocation) else ""


def describe(exc: BaseException) -> str:
    """An exception as one short line (the message of ours, the type of anything else)."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, ValueError) and type(exc).__module__.startswith("ravelscraper"):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
