"""``python -m ravelscraper.distributed status|reset``: watch or reset a fleet job.

Reads ``REDIS_URL`` from the environment (or ``--redis-url``); ``--prefix`` is the job's key
prefix, ``ravel`` unless ``RAVEL_REDIS_PREFIX`` was changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from scrapy.settings import Settings

from ravelscraper.distributed.connection import FleetUnavailable, connect
from ravelscraper.distributed.keys import JobKeys
from ravelscraper.distributed.queue import snapshot


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ravelscraper.distributed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--prefix", default="ravel", help="the job's key prefix (ravel)")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="queue, leases, nodes and counters")
    status.add_argument("--json", action="store_true", help="one JSON object")
    reset = commands.add_parser("reset", help="delete the job's keys: the next run starts anew")
    reset.add_argument("--force", action="store_true", help="even while nodes are running")
    return parser.parse_args(argv)


def status(client: object, keys: JobKeys, where: str, as_json: bool) -> None:
    state = snapshot(client, keys)
    nodes = [n.decode() for n in client.zrangebyscore(keys.nodes, "(0", "+inf")]  # type: ignore[attr-defined]
    if as_json:
        print(json.dumps({**state, "nodes": nodes}))
        return
    busy = state["queued"] or state["inflight"] or state["start_urls"]
    print(f"job {keys.prefix} on {where}")
    rows = [
        ("queued", state["queued"], f"entries waiting in {keys.requests}"),
        ("in progress", state["inflight"], f"leased by a node ({keys.inflight})"),
        ("start URLs", state["start_urls"], f"waiting in {keys.start_urls}"),
        ("live nodes", state["live_nodes"], ", ".join(nodes)),
        ("done", state["acked"], "entries finished (pages and files)"),
        ("requeued", state["reclaimed"], "taken back from nodes that died"),
        ("given up", state["dead"], f"entries in {keys.dead}"),
        ("rejected", state["rejected"], f"hostile or malformed entries in {keys.rejected}"),
    ]
    for label, count, note in rows:
        print(f"{label:<12}{count:>8}  {note}")
    quiet = state["quiet_ms"] / 1000
    # With no activity recorded, the quiet time counts from the epoch.
    last = "never" if quiet > 10 * 365 * 86400 else f"{quiet:.0f} s ago"
    print(f"{'state':<12}{'busy' if busy else 'idle':>8}  last activity {last}")


def reset(client: object, keys: JobKeys, force: bool) -> int:
    live = snapshot(client, keys)["live_nodes"]
    if live and not force:
        print(
            f"{live} nodes are still running this job: stop them first, or use --force",
            file=sys.stderr,
        )
        return 1
    deleted = client.delete(*keys.all())  # type: ignore[attr-defined]
    print(f"deleted {deleted} keys of job {keys.prefix}: the next run starts anew")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.redis_url:
        print("set REDIS_URL (or pass --redis-url redis://host:6379/0)", file=sys.stderr)
        return 2
    settings = Settings(
        {"REDIS_URL": args.redis_url, "REDIS_PARAMS": {"socket_connect_timeout": 5}}
    )
    try:
        client, where = connect(settings)
    except FleetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = JobKeys.for_prefix(args.prefix)
    if args.command == "status":
        status(client, keys, where, args.json)
        return 0
    return reset(client, keys, args.force)


if __name__ == "__main__":
    sys.exit(main())
