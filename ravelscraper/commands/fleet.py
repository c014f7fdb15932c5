"""``scrapy fleet status|push|reset``: watch, feed or reset the fleet's job in Redis.

Reads ``REDIS_URL`` (``-s REDIS_URL=...`` or the environment) and ``RAVEL_REDIS_PREFIX``
like a node does, so it works wherever ``scrapy crawl ravel`` works.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from ravelscraper import redact
from ravelscraper.archive import BadInput, ItemLocation, check_identifier
from ravelscraper.distributed.schema import BadPrefix, JobData, JobKeys, job_prefix

SPIDER = "ravel"
ACTIONS = ("status", "push", "reset")


class FleetError(Exception):
    """One line for the user; the command exits 1."""


class Command(ScrapyCommand):
    requires_project = True
    default_settings = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "status [--json] | push <identifier or details URL>... | reset [--force]"

    def short_desc(self) -> str:
        return "Watch, feed or reset the fleet's job in Redis (REDIS_URL)"

    def long_desc(self) -> str:
        return (
            "status: files listed, verified, failed and pending per item in the current run, "
            "the queue and the live nodes. push: validate items (identifiers on RAVEL_ORIGIN, "
            "or details URLs on RAVEL_ORIGIN / RAVEL_ALLOWED_ORIGINS) and queue them for a "
            "waiting fleet. reset: delete the job's keys (refused while nodes run)."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--json", action="store_true", help="status: one JSON object")
        parser.add_argument("--force", action="store_true", help="reset: even with live nodes")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if not args or args[0] not in ACTIONS:
            raise UsageError(f"give one of {', '.join(ACTIONS)}")
        action, rest = args[0], args[1:]
        if action == "push" and not rest:
            raise UsageError("push needs at least one identifier or details URL")
        if action != "push" and rest:
            raise UsageError(f"{action} takes no arguments")
        from redis import RedisError  # here: `scrapy crawl` imports this module too

        try:
            if action == "push":
                entries = push_entries(self.settings, rest)  # checked before connecting
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
    for identifier in sorted(set(item_states) | {f.split(":", 1)[1] for f in tally if ":" in f}):
        listed, verified = count(f"listed:{identifier}"), count(f"verified:{identifier}")
        failed = count(f"failed:{identifier}")
        job = item_states.get(identifier, "listed")
        items[identifier] = {
            "listed": listed,
            "verified": verified,
            "failed": failed,
            "pending": max(0, listed - verified - failed),
            "error": job.removeprefix("failed: ") if job.startswith("failed") else "",
        }
    opened, closed = count("opened", run), count("closed", run)
    return {
        "run": state["run"],
        "run_state": run.get("state", "none"),
        "run_opened_s_ago": round((now - opened) / 1000, 1) if opened else None,
        "run_closed_s_ago": round((now - closed) / 1000, 1) if closed else None,
        "files": {k: state[k] for k in ("listed", "verified", "failed", "pending")},
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
    print(f"  {'item':<40}{'listed':>8}{'verified':>10}{'failed':>8}{'pending':>9}")
    for identifier, row in data["items"].items():
        print(
            f"  {identifier[:40]:<40}{row['listed']:>8}{row['verified']:>10}{row['failed']:>8}"
            f"{row['pending']:>9}" + (f"  job failed: {row['error']!r}" if row["error"] else "")
        )
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
