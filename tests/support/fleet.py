"""Fleet nodes as the end-to-end tests run them: ``scrapy crawl ravel`` processes sharing one
Redis database (``NodeGroup``, each a ``Node``), ``scrapy fleet`` as a user types it, and
waiting on a node's log.

``NodeGroup`` is the tests' handle on some processes; the package's own fleet model is
``ravelscraper.distributed.fleet.Fleet``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import redis

from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.distributed.watch import status_data
from tests.fakearchive import FakeArchive
from tests.support.crawl import FAKE_STORAGE_HOST, ROOT, crawl_command, crawl_env
from tests.support.redisserver import RedisServer

# Short heartbeats and timeouts, so that a test sees a dead node taken over in seconds; a 0.25 s
# tick (default 1 s): a node exits at most 0.25 s after the fleet's quiet, not up to 1 s, and
# takes pushed work as soon. A heartbeat on every tick, as with 1 s and 1 s: the node's last
# counters reach the fleet's history (the page's node rows) in the tick it exits on.
# RAVEL_IDLE_QUIET stays at its default (1 s): with 0.5 s, a node with little to do closed the
# run before the other node, seconds slower to start under load, had joined it.
FAST = {"RAVEL_NODE_TTL": 4, "RAVEL_HEARTBEAT": 0.2, "RAVEL_FLEET_TICK": 0.25}
# Where no node is killed and each entry must be taken exactly once: a node starved of the
# CPU for 4 s (load 16 on 2 CPUs) was taken for dead, and its leases given to another.
NONE_DIES = {"RAVEL_NODE_TTL": 30}
# Every file's start and finish lines at INFO: the tests wait for them and count them.
EVERY_FILE_LINE = {"RAVEL_FILE_LINES": 0}


@dataclass
class Node:
    """One ``scrapy crawl ravel`` process of a group, its output in ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path
    exited: float | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def downloaded(self) -> int:
        return self.log.count("[download finished]")

    def lines(self, marker: str) -> list[str]:
        return [line for line in self.log.splitlines() if marker in line]


@dataclass
class NodeGroup:
    """A Redis database and the nodes started on it; :meth:`close` kills and reaps them."""

    server: RedisServer
    db: int
    logs: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url(self.db)

    @cached_property
    def redis(self) -> redis.Redis:
        """One client for the test (closed by :meth:`close`)."""
        return self.server.client(self.db)

    @classmethod
    def on(cls, server: RedisServer, tmp_path: Path) -> NodeGroup:
        """A group on a database of ``server`` no other test used, its logs under
        ``tmp_path``; a context manager (the tests' ``fleet`` fixtures use it so)."""
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        return cls(server, server.fresh_db(), logs)

    def __enter__(self) -> NodeGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        kill_all(self.nodes)
        if "redis" in self.__dict__:
            self.redis.close()

    def start(self, *args: str, store: Path | str, env_url: bool = False, **settings) -> Node:
        """A node: ``REDIS_URL`` as ``-s`` or (``env_url``) in the environment."""
        options = {**EVERY_FILE_LINE, **FAST, **settings}
        extra_env = {"REDIS_URL": self.url} if env_url else {}
        if not env_url:
            options["REDIS_URL"] = self.url
        warnings = options.pop("PYTHONWARNINGS", None)
        if warnings:
            extra_env["PYTHONWARNINGS"] = warnings
        log = self.logs / f"node{len(self.nodes)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                crawl_command(*args, store=store, **options),
                cwd=ROOT,
                env=crawl_env(**extra_env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        node = Node(process, log)
        self.nodes.append(node)
        return node

    def wait(self, timeout: float = 120) -> None:
        """Wait for every node, noting when each one exited."""
        deadline = time.monotonic() + timeout
        while any(n.exited is None for n in self.nodes):
            for node in self.nodes:
                if node.exited is None and node.process.poll() is not None:
                    node.exited = time.time()
            if time.monotonic() > deadline:
                kill_all(self.nodes)
                pytest.fail(f"nodes still running after {timeout} s")
            time.sleep(0.05)

    def queue_state(self) -> dict[str, Any]:
        return fleet_status(self.url)


def kill_all(nodes: list[Node]) -> None:
    """Kill the nodes still running and reap every one."""
    for node in nodes:
        if node.process.poll() is None:
            node.process.kill()
        node.process.wait(timeout=10)


def storage_gets(archive: FakeArchive) -> list[dict[str, Any]]:
    """The file downloads the fake archive's storage node served (robots.txt left out)."""
    return [
        e
        for e in archive.stats()["log"]
        if e["host"] == FAKE_STORAGE_HOST and e["method"] == "GET" and e["path"] != "/robots.txt"
    ]


def scrapy_fleet(redis_url: str, *args: str, **settings: object) -> subprocess.CompletedProcess:
    """``scrapy fleet ...`` as a user types it, from the project's folder."""
    options = [part for name, value in settings.items() for part in ("-s", f"{name}={value}")]
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "fleet", *args, *options],
        cwd=ROOT,
        env=crawl_env(REDIS_URL=redis_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def fleet_status(redis_url: str) -> dict[str, Any]:
    """What ``scrapy fleet status --json`` prints for job "ravel", read in the test's process
    by the command's own reader (status_data): a Scrapy process per look cost 1 to 3 s of
    CPU. The command itself runs in the tests of its output (``scrapy_fleet(url, "status",
    ...)``)."""
    with redis.Redis.from_url(redis_url) as client:
        data = status_data(JobData(client, JobKeys.for_prefix("ravel")))
    return json.loads(json.dumps(data))  # as the command prints it: tuples become lists


def wait_for(node: Node, marker: str, timeout: float = 60, count: int = 1) -> None:
    """Until ``marker`` is ``count`` times in the node's log (or the node exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.log.count(marker) >= count:
            return
        if node.process.poll() is not None:
            raise AssertionError(f"node exited before {marker!r}:\n{node.log[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} after {timeout} s:\n{node.log[-3000:]}")


def wait_queued(group: NodeGroup, node: Node, timeout: float = 60) -> None:
    """Until ``node`` has queued its start requests in the fleet (their fingerprints are in the
    run's dupefilter), so that a node started next finds them there whatever the load: a
    fixed pause was too short when Python took seconds to start."""
    dupefilter = JobKeys.for_prefix("ravel").dupefilter
    deadline = time.monotonic() + timeout
    while not group.redis.exists(dupefilter):
        if node.process.poll() is not None:
            raise AssertionError(f"node exited before queuing its start:\n{node.log[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing queued after {timeout} s:\n{node.log[-3000:]}")
        time.sleep(0.05)
