"""``scrapy fleet status|push|reset``: watch, feed or reset the fleet's job in Redis.

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
from ravelscraper.extensions import redact

if TYPE_CHECKING:  # Scrapy imports every command at start-up: a plain crawl skips the schema
    from ravelscraper.distributed.schema import JobData

SPIDER = "ravel"
ACTIONS = ("status", "push", "reset")
MAX_ITEM_ROWS = 50  # items shown by `status` (unfinished and failed ones first)


class FleetError(Exception):
    """One line for the user; the command exits 1."""


class Command(ScrapyCommand):
    requires_project = True
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return (
            "status [--json] | push [<identifier or details URL>...] [--collection <identifier>]"
            ' [--search "<query>"] | reset [--force]'
        )

    def short_desc(self) -> str:
        return "Watch, feed or reset the fleet's job in Redis (REDIS_URL)"

    def long_desc(self) -> str:
        return (
            "status: items and files listed, done, failed and pending in the current run, per "
            "item, the queue and the live nodes. push: validate items (identifiers on "
            "RAVEL_ORIGIN, or details URLs on RAVEL_ORIGIN / RAVEL_ALLOWED_ORIGINS), "
            "collections (--collection) and searches (--search) and queue them for a waiting "
            "fleet. reset: delete the job's keys (refused while nodes run)."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="status: one JSON object")
        parser.add_argument("--force", action="store_true", help="reset: even with live nodes")
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
        from redis import RedisError  # here: `scrapy crawl` imports this module too

        try:
            if action == "push":
                entries = push_entries(self.settings, rest)  # checked before connecting
                entries += search_entries(searches)
            data, where = self.connect()
            try:
                if action == "status":
                    show_status(data, where, opts.json)
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
        from ravelscraper.distributed.schema import BadPrefix, JobData, JobKeys, job_prefix

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
    from ravelscraper.distributed.starturls import search_job

    entries = []
    for kind, value in searches:
        try:
            job = search_job({kind: value})
        except BadInput as exc:
            raise FleetError(f"--{kind} {value[:200]!r} not pushed: {exc}") from None
        entries.append({"collection": job.collection} if job.collection else {"search": job.query})
    return entries


def push(data: JobData, where: str, entries: list[dict[str, str]]) -> None:
    for entry in entries:
        line = json.dumps(entry)
        waiting = data.start_urls.push(line)
        print(f"pushed {line} to {data.keys.start_urls} on {where} ({waiting} waiting)")


def status_data(data: JobData) -> dict[str, Any]:
    """The current run's ledger per item, the queue and the live nodes, as one dict."""
    keys = data.keys
    state = data.snapshot()
    now = data.redis_now_ms()
    live_nodes = data.live_nodes()
    run = data.strings(keys.run)
    tally = data.strings(keys.tally)
    item_states = data.strings(keys.items)
    failures = data.strings(keys.failures)

    def count(field: str, values: dict[str, str] = tally) -> int:
        """A counter as Redis holds it; anything else written there by hand counts as 0."""
        value = values.get(field, "")
        return int(value) if value.isascii() and value.isdigit() else 0

    items = {}
    searches = {
        job.removeprefix("search:"): failure(state)
        for job, state in item_states.items()
        if job.startswith("search:")
    }
    names = set(item_states) | {f.split(":", 1)[1] for f in tally if ":" in f}
    for identifier in sorted(n for n in names if not n.startswith("search:")):
        listed, verified = count(f"listed:{identifier}"), count(f"verified:{identifier}")
        failed = count(f"failed:{identifier}")
        job = item_states.get(identifier, "listed")
        items[identifier] = {
            "listed": listed,
            "verified": verified,
            "failed": failed,
            "pending": max(0, listed - verified - failed),
            "error": failure(job),
        }
    failed_items = sum(1 for row in items.values() if row["error"])
    listed_items, done_items = count("items_listed"), count("items_done")
    opened, closed = count("opened", run), count("closed", run)
    return {
        "run": state["run"],
        "run_state": run.get("state", "none"),
        "run_opened_s_ago": round((now - opened) / 1000, 1) if opened else None,
        "run_closed_s_ago": round((now - closed) / 1000, 1) if closed else None,
        "files": {k: state[k] for k in ("listed", "verified", "failed", "pending")},
        # items: listed (their files are in the ledger), done (every file verified or
        # failed), failed (could not be listed), pending (listed, files still pending)
        "item_counts": {
            "listed": listed_items,
            "done": done_items,
            "failed": failed_items,
            "pending": max(0, listed_items - done_items),
        },
        "searches": searches,  # query -> "" or why it failed
        "bytes": {"listed": state["bytes_listed"], "verified": state["bytes_verified"]},
        "items": items,
        "failed_files": dict(sorted(failures.items())),
        "queued": state["queued"],
        "inflight": state["inflight"],
        "start_urls": state["start_urls"],
        "live_nodes": len(live_nodes),
        "nodes": live_nodes,  # the live ones: an expired node is not listed
        "acked": state["acked"],
        "reclaimed": state["reclaimed"],
        "dead": state["dead"],
        "rejected": state["rejected"],
        "last_activity_s_ago": (
            round(state["quiet_ms"] / 1000, 1) if state["last_activity_ms"] else None
        ),
    }


def failure(state: str) -> str:
    """Why a job failed, from its state in the ledger ("" if it did not)."""
    return state.removeprefix("failed: ") if state.startswith("failed") else ""


def show_status(job: JobData, where: str, as_json: bool) -> None:
    keys = job.keys
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
        f"  items: {counts['listed']} listed, {counts['done']} done, {counts['failed']} failed, "
        f"{counts['pending']} pending"
    )
    for query, error in data["searches"].items():
        print(f"  search {query[:200]!r}" + (f": failed: {error!r}" if error else ""))
    print(f"  {'item':<40}{'listed':>8}{'verified':>10}{'failed':>8}{'pending':>9}")
    rows = list(data["items"].items())
    # The unfinished and failed items first; a collection's thousands are not all shown.
    rows.sort(key=lambda pair: (not (pair[1]["pending"] or pair[1]["error"]), pair[0]))
    for identifier, row in rows[:MAX_ITEM_ROWS]:
        print(
            f"  {identifier[:40]:<40}{row['listed']:>8}{row['verified']:>10}{row['failed']:>8}"
            f"{row['pending']:>9}" + (f"  job failed: {row['error']!r}" if row["error"] else "")
        )
    if len(rows) > MAX_ITEM_ROWS:
        print(f"  ... and {len(rows) - MAX_ITEM_ROWS} more items (--json lists them all)")
    files = data["files"]
    print(
        f"  {'all items':<40}{files['listed']:>8}{files['verified']:>10}{files['failed']:>8}"
        f"{files['pending']:>9}"
    )
    for path, reason in list(data["failed_files"].items())[:10]:
        print(f"  failed: {path!r}: {reason!r}")
    if len(data["failed_files"]) > 10:
        print(f"  ... and {len(data['failed_files']) - 10} more failed files")
    print(
        f"queue: {data['queued']} entries waiting, {data['inflight']} in progress, "
        f"{data['start_urls']} start URLs waiting"
    )
    print(
        f"live nodes: {data['live_nodes']}"
        + (f" ({', '.join(data['nodes'])})" if data["nodes"] else "")
    )
    print(
        f"reclaimed from dead nodes: {data['reclaimed']}; given up: {data['dead']}; "
        f"rejected entries: {data['rejected']} ({keys.rejected})"
    )
    last = data["last_activity_s_ago"]
    print(f"last activity: {'never' if last is None else f'{last} s ago'}")


def reset(data: JobData, force: bool) -> None:
    live = len(data.live_nodes())
    if live and not force:
        raise FleetError(f"{live} nodes are still running this job: stop them first, or --force")
    deleted = data.reset()
    print(f"deleted {deleted} keys of job {data.keys.prefix}: the next run starts anew")
