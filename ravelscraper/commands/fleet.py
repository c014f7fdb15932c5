"""``scrapy fleet status|push|reset|serve``: watch, feed or reset the fleet's job in Redis.

Reads ``REDIS_URL`` (``-s REDIS_URL=...`` or the environment) and ``RAVEL_REDIS_PREFIX``
like a node does, so it works wherever ``scrapy crawl ravel`` works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from ravelscraper.archive.metadata import BadInput, ItemLocation, check_identifier
from ravelscraper.archive.names import shown
from ravelscraper.extensions import redact

if TYPE_CHECKING:  # Scrapy imports every command at start-up: a plain crawl skips the schema
    from ravelscraper.distributed.schema.queue import JobData

SPIDER = "ravel"
ACTIONS = ("status", "push", "reset", "serve")
WATCH_EVERY = 2.0  # seconds between two summaries of `status --watch`
MAX_ITEM_ROWS = 50  # items shown by `status` (unfinished and failed ones first)


class FleetError(Exception):
    """One line for the user; the command exits 1."""


class Command(ScrapyCommand):
    requires_project = True
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return (
            "status [--json] [--watch] | push [<identifier or details URL>...]"
            ' [--collection <identifier>] [--search "<query>"] | reset [--force]'
            " | serve [--bind ADDRESS] [--port PORT]"
        )

    def short_desc(self) -> str:
        return "Watch, feed or reset the fleet's job in Redis (REDIS_URL)"

    def long_desc(self) -> str:
        return (
            "status: items and files listed, done, failed and pending in the current run, per "
            "item, the queue and the live nodes. push: validate items (identifiers on "
            "RAVEL_ORIGIN, or details URLs on RAVEL_ORIGIN / RAVEL_ALLOWED_ORIGINS), "
            "collections (--collection) and searches (--search) and queue them for a waiting "
            "fleet. reset: delete the job's keys (refused while nodes run). serve: a read-only web "
            "page, /status.json and /metrics (Prometheus) over the job, on loopback by default."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="status: one JSON object")
        parser.add_argument("--force", action="store_true", help="reset: even with live nodes")
        parser.add_argument(
            "--watch", action="store_true", help="status: refresh it every 2 s until Ctrl-C"
        )
        parser.add_argument(
            "--bind",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="serve: the IP address to listen on (default: 127.0.0.1)",
        )
        parser.add_argument(
            "--port", type=int, default=8080, help="serve: the port (default: 8080; 0: any)"
        )
        parser.add_argument(
            "--collection",
            action="append",
            default=[],
            metavar="IDENTIFIER",
            help="push: every item of this collection (repeatable)",
        )
        parser.add_argument(
            "--search",
            action="append",
            default=[],
            metavar="QUERY",
            help="push: every item this archive.org search returns (repeatable)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if not args or args[0] not in ACTIONS:
            raise UsageError(f"give one of {', '.join(ACTIONS)}")
        action, rest = args[0], args[1:]
        searches = [("collection", c) for c in opts.collection] + [
            ("search", q) for q in opts.search
        ]
        if action == "push" and not rest and not searches:
            raise UsageError(
                "push needs at least one identifier or details URL, --collection or --search"
            )
        if action != "push" and (rest or searches):
            raise UsageError(f"{action} takes no arguments")
        if opts.watch and (action != "status" or opts.json):
            raise UsageError("--watch goes with status (without --json)")
        if action == "serve":
            check_bind(opts.bind, opts.port)
        from redis import RedisError  # here: `scrapy crawl` imports this module too

        try:
            if action == "push":
                entries = push_entries(self.settings, rest)  # checked before connecting
                entries += search_entries(searches)
            data, where = self.connect()
            try:
                if action == "status" and opts.watch:
                    watch_status(data, where)
                elif action == "status":
                    show_status(data, where, opts.json)
                elif action == "serve":
                    serve(data, where, opts.bind, opts.port)
                elif action == "push":
                    push(data, where, entries)
                else:
                    reset(data, opts.force)
                sys.stdout.flush()  # a closed pipe fails here, not in Python's exit
            finally:
                data.client.close()
        except RedisError as exc:  # e.g. WRONGTYPE: a key written by hand
            self.fail(f"Redis refused the command: {redact.mask(str(exc))[:300]}")
        except BrokenPipeError:  # `scrapy fleet status | head`: the reader has gone
            # Python's flush of stdout at exit would fail again: point it at /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except FleetError as exc:
            self.fail(str(exc))

    def fail(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr)
        self.exitcode = 1

    def connect(self) -> tuple[JobData, str]:
        from ravelscraper.distributed.connection import (
            REDIS_PARAMS,
            FleetUnavailable,
            connect,
            redis_url,
        )
        from ravelscraper.distributed.schema.keys import BadPrefix, JobKeys, job_prefix
        from ravelscraper.distributed.schema.queue import JobData

        assert self.settings is not None
        url = redis_url(self.settings)
        if not url.strip():
            raise FleetError("set REDIS_URL (or -s REDIS_URL=redis://queue-host:6379/0)")
        settings = self.settings.copy()
        settings.set("REDIS_URL", url, priority="cmdline")
        settings.set("REDIS_PARAMS", REDIS_PARAMS)
        try:
            keys = JobKeys.for_prefix(job_prefix(settings["RAVEL_REDIS_PREFIX"], SPIDER))
            client, where = connect(settings)
        except (FleetUnavailable, BadPrefix) as exc:
            raise FleetError(str(exc)) from None
        return JobData(client, keys), where


def check_bind(bind: str, port: int) -> None:
    """``--bind`` must be an IP address; anything but loopback gets one WARNING line."""
    import ipaddress

    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise UsageError(
            f"--bind takes an IP address (e.g. 127.0.0.1), not {bind[:100]!r}"
        ) from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--port takes 0 to 65535, not {port}")
    if not address.is_loopback:
        print(
            f"WARNING: serving on {bind}, not loopback: whoever reaches it sees the job's "
            "items, file names and nodes (there is no login)",
            file=sys.stderr,
            flush=True,
        )


def serve(data: JobData, where: str, bind: str, port: int) -> None:
    from ravelscraper.distributed.web import ServeError
    from ravelscraper.distributed.web import serve as serve_web

    try:
        serve_web(data, where, bind, port)
    except ServeError as exc:
        raise FleetError(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C before the reactor took over the signal
        pass


def watch_status(data: JobData, where: str) -> None:
    """``status`` again every WATCH_EVERY seconds, the screen cleared, until Ctrl-C; a Redis
    outage is shown and ridden out."""
    import time

    from redis import RedisError

    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    try:
        while True:  # until Ctrl-C: the user's to stop
            try:
                print(clear, end="")
                show_status(data, where, as_json=False)
            except RedisError as exc:
                print(f"Redis unreachable at {where} ({type(exc).__name__}); retrying")
            print(f"(every {WATCH_EVERY:.0f} s; Ctrl-C stops)", flush=True)
            time.sleep(WATCH_EVERY)
    except KeyboardInterrupt:
        print()


def push_entries(settings: Any, targets: list[str]) -> list[dict[str, str]]:
    """The start-URL entries for ``targets``; FleetError for the first one a node would refuse."""
    from ravelscraper.distributed.origins import AllowedOrigins

    origin = settings["RAVEL_ORIGIN"]
    origins = AllowedOrigins([origin, *settings.getlist("RAVEL_ALLOWED_ORIGINS")])
    entries = []
    for target in targets:
        try:
            if "://" in target:
                location = ItemLocation.from_details_url(target)
                if location.origin not in origins:
                    raise BadInput(
                        f"{location.origin!r} is not RAVEL_ORIGIN ({origin}) nor in "
                        "RAVEL_ALLOWED_ORIGINS: the nodes would refuse it"
                    )
                entries.append({"url": location.details_url})
            else:
                entries.append({"item": check_identifier(target)})
        except BadInput as exc:
            raise FleetError(f"{target[:200]!r} not pushed: {exc}") from None
    return entries


def search_entries(searches: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The start-URL entries of ``--collection``/``--search``; FleetError for a bad one."""
    from ravelscraper.distributed.starturls import search_entry_job

    entries = []
    for kind, value in searches:
        try:
            job = search_entry_job({kind: value})
        except BadInput as exc:
            raise FleetError(f"--{kind} {value[:200]!r} not pushed: {exc}") from None
        entries.append({"collection": job.collection} if job.collection else {"search": job.query})
    return entries


def push(data: JobData, where: str, entries: list[dict[str, str]]) -> None:
    for entry in entries:
        line = json.dumps(entry)
        waiting = data.start_urls.push(line)
        print(f"pushed {line} to {data.keys.start_urls} on {where} ({waiting} waiting)")


def cell(value: int | None, width: int) -> str:
    """A counter in a column of the table: ``?`` for a malformed one."""
    return f"{'?' if value is None else value:>{width}}"


def show_status(job: JobData, where: str, as_json: bool) -> None:
    keys = job.keys
    from ravelscraper.distributed.watch import status_data

    data = status_data(job)
    if as_json:
        print(json.dumps(data))
        return
    run = data["run_state"]
    when = {
        "open": f"open, started {data['run_opened_s_ago']} s ago",
        "closed": f"closed {data['run_closed_s_ago']} s ago",
    }.get(run, "no run yet")
    print(f"job {keys.prefix} on {where}: run {data['run']} ({when})")
    counts = data["item_counts"]
    print(
        f"  items: {cell(counts['listed'], 0)} listed, {cell(counts['done'], 0)} done, "
        f"{counts['failed']} failed, {cell(counts['pending'], 0)} pending"
    )
    for query, error in data["searches"].items():
        print(f"  search {query[:200]!r}" + (f": failed: {error!r}" if error else ""))
    print(f"  {'item':<40}{'listed':>8}{'verified':>10}{'failed':>8}{'pending':>9}")
    rows = list(data["items"].items())
    # The unfinished and failed items first; a collection's thousands are not all shown.
    rows.sort(key=lambda pair: (not (pair[1]["pending"] or pair[1]["error"]), pair[0]))
    for identifier, row in rows[:MAX_ITEM_ROWS]:
        print(
            f"  {shown(identifier)[:40]:<40}{cell(row['listed'], 8)}{cell(row['verified'], 10)}"
            f"{cell(row['failed'], 8)}{cell(row['pending'], 9)}"
            + (f"  job failed: {row['error']!r}" if row["error"] else "")
        )
    if len(rows) > MAX_ITEM_ROWS:
        print(f"  ... and {len(rows) - MAX_ITEM_ROWS} more items (--json lists them all)")
    files = data["files"]
    print(
        f"  {'all items':<40}{cell(files['listed'], 8)}{cell(files['verified'], 10)}"
        f"{cell(files['failed'], 8)}{cell(files['pending'], 9)}"
    )
    for path, reason in list(data["failed_files"].items())[:10]:
        print(f"  failed: {path!r}: {reason!r}")
    if len(data["failed_files"]) > 10:
        print(f"  ... and {len(data['failed_files']) - 10} more failed files")
    print(
        f"queue: {data['queued']} entries waiting, {data['inflight']} in progress, "
        f"{data['start_urls']} start URLs waiting"
    )
    for entry in data["start_url_entries"]:
        print(f"  start URL waiting: {shown(entry)}")
    if data["listing_held"]:
        print(
            f"listing held back: {data['files']['pending'] or 0:,} pending files (and the items "
            f"being listed) reach RAVEL_FLEET_MAX_PENDING {data['max_pending']:,}; "
            f"{data['listing_queued']:,} listing entries wait while files download"
        )
    print(
        f"live nodes: {data['live_nodes']}"
        + (f" ({', '.join(shown(n) for n in data['nodes'])})" if data["nodes"] else "")
    )
    print(
        f"reclaimed from dead nodes: {cell(data['reclaimed'], 0)}; given up: {data['dead']}; "
        f"rejected entries: {data['rejected']} ({keys.rejected})"
    )
    last = data["last_activity_s_ago"]
    print(f"last activity: {'never' if last is None else f'{last} s ago'}")
    if data["malformed"]:
        named = ", ".join(f"{name}={value}" for name, value in data["malformed"].items())
        print(
            f"malformed counters (written by hand; `scrapy fleet reset` clears the job): "
            f"{named[:1000]}"
        )


def reset(data: JobData, force: bool) -> None:
    live = len(data.live_nodes())
    if live and not force:
        raise FleetError(f"{live} nodes are still running this job: stop them first, or --force")
    deleted = data.reset()
    print(f"deleted {deleted} keys of job {data.keys.prefix}: the next run starts anew")
