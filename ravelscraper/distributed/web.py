"""``scrapy fleet serve``: a read-only HTTP server over a job's Redis, on Twisted's web server.

``/`` the page (:mod:`.page`, self-contained), ``/status.json`` what it shows
(:func:`ravelscraper.distributed.watch.watch_data`), ``/metrics`` the same as Prometheus text
(``prometheus-client``). Redis is read in a thread, at most once a second whoever asks (many
viewers cost one read; less often when a reading takes long), and only while someone asks.
While Redis is unreachable the data answers 503 (the page says "Redis unreachable"); redis-py
reconnects by itself when it is back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet import defer, threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ravelscraper.distributed.page import PAGE
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.distributed.watch import History, watch_data
from ravelscraper.extensions import redact

FRESH = 1.0  # seconds a reading of Redis is served before the next one, at least
SLOW_READ = 4  # ... and at least this many times what the last reading took (a huge job)
MAX_FRESH = 60.0
# The page runs its own inline script and style, and talks to this server only.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


class Reading:
    """Redis read for the page, at most every FRESH seconds; concurrent askers share a read."""

    def __init__(self, data: JobData, where: str) -> None:
        self.data = data
        self.where = where
        self.history = History(data.keys)
        self.value: dict[str, Any] | None = None
        self.error = ""  # why the last read failed ("" if it did not)
        self.read_at = -MAX_FRESH
        self.fresh = FRESH  # seconds the current reading is served
        self.started = 0.0
        self.waiting: list[defer.Deferred[None]] | None = None  # askers of the read under way

    def current(self) -> defer.Deferred[None]:
        """Fires once :attr:`value` (or :attr:`error`) is at most FRESH seconds old."""
        if monotonic() - self.read_at < self.fresh:
            return defer.succeed(None)
        asked: defer.Deferred[None] = defer.Deferred()
        if self.waiting is not None:
            self.waiting.append(asked)
            return asked
        self.waiting = [asked]
        self.started = monotonic()
        threads.deferToThread(self.read).addBoth(self.done)
        return asked

    def read(self) -> dict[str, Any]:
        return watch_data(self.data, self.history)

    def done(self, result: Any) -> None:
        self.read_at = monotonic()
        took = self.read_at - self.started
        # A job of 100,000 items takes seconds to read: then it is read less often.
        self.fresh = max(FRESH, min(MAX_FRESH, SLOW_READ * took))
        if isinstance(result, dict):
            result["read_s"] = round(took, 2)
            if self.error:
                say(f"Redis at {self.where} answers again")
            self.value, self.error = result, ""
        else:
            self.fresh = FRESH  # a timeout is no measure of a reading: try again soon
            exc = result.value
            down = (redis.ConnectionError, redis.TimeoutError, OSError)
            why = "Redis unreachable" if isinstance(exc, down) else "reading Redis failed"
            error = f"{why} ({type(exc).__name__}: {redact.mask(str(exc))[:300]})"
            if not self.error:
                say(f"WARNING: {error}; retrying while someone asks")
            self.error = error
        waiting, self.waiting = self.waiting or [], None
        for asked in waiting:
            asked.callback(None)


def say(line: str) -> None:
    """One line on stderr (the fleet command logs nothing)."""
    print(line, file=sys.stderr, flush=True)


def served(reading: Reading, request: Request, answer: Callable[[dict[str, Any]], bytes]) -> int:
    """Answer ``request`` with ``answer(data)`` once Redis has been read (503 if it failed)."""
    finished = request.notifyFinish()
    gone: list[bool] = []
    finished.addErrback(lambda _: gone.append(True))  # the client went away first

    def reply(_: None) -> None:
        if gone:
            return
        request.setHeader(b"Cache-Control", b"no-store")
        if reading.error or reading.value is None:
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Retry-After", b"2")
            request.write(json.dumps({"error": reading.error or "no data yet"}).encode())
        else:
            request.write(answer(reading.value))
        request.finish()

    reading.current().addCallback(reply)
    return NOT_DONE_YET


class PageResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", PAGE_POLICY.encode())
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-store")
        return PAGE.encode()


class ReadingResource(Resource):
    """A resource that answers with the latest reading of the job (``answer``), or 503."""

    isLeaf = True

    def __init__(self, reading: Reading) -> None:
        super().__init__()
        self.reading = reading

    def render_GET(self, request: Request) -> int:
        return served(self.reading, request, lambda data: self.answer(request, data))

    def answer(self, request: Request, data: dict[str, Any]) -> bytes:
        raise NotImplementedError


class StatusResource(ReadingResource):
    def answer(self, request: Request, data: dict[str, Any]) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(
            {"job": self.reading.data.keys.prefix, "redis": self.reading.where, **data}
        ).encode()


class MetricsResource(ReadingResource):
    def answer(self, request: Request, data: dict[str, Any]) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Snapshot(data))
        return generate_latest(registry)


class Snapshot(Collector):
    """One reading of the job as Prometheus metrics."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def collect(self) -> Iterator[Metric]:
        data = self.data
        files = GaugeMetricFamily("ravel_files", "Files of the current run", labels=["state"])
        for state in ("listed", "verified", "failed", "pending"):
            files.add_metric([state], data["files"][state])
        yield files
        items = GaugeMetricFamily("ravel_items", "Items of the current run", labels=["state"])
        for state in ("listed", "done", "failed", "pending"):
            items.add_metric([state], data["item_counts"][state])
        yield items
        size = GaugeMetricFamily("ravel_bytes", "Bytes of the current run", labels=["state"])
        for state in ("listed", "verified"):
            size.add_metric([state], data["bytes"][state])
        yield size
        entries = GaugeMetricFamily("ravel_entries", "Queue entries", labels=["state"])
        for state in ("queued", "inflight", "start_urls", "dead", "rejected"):
            entries.add_metric([state], data[state])
        yield entries
        nodes = GaugeMetricFamily("ravel_nodes", "Nodes seen in the last hour", labels=["state"])
        nodes.add_metric(["alive"], data["nodes_alive"])
        nodes.add_metric(["gone"], data["nodes_gone"])
        yield nodes
        node_files = CounterMetricFamily(
            "ravel_node_files", "Files a node has done since it started", labels=["node"]
        )
        node_bytes = CounterMetricFamily(
            "ravel_node_bytes", "Bytes a node has done since it started", labels=["node"]
        )
        for row in data["node_rows"]:
            node_files.add_metric([row["node"]], row["files"])
            node_bytes.add_metric([row["node"]], row["bytes"])
        yield node_files
        yield node_bytes
        rate = GaugeMetricFamily("ravel_bytes_per_second", "The fleet's rate, last 15 s")
        rate.add_metric([], data["bytes_per_s"])
        yield rate
        held = GaugeMetricFamily("ravel_listing_held_back", "1 while listing is held back")
        held.add_metric([], 1 if data["listing"]["held_back"] else 0)
        yield held


def serve(data: JobData, where: str, bind: str, port: int) -> None:
    """Listen on ``bind:port`` and serve until SIGINT or SIGTERM; one line says where."""
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError

    try:
        listening = reactor.listenTCP(port, site(data, where), interface=bind)  # type: ignore[attr-defined]
    except CannotListenError as exc:
        raise ServeError(f"cannot listen on {bind}:{port}: {exc.socketError}") from None
    host = f"[{bind}]" if ":" in bind else bind
    address = f"http://{host}:{listening.getHost().port}/"
    print(f"serving job {data.keys.prefix} on {where} at {address} (Ctrl-C stops)", flush=True)
    reactor.run()  # type: ignore[attr-defined]


class ServeError(Exception):
    """One line for the user: the server could not start."""


def site(data: JobData, where: str) -> Site:
    reading = Reading(data, where)
    root = Resource()
    root.putChild(b"", PageResource())
    root.putChild(b"status.json", StatusResource(reading))
    root.putChild(b"metrics", MetricsResource(reading))
    made = Site(root)
    made.displayTracebacks = False
    made.noisy = False
    return made
