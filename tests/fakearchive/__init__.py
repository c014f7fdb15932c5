"""A fake archive.org for tests: start it with ``FakeArchive``, inspect it with its stats.

with FakeArchive({"latency": 0.05}) as fake:
    url = fake.details_url("ThePianoMusicOfMauriceRavel")
    ...
    assert fake.stats()["combined"]["max_active"] <= 4
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .catalog import (
    CATALOG,
    FileEntry,
    Item,
    build_catalog,
    file_bytes,
    get_item,
    iter_file_chunks,
    md5_of,
    sha1_of,
)
from .collections import Catalog
from .render import url_name

__all__ = [
    "CATALOG",
    "FakeArchive",
    "FileEntry",
    "Item",
    "file_bytes",
    "get_item",
    "iter_file_chunks",
    "max_simultaneous",
    "md5_of",
    "sha1_of",
    "url_name",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeArchive:
    """The fake archive.org in a subprocess (``python -m tests.fakearchive``)."""

    def __init__(
        self, config: Mapping[str, Any] | None = None, startup_timeout: float = 10.0
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self._catalog: Catalog | None = None
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.archive = ""
        self.storage = ""

    def __enter__(self) -> FakeArchive:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FakeArchive:
        """Start the server and wait for its address line."""
        command = [sys.executable, "-m", "tests.fakearchive", "--config", json.dumps(self.config)]
        # The server's stderr goes to an unlinked file: shown on a failed start, never a
        # pipe that could fill up and block it.
        with tempfile.TemporaryFile() as stderr:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
            )
            assert self.process.stdout is not None
            ready, _, _ = select.select([self.process.stdout], [], [], self.startup_timeout)
            line = self.process.stdout.readline() if ready else b""
            try:
                origins = json.loads(line)
                self.archive, self.storage = origins["archive"], origins["storage"]
            except (ValueError, KeyError, TypeError):
                self.stop()
                stderr.seek(0)
                raise RuntimeError(
                    f"the fake archive did not start (first line {line!r}); stderr:\n"
                    + stderr.read().decode(errors="replace")
                ) from None
        return self

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        for stream in (process.stdin, process.stdout):
            if stream:
                stream.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    # --- URLs ----------------------------------------------------------------------------

    def details_url(self, identifier: str) -> str:
        return f"{self.archive}/details/{identifier}"

    def metadata_url(self, identifier: str) -> str:
        return f"{self.archive}/metadata/{identifier}"

    def download_url(self, identifier: str, name: str) -> str:
        return f"{self.archive}/download/{identifier}/{url_name(name)}"

    # --- control -------------------------------------------------------------------------

    def _control(self, method: str, route: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.archive}/_fake/{route}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with _OPENER.open(request, timeout=10) as response:
            return json.loads(response.read())

    def routes(self) -> dict[str, int]:
        """Requests per route since the start or the last reset: ``scrape``, ``metadata``,
        ``metadata_subkey``, ``details``, ``download``, ``storage``, ``other``."""
        return dict(self.stats()["routes"])

    def stats(self) -> dict[str, Any]:
        """Counters per host and combined, the request ``log`` and ``faults_fired``."""
        return self._control("GET", "stats")

    def reset(self) -> None:
        """Zero the counters (max_active included) and clear the log."""
        self._control("POST", "reset", {})

    def configure(self, knobs: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Replace the given knobs (others keep their value); returns the whole config."""
        update = {**(knobs or {}), **more}
        self.config = self._control("POST", "config", update)
        self._catalog = None
        return self.config

    def server_config(self) -> dict[str, Any]:
        return self._control("GET", "config")

    # --- expected content ----------------------------------------------------------------

    def item(self, identifier: str) -> Item | None:
        """The item as this server serves it (its ``items``/``sizes`` knobs applied)."""
        if self._catalog is None:  # built once per configuration: items may be large
            self._catalog = Catalog(build_catalog(self.config), self.config)
        return self._catalog.get(identifier)

    def file_entry(self, identifier: str, name: str) -> FileEntry:
        item = self.item(identifier)
        entry = item.file(name) if item else None
        if entry is None:
            raise KeyError(f"no file {name!r} in {identifier!r}")
        return entry

    def file_bytes(self, identifier: str, name: str) -> bytes:
        entry = self.file_entry(identifier, name)
        return file_bytes(identifier, entry.content_key, entry.size)

    def md5_of(self, identifier: str, name: str) -> str:
        entry = self.file_entry(identifier, name)
        return md5_of(identifier, entry.content_key, entry.size)


def max_simultaneous(log: Iterable[Mapping[str, Any]], host: str | None = None) -> int:
    """The peak number of overlapping requests in a stats log (robots.txt left out).

    An independent cross-check of ``max_active``: requests that end at the instant another
    starts do not overlap.
    """
    events: list[tuple[float, int]] = []
    for entry in log:
        if entry.get("path") == "/robots.txt" or (host and entry.get("host") != host):
            continue
        events += [(float(entry["start"]), 1), (float(entry.get("end") or time.time()), -1)]
    peak = current = 0
    for _, delta in sorted(events):
        current += delta
        peak = max(peak, current)
    return peak
