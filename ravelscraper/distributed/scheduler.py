"""The scheduler of a fleet node: Scrapy's ``BaseScheduler`` with scrapy-redis parts inside.

Why not a subclass of ``scrapy_redis.scheduler.Scheduler``: every one of its methods would be
overridden, each because it is a bug or a warning in a fleet (pop for good, "seen" apart from
"queued", flush on close, pickle, a blocking pop, deprecated stats calls). So this is a plain
Scrapy scheduler built from what scrapy-redis does serve: its Redis connection
(``REDIS_URL``, ``REDIS_PARAMS``), its queue class (:class:`ReliableQueue` extends
``scrapy_redis.queue.Base``) and its dupefilter's fingerprints. What it adds:

* entries are leased, and settled in the run's ledger by :mod:`.leases`: a node stopped for
  any reason loses nothing;
* "seen" and "queued" happen in one Lua script; closing never flushes the shared keys
  (``SCHEDULER_PERSIST = False`` and ``SCHEDULER_FLUSH_ON_START`` are refused with a warning);
* entries are JSON, checked before use (:mod:`ravelscraper.distributed.serializer`, the only
  ``SCHEDULER_SERIALIZER``); an entry that cannot be decoded is refused in one line and
  recorded in ``<prefix>:rejected``;
* a node holds at most ``RAVEL_NODE_MAX_LEASES`` entries, so work spreads across nodes;
* the files of a listed item enter the ledger and the queue, and a job that fails while listed
  (an unknown item...) fails in the ledger, not the node (:mod:`.jobs`);
* Redis failing is ridden out, then stops the node (:meth:`Fleet.redis_failed`).
"""

from __future__ import annotations

import logging
from typing import Any, Self

from redis import RedisError
from scrapy import Request, Spider
from scrapy.core.scheduler import BaseScheduler
from scrapy.crawler import Crawler
from scrapy_redis.dupefilter import RFPDupeFilter
from twisted.python.failure import Failure

from ravelscraper.distributed import serializer
from ravelscraper.distributed.connection import FleetUnavailable
from ravelscraper.distributed.fleet import Fleet
from ravelscraper.distributed.jobs import JobListing, owner_of
from ravelscraper.distributed.leases import Leases, node_stopping
from ravelscraper.distributed.queue import ENTRY_META, RejectedEntry, ReliableQueue
from ravelscraper.distributed.schema.queue import JobData, NodeSample
from ravelscraper.distributed.serializer import FILE_ENTRY_CALLBACK
from ravelscraper.downloader import TransferCancelled
from ravelscraper.items import AudioFile
from ravelscraper.logtags import FLEET
from ravelscraper.stop import report_fatal

logger = logging.getLogger(__name__)

MAX_REJECTED_PER_CALL = 20  # bad entries skipped in one next_request() call


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
                f"{FLEET} already queued or done by the fleet in this run: {request.url[:200]!r}"
                + ("" if self.debug else " (further duplicates not shown)")
            )
            self.logdupes = self.debug


class GuardedErrback:
    """A page entry's errback, run by the fleet: while the node stops, a cancelled download
    goes back to the queue instead of reaching the spider; files an errback lists become
    entries; a job the errback fails fails in the ledger, not the node."""

    def __init__(self, scheduler: RavelScheduler, original: Any) -> None:
        self.scheduler = scheduler
        self.ravel_original = original  # what ReliableQueue queues on a redirect

    def __call__(self, failure: Failure) -> list[Any]:
        request = failure.request  # type: ignore[attr-defined]
        leases, jobs = self.scheduler.leases, self.scheduler.jobs
        if node_stopping(self.scheduler.crawler) or failure.check(TransferCancelled):
            leases.unfinished(request)
            return []
        try:
            result = self.ravel_original(failure)
            outputs = [result] if isinstance(result, Request) else list(result or ())
        except Exception as exc:
            if jobs.job_failed(request, exc):
                return []
            raise
        files = [o for o in outputs if isinstance(o, AudioFile) and not o.failed_item]
        others = [o for o in outputs if not isinstance(o, AudioFile) or o.failed_item]
        others += jobs.queue_files(files, request)
        leases.page_done(request)
        return others


def ignored_settings(settings: Any) -> list[str]:
    """A warning for each scrapy-redis scheduler setting the user set to what a fleet can't do
    (nothing is said of a setting left unset: the fleet's behaviour is the only one)."""
    warnings = []
    persist = settings.get("SCHEDULER_PERSIST")
    if (persist is not None and not settings.getbool("SCHEDULER_PERSIST")) or settings.getbool(
        "SCHEDULER_FLUSH_ON_START"
    ):
        warnings.append(
            f"{FLEET} SCHEDULER_PERSIST=False / SCHEDULER_FLUSH_ON_START ignored: the queue is "
            "shared by the fleet; reset a job with `scrapy fleet reset`"
        )
    chosen = settings.get("SCHEDULER_SERIALIZER")
    if chosen is not None and chosen not in (serializer.__name__, serializer):
        warnings.append(
            f"{FLEET} SCHEDULER_SERIALIZER={chosen!r} ignored:"
            f" fleet entries are always checked JSON ({serializer.__name__})"
        )
    return warnings


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
        self.leases = Leases(crawler, self.fleet)
        self.jobs = JobListing(crawler, self.fleet, self.leases)
        self.unsent: list[Request] = []  # requests to queue once Redis answers again
        self.failed = False  # the node could not join, or gave up on Redis
        self.run_epoch: int | None = None  # Leases.epoch when the run was last seen open
        for warning in ignored_settings(settings):
            logger.warning(warning)

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
                    self.fleet.joined_run(*self.data.ledger.open_run())
                state = self.data.snapshot()
            except RedisError as error:
                raise FleetUnavailable(
                    f"Redis at {self.fleet.where} failed while this node joined "
                    f"({type(error).__name__})"
                ) from None
        except FleetUnavailable as exc:
            # Raising here would skip opening the pipelines (and fail their closing): the
            # extension's spider_opened stops the crawl with this line (stop.fatal) instead.
            self.fleet.error = f"{FLEET} {exc}"
            self.failed = True
            return
        keys = self.data.keys
        self.jobs.hook_spider(self.fleet.spider)
        self.df.server, self.df.key = self.data.client, keys.dupefilter
        logger.info(
            f"{FLEET} node {self.fleet.node} joined {self.fleet.where}, keys {keys.prefix}:*"
            f" ({state['queued']} entries queued, {state['inflight']} being worked on, "
            f"{state['live_nodes']} live nodes)"
        )

    def close(self, reason: str) -> None:
        if not self.fleet.connected or self.failed:
            return
        held, unqueued = len(self.leases), len(self.unsent)
        if unqueued and not self.fleet.stopped:
            # Work Redis refused to queue is dropped with this node: never a clean stop. Where
            # it came from (a start URL, a leased page entry) stays in Redis.
            report_fatal(
                self.crawler,
                f"{FLEET} stopping with {unqueued} requests Redis could not queue (it refused "
                "them); they are dropped here, and the start URL or page they came from stays "
                "in Redis for another node or a re-run",
            )
        try:
            self.acknowledge_finished()
            handed_back = self.leases.hand_back()
            if handed_back:
                logger.info(f"{FLEET} handed {handed_back} unfinished entries back to the queue")
            self.data.leave(NodeSample.of(self.stats))
        except RedisError as exc:
            logger.warning(
                f"{FLEET} could not sign off from Redis ({type(exc).__name__}); "
                "other nodes will take this node's entries after RAVEL_NODE_TTL"
            )
            return
        if reason == "shutdown" and not held and not unqueued and self.fleet.settings.wait_for_work:
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
                self.open_run()
            pushed = self.queue.push(request, fingerprint, owner)
        except RedisError as exc:
            if self.fleet.redis_failed(exc):
                return False
            # Kept here, and the entry that produced it stays leased, until Redis is back.
            self.unsent.append(request)
            return True
        except Exception as exc:  # BadEntry, or a request that can't be JSON
            logger.error(f"{FLEET} cannot queue {request.url[:200]!r}: {exc}")
            return False
        if not pushed:
            self.df.log(request, self.spider)
            return False
        self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def open_run(self) -> None:
        """Open the run, or join the open one; skipped while this node has held an entry
        since it last saw the run open (one script per item listed less)."""
        if self.run_epoch is not None and self.leases.held_since(self.run_epoch):
            return
        epoch = self.leases.epoch
        self.fleet.joined_run(*self.data.ledger.open_run())
        self.run_epoch = epoch

    def next_request(self) -> Request | None:
        try:
            pushed = self.push_unsent()
            self.acknowledge_finished()
            self.fleet.recovered(wrote=pushed > 0)
            for _ in range(MAX_REJECTED_PER_CALL):
                if self.out_of_service or self.leases.in_hand() >= self.fleet.settings.max_leases:
                    return None
                if node_stopping(self.crawler):
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
                self.leases.take(entry_id, request, is_file=request.callback == self.file_callback)
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

    def push_unsent(self) -> int:
        """Queue the requests kept while Redis was away (raises RedisError if it still is);
        how many were."""
        pushed = 0
        while self.unsent:
            request = self.unsent[0]
            fingerprint = None if request.dont_filter else self.df.request_fingerprint(request)
            self.queue.push(request, fingerprint, owner_of(request))
            self.unsent.pop(0)
            pushed += 1
        return pushed

    def acknowledge_finished(self) -> None:
        """Settle the leases whose work is over; not while requests they produced wait in
        ``unsent`` (they would be lost with a page entry acknowledged)."""
        if not self.unsent:
            self.leases.acknowledge_finished()

    def reject(self, entry_id: str, reason: str) -> None:
        logger.error(f"{FLEET} rejected queue entry {entry_id[:40]!r}: {reason}")
        self.stats.inc_value("ravel/entries_rejected")
        failed = self.data.reject(entry_id, reason)
        if failed:  # an entry of the run's work: its file or job failed in the ledger
            self.stats.inc_value("ravel/files_failed" if failed == "file" else "ravel/jobs_failed")
