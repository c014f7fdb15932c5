"""The node's part in the fleet: heartbeats, reclaiming dead nodes' entries, taking start URLs
(:mod:`.starturls`) on each tick, and stopping only when the whole fleet has no work left.

Scrapy closes an idle spider; in a fleet a node is idle whenever the shared queue is empty
for a moment, even though other nodes are still listing or downloading. So on ``spider_idle``
this extension raises ``DontCloseSpider`` until, in one atomic snapshot, nothing is queued,
nothing is leased by any node, no start URL waits, and the fleet has been quiet for
``RAVEL_IDLE_QUIET`` seconds. The engine checks idleness only every 5 s; a tick
(``RAVEL_FLEET_TICK``, 1 s) wakes it, so nodes join, and stop, promptly.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any, Self

from redis import RedisError
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.asyncio import create_looping_call

from ravelscraper.distributed.fleet import REDIS_UNAVAILABLE, Fleet
from ravelscraper.distributed.schema.queue import JobData, NodeSample
from ravelscraper.distributed.starturls import StartUrlFeed
from ravelscraper.logtags import FLEET
from ravelscraper.scrapy_compat import engine_closing, wake_engine
from ravelscraper.stop import fatal, stop_crawl

logger = logging.getLogger(__name__)


class FleetCoordinator:
    """Extension installed by the add-on when ``REDIS_URL`` is set."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.fleet = Fleet.of(crawler)
        self.loop: Any = None
        self.last_heartbeat = 0.0
        self.closed = False
        self.start_urls = StartUrlFeed(crawler, self.fleet)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        extension = cls(crawler)
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self, spider: Spider) -> None:
        if self.fleet.error:  # the scheduler could not join: stop with its one line
            raise fatal(self.crawler, REDIS_UNAVAILABLE, self.fleet.error)
        if not self.fleet.connected:
            return
        self.last_heartbeat = monotonic()
        self.loop = create_looping_call(self.tick)
        self.loop.start(self.fleet.settings.tick, now=False)

    def spider_closed(self, spider: Spider, reason: str) -> None:
        self.closed = True
        if self.loop is not None and self.loop.running:
            self.loop.stop()

    @property
    def data(self) -> JobData:
        assert self.fleet.data is not None  # connected: the coordinator runs
        return self.fleet.data

    def tick(self) -> None:
        """Heartbeat and reclaim every ``RAVEL_HEARTBEAT`` s; start URLs; the fleet's totals for
        the progress lines; wake the engine."""
        engine = self.crawler.engine
        if self.closed or engine_closing(engine):
            return
        try:
            state = None
            if monotonic() - self.last_heartbeat >= self.fleet.settings.heartbeat:
                state = self.heartbeat()
                if self.closed:
                    return
                self.fleet.recovered(wrote=True)  # the heartbeat writes
            if self.start_urls.take() or state is None:
                state = self.data.snapshot()
            self.publish(state)
            self.fleet.recovered()  # reads: the end of an outage, unless writes were refused
        except RedisError as exc:
            if self.fleet.redis_failed(exc):
                self.closed = True
                return
        wake_engine(engine)

    def heartbeat(self) -> dict[str, int]:
        """Heartbeat, reclaim and check the data: the job's snapshot read for it."""
        data, settings = self.data, self.fleet.settings
        self.last_heartbeat = monotonic()
        if data.heartbeat(int(settings.node_ttl * 1000), NodeSample.of(self.crawler.stats)):
            if self.fleet.scheduler is not None:
                self.fleet.scheduler.leases.lost()
            logger.warning(
                f"{FLEET} this node had been presumed dead (no heartbeat for RAVEL_NODE_TTL); "
                "its entries went to other nodes"
            )
        for renew in self.fleet.on_heartbeat:
            renew()
        moved, dead = data.reclaim(settings.max_attempts)
        if moved:
            logger.warning(f"{FLEET} requeued {moved} entries of nodes that stopped heart-beating")
        if dead:
            logger.error(
                f"{FLEET} gave up {dead} entries after {settings.max_attempts} nodes stopped "
                "holding them: their files fail; see `scrapy fleet status`"
            )
        state = data.snapshot()
        self.data_lost(state)
        return state

    def data_lost(self, state: dict[str, int]) -> bool:
        """The ledger of the runs this node saw has vanished, or another took its place (its
        token differs: run ids start again at 1 after a FLUSHDB, tokens never repeat): Redis
        lost the fleet's data. Stops the node."""
        token = self.data.ledger.token()
        if not self.fleet.ledger_seen or token == self.fleet.ledger_seen:
            self.fleet.joined_run(state["run"], token)
            return False
        now = f"run {state['run']} is another" if token else "there is no run"
        self.fleet_lost(
            f"{FLEET} the fleet's data in Redis is gone (run {self.fleet.run_seen}, which this "
            f"node worked on, no longer exists; {now}: FLUSHDB, `scrapy fleet reset --force`, "
            "or a Redis restarted without persistence); stopping: files of this run may be "
            "missing, run the job again"
        )
        return True

    def publish(self, state: dict[str, int]) -> None:
        """The fleet's totals, for the progress lines (ravelscraper.extensions.progress)."""
        stats = self.crawler.stats
        stats.set_value("ravel/fleet_files_total", state["listed"])
        stats.set_value("ravel/fleet_files_done", state["verified"] + state["failed"])
        stats.set_value("ravel/fleet_files_failed", state["failed"])
        stats.set_value("ravel/fleet_bytes_total", state["bytes_listed"])
        stats.set_value("ravel/fleet_bytes_done", state["bytes_verified"])

    def spider_idle(self, spider: Spider) -> None:
        """Keep the node open while the fleet has work; let it close once it has none.

        The node that finds the fleet idle closes the run, if every listed file has an
        outcome, and reports its failures; a waiting node then keeps waiting.
        """
        if not self.fleet.connected or self.closed:
            return
        try:
            if self.start_urls.take():
                raise DontCloseSpider
            state = self.data.snapshot()
            if self.data_lost(state):
                return
            self.publish(state)
            quiet = self.quiet(state)
            if not self.fleet_idle(state, quiet):
                raise DontCloseSpider
            if state["run_open"]:
                closed, pending = self.data.ledger.finish_run()
                if closed < 0:
                    self.queue_lost(pending)
                    return
                if closed:
                    self.report_run(state)
        except RedisError as exc:
            # Given up (the crawl is already stopping, with its reason) or riding it out.
            self.closed = self.fleet.redis_failed(exc)
            raise DontCloseSpider from None
        wait = self.fleet.settings.wait_for_work
        if wait < 0 or (wait > 0 and quiet < wait):
            raise DontCloseSpider
        logger.info(
            f"{FLEET} no work left in the fleet (run {state['run']}: {state['verified']} of "
            f"{state['listed']} files verified, {state['failed']} failed); this node stops"
        )

    def quiet(self, state: dict[str, int]) -> float:
        """Seconds the fleet has been idle, never counted from before this node joined."""
        return min(state["quiet_ms"] / 1000, monotonic() - self.fleet.joined)

    def fleet_idle(self, state: dict[str, int], quiet: float) -> bool:
        if state["queued"] or state["inflight"] or state["start_urls"]:
            return False
        return quiet >= self.fleet.settings.idle_quiet

    def report_run(self, state: dict[str, int]) -> None:
        """This node closed the run: say how it ended; failures make this node exit 1."""
        listed, verified, failed = state["listed"], state["verified"], state["failed"]
        run = f"{FLEET} run {state['run']} closed: {verified} of {listed} files verified"
        if state["items_listed"] > 1 or state["jobs_failed"]:
            run += f", {state['items_done']} of {state['items_listed']} items done"
        if not failed and not state["jobs_failed"]:
            logger.info(f"{run}; a re-run lists again the items not recorded unchanged")
            return
        parts = []
        if failed:
            files, count = self.data.ledger.failures()
            named = "; ".join(f"{path!r} ({reason})" for path, reason in files)
            more = f" and {count - len(files)} more" if count > len(files) else ""
            parts.append(f"{failed} failed: {named}{more}")
        if state["jobs_failed"]:
            jobs, count = self.data.ledger.failed_items()
            named = "; ".join(f"{ident!r} ({reason})" for ident, reason in jobs)
            more = f" and {count - len(jobs)} more" if count > len(jobs) else ""
            parts.append(f"{state['jobs_failed']} items or jobs failed: {named}{more}")
        message = f"{run}, " + ", ".join(parts)
        logger.error(message[:2000])
        self.crawler.stats.set_value("ravel/fleet_failed", failed + state["jobs_failed"])

    def queue_lost(self, pending: int) -> None:
        self.fleet_lost(
            f"{FLEET} {pending} files of the run are pending but no entry is left to complete "
            "them: the queue was lost (FLUSHDB, keys deleted, or a Redis restarted without "
            "persistence); stopping: `scrapy fleet reset`, then run the job again"
        )

    def fleet_lost(self, message: str) -> None:
        """Redis lost the fleet's data: one ERROR line, and the node stops with exit 1."""
        self.closed = True
        self.crawler.stats.set_value("ravel/fleet_lost", 1)
        stop_crawl(self.crawler, "fleet_data_lost", message)
