"""The fake archive.org: an "archive" host (127.0.0.1) and a "storage node" host (127.0.0.2).

Run ``python -m tests.fakearchive [--config FILE_OR_JSON]`` from the repository root. It
prints one JSON line, ``{"archive": "http://127.0.0.1:P", "storage": "http://127.0.0.2:Q"}``,
then serves until SIGTERM/SIGINT or until its standard input (when a pipe) closes.

Knobs (``--config`` or ``POST /_fake/config``; a POST replaces only the keys it names):
``latency`` (s, every request), ``bandwidth`` (bytes/s per storage body), ``metadata_fail``
(identifiers whose /metadata answers 500), ``items`` (``{"<id>": {"count", "size", "format",
"ext"}}``), ``sizes`` (``{"<id>": bytes per audio file}``) and ``faults``: rules ``{"match":
glob on the decoded file name or path, "kind", "host", "times" (default 1), "status",
"retry_after", "stall" (s, default 30)}``. ``host`` defaults to ``storage`` for the body
faults (reset, truncate, stall, corrupt) and to ``archive`` for the others (429, 503, 500,
404, status, redirect_loop, redirect_404). Body faults fire on bodies, so not on HEAD.
Storage bodies without Content-Length: ``chunked``, ``close`` (ended by closing the
connection) and ``close_short`` (closed at half). ``redirect_foreign`` answers a 302 to
``location`` (an origin such as ``http://127.0.0.3:P``) plus the request's path.

``GET /_fake/stats``: ``{"127.0.0.1"|"127.0.0.2": {"active", "max_active", "requests"},
"combined": {"active", "max_active"}, "log": [...], "faults_fired": [{"kind", "path", "t"}]}``.
Counters leave out /_fake/ and robots.txt; the log has robots.txt but not /_fake/. A request
is active from its parsed headers until just before its last byte is written.

Listing faults: the fault kind ``redirect_refused`` answers a 302 to a closed port of the
storage host, at the file's storage path (a storage node refusing connections). The knob
``hostile`` (``{"<id>": ["<kind>", ...]}``) serves that item's details page or /metadata
malformed (wrong content type, bad JSON, odd names...): the kinds are in ``hostile.py``.

Collections: ``GET|POST /services/search/v1/scrape`` is archive.org's scrape API over the
catalogue and the generated collections of the knobs ``collections`` and ``revisions``
(``collections.py`` says what it answers). ``/_fake/stats`` has ``routes``: requests per
route (``scrape``, ``metadata``, ``metadata_subkey``, ``details``, ``download``,
``storage``, ``other``), so a test can assert "no /metadata for unchanged items", and
``served``: body bytes written per route (a resumed transfer fetches only what is missing).

Ranges, as archive.org's storage nodes (nginx) answer them: every file is sent with
``Accept-Ranges: bytes``, ``Last-Modified`` and an ``ETag``; a single ``Range: bytes=`` range
gets ``206 Partial Content`` with ``Content-Range``, an unsatisfiable one ``416`` with
``Content-Range: bytes */<size>``, and an ``If-Range`` that matches neither the ETag nor the
Last-Modified date gets the whole file (``200``). Knobs: ``ignore_ranges`` (true: always a
``200`` with the whole body, a server without ranges) and ``validator_epoch`` (an integer
added to every file's Last-Modified and ETag: the file "changed" on the server, its bytes
the same). Broken servers: ``ignore_if_range`` (true: a range is served whatever
``If-Range`` says) and ``refuse_ranges`` (true: ``416`` to every ranged request).
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import hostile, render
from .catalog import FileEntry, Item, build_catalog, iter_file_chunks
from .collections import Catalog, scrape

ARCHIVE_IP = "127.0.0.1"
STORAGE_IP = "127.0.0.2"
ROLES = {ARCHIVE_IP: "archive", STORAGE_IP: "storage"}
KNOBS = frozenset({"latency", "bandwidth", "faults", "metadata_fail", "items", "sizes", "hostile"})
KNOBS |= {"collections", "revisions", "scrape"}  # generated collections...: collections.py
KNOBS |= {"ignore_ranges", "validator_epoch"}  # storage nodes' Range answers (see the docstring)
KNOBS |= {"ignore_if_range", "refuse_ranges"}  # broken Range answers (see the docstring)
SCRAPE_PATH = "/services/search/v1/scrape"
STATUS_KINDS = frozenset({"429", "503", "500", "404", "status"})
BODY_KINDS = frozenset({"reset", "truncate", "stall", "corrupt"})
REDIRECT_KINDS = frozenset({"redirect_loop", "redirect_404", "redirect_foreign"})
# A storage body without Content-Length: chunked, or delimited by closing the connection
# (whole, or cut short at half).
FRAMING_KINDS = frozenset({"chunked", "close", "close_short"})
CONTENT_TYPES = {
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".xml": "text/xml",
    ".torrent": "application/x-bittorrent",
    ".gz": "application/gzip",
    ".txt": "text/plain; charset=utf-8",
}
ROBOTS = b"User-agent: *\nAllow: /\n"
REDIRECT_KINDS |= {"redirect_refused"}  # a 302 to a closed port (see the docstring)


class ConfigError(ValueError):
    """A config document the fake does not understand."""


@dataclass
class FaultRule:
    match: str
    kind: str
    host: str
    times: int
    status: int
    retry_after: float | None
    stall: float
    fired: int = 0
    location: str = ""  # redirect_foreign: the origin to redirect to (the path is kept)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> FaultRule:
        kind = str(raw.get("kind", ""))
        if kind not in STATUS_KINDS | BODY_KINDS | REDIRECT_KINDS | FRAMING_KINDS:
            raise ConfigError(f"unknown fault kind {kind!r}")
        on_storage = kind in BODY_KINDS | FRAMING_KINDS
        host = str(raw.get("host", "storage" if on_storage else "archive"))
        if host not in ("archive", "storage"):
            raise ConfigError(f"fault host must be 'archive' or 'storage', not {host!r}")
        status = int(raw.get("status", kind if kind.isdigit() else 500))
        retry = raw.get("retry_after")
        return cls(
            match=str(raw.get("match", "*")),
            kind=kind,
            host=host,
            times=int(raw.get("times", 1)),
            status=status,
            retry_after=None if retry is None else float(retry),
            stall=float(raw.get("stall", 30)),
            location=str(raw.get("location", "")),
        )

    def matches(self, role: str, path: str, name: str) -> bool:
        return (
            self.host == role
            and self.fired < self.times
            and (fnmatchcase(path, self.match) or (bool(name) and fnmatchcase(name, self.match)))
        )


@dataclass
class HostStats:
    active: int = 0
    max_active: int = 0
    requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"active": self.active, "max_active": self.max_active, "requests": self.requests}


@dataclass
class State:
    """Config, catalogue and statistics shared by the handler threads (under ``lock``)."""

    config: dict[str, Any] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=lambda: Catalog({}, {}))
    routes: dict[str, int] = field(default_factory=dict)  # requests per route (see route_of)
    served: dict[str, int] = field(default_factory=dict)  # body bytes written per route
    rules: list[FaultRule] = field(default_factory=list)
    hosts: dict[str, HostStats] = field(default_factory=lambda: {ip: HostStats() for ip in ROLES})
    combined: HostStats = field(default_factory=HostStats)
    log: list[dict[str, Any]] = field(default_factory=list)
    faults_fired: list[dict[str, Any]] = field(default_factory=list)
    storage_host: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, update: Mapping[str, Any]) -> None:
        """Replace the knobs given (others keep their value); fault counters start afresh."""
        unknown = set(update) - KNOBS
        if unknown:
            raise ConfigError(f"unknown knobs {sorted(unknown)}; known: {sorted(KNOBS)}")
        config = {**self.config, **update}
        rules = [FaultRule.parse(r) for r in config.get("faults") or []]
        hostile.check(config.get("hostile") or {})
        catalog = Catalog(build_catalog(config), config)
        with self.lock:
            self.config, self.rules, self.catalog = config, rules, catalog

    def knob(self, name: str, default: Any = None) -> Any:
        value = self.config.get(name)
        return default if value is None else value

    def take_fault(
        self, role: str, path: str, name: str, kinds: frozenset[str]
    ) -> FaultRule | None:
        with self.lock:
            for rule in self.rules:
                if rule.kind in kinds and rule.matches(role, path, name):
                    rule.fired += 1
                    self.faults_fired.append({"kind": rule.kind, "path": path, "t": time.time()})
                    return rule
        return None

    def count_route(self, route: str) -> None:
        with self.lock:
            self.routes[route] = self.routes.get(route, 0) + 1

    def count_served(self, route: str, size: int) -> None:
        with self.lock:
            self.served[route] = self.served.get(route, 0) + size

    def enter(self, ip: str) -> None:
        with self.lock:
            for counter in (self.hosts[ip], self.combined):
                counter.active += 1
                counter.max_active = max(counter.max_active, counter.active)
            self.hosts[ip].requests += 1

    def leave(self, ip: str) -> None:
        with self.lock:
            self.hosts[ip].active -= 1
            self.combined.active -= 1

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)

    def reset(self) -> None:
        with self.lock:
            for counter in (*self.hosts.values(), self.combined):
                counter.max_active = counter.active
                counter.requests = 0
            self.routes.clear()
            self.served.clear()
            self.log.clear()
            self.faults_fired.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            stats: dict[str, Any] = {ip: s.as_dict() for ip, s in self.hosts.items()}
            stats["combined"] = {
                "active": self.combined.active,
                "max_active": self.combined.max_active,
            }
            stats["routes"] = dict(self.routes)
            stats["served"] = dict(self.served)
            stats["log"] = list(self.log)
            stats["faults_fired"] = list(self.faults_fired)
        return stats


def _decode(raw: str) -> str:
    """A request path (latin-1 text from http.server) percent-decoded as UTF-8."""
    return unquote(raw.encode("latin-1").decode("utf-8", "replace"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    timeout = 120
    server: FakeServer

    # --- plumbing ------------------------------------------------------------------------

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the log is in /_fake/stats (and stderr must never fill up)."""

    def handle_one_request(self) -> None:
        self.was_reset = False
        try:
            super().handle_one_request()
        except ValueError:
            # After a "reset" fault the socket files are closed: flushing them fails.
            if not self.was_reset:
                raise

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    @property
    def state(self) -> State:
        return self.server.state

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.raw_path, self.query = split.path, split.query
        self.decoded_path = _decode(self.raw_path)
        self.status_sent = 0
        self.bytes_sent = 0
        self.fault_kind: str | None = None
        self.finished = False
        self.entry: dict[str, Any] = {}
        if self.server.role == "archive" and self.raw_path.startswith("/_fake/"):
            self._control()
            return
        self.counted = self.raw_path != "/robots.txt"
        self.entry = {
            "host": self.server.ip,
            "method": self.command,
            "path": self.decoded_path,
            "query": self.query,
            "start": time.time(),
            "end": None,
            "user_agent": self.headers.get("User-Agent"),
            "range": self.headers.get("Range"),
            "if_range": self.headers.get("If-Range"),
        }
        if self.counted:
            self.state.enter(self.server.ip)
            self.state.count_route(self._route_name())
        try:
            latency = float(self.state.knob("latency", 0))
            if latency > 0:
                time.sleep(latency)
            self._route()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            self._done()
            self.entry.update(
                status=self.status_sent, bytes_sent=self.bytes_sent, fault=self.fault_kind
            )
            if self.counted:
                self.state.count_served(self._route_name(), self.bytes_sent)
            self.state.record(self.entry)

    def _done(self) -> None:
        """The request stops being active: called just before its last bytes are written.

        Counting it out before (not after) the last write means a client that waits for a
        response before sending its next request is never seen with two requests active.
        """
        if self.finished or not self.entry:
            return
        self.finished = True
        self.entry["end"] = time.time()
        if self.counted:
            self.state.leave(self.server.ip)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _headers(self, status: int, headers: Iterable[tuple[str, str]], last: bool) -> None:
        """Send the status line and headers (``last``: no body follows)."""
        self.status_sent = status
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if last:
            self._done()
        self.end_headers()

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/html; charset=UTF-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A whole response with a small in-memory body."""
        all_headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        with_body = self.command != "HEAD" and bool(body)
        self._headers(status, all_headers, last=not with_body)
        if with_body:
            self._write_body([memoryview(body)], len(body), "", bandwidth=None)

    def _write_body(
        self, chunks: Iterable[memoryview], length: int, name: str, bandwidth: float | None
    ) -> None:
        """Write ``length`` bytes from ``chunks``, paced and with any body fault applied."""
        rule = self.state.take_fault(self.server.role, self.decoded_path, name, BODY_KINDS)
        if rule:
            self.fault_kind = rule.kind
        half = length // 2
        started = time.monotonic()
        for chunk in chunks:
            before = self.bytes_sent
            if rule and rule.kind in ("reset", "truncate", "stall") and before + len(chunk) > half:
                head = chunk[: half - before]
                self._write(head, length)
                if rule.kind == "stall":
                    time.sleep(rule.stall)
                    self._write(chunk[len(head) :], length)
                    rule = None
                    continue
                self._abort(reset=rule.kind == "reset")
                return
            if rule and rule.kind == "corrupt" and before <= half < before + len(chunk):
                flipped = bytearray(chunk)
                flipped[half - before] ^= 0xFF
                chunk = memoryview(flipped)
            self._write(chunk, length)
            if bandwidth and self.bytes_sent < length:
                delay = started + self.bytes_sent / bandwidth - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def _write(self, data: memoryview, length: int) -> None:
        """Write part of a ``length``-byte body."""
        if self.bytes_sent + len(data) >= length:
            self._done()
        if data:
            self.wfile.write(data)
            self.bytes_sent += len(data)

    def _abort(self, reset: bool) -> None:
        """End the connection mid-body: a TCP reset (SO_LINGER 0) or a normal close."""
        self.close_connection = True
        if reset:
            self.was_reset = True
            sock = self.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.wfile.close()
            self.rfile.close()
            sock.close()

    # --- routes --------------------------------------------------------------------------

    def _route_name(self) -> str:
        """The counter a request goes to: scrape, metadata, metadata_subkey, details,
        download, storage or other."""
        if self.server.role == "storage":
            return "storage"
        parts = self.raw_path.split("/")
        if self.raw_path == SCRAPE_PATH:
            return "scrape"
        if len(parts) > 2 and parts[1] == "metadata":
            return "metadata_subkey" if len(parts) > 3 and parts[3] else "metadata"
        if len(parts) > 2 and parts[1] in ("details", "download"):
            return parts[1]
        return "other"

    def _route(self) -> None:
        path = self.raw_path
        if path == SCRAPE_PATH and self.server.role == "archive":
            if not self._status_fault("", None):
                self._scrape()
            return
        if self.command == "POST":
            self._send(405, b"Method Not Allowed\n", "text/plain", [("Allow", "GET, HEAD")])
            return
        if path == "/robots.txt":
            self._send(200, ROBOTS, "text/plain")
            return
        name, item = self._target()
        if self._status_fault(name, item):
            return
        if self.server.role == "storage":
            self._storage(item, name)
            return
        parts = path.split("/")
        route = parts[1] if len(parts) > 1 else ""
        if route == "metadata" and len(parts) > 2:
            self._metadata(parts[2], parts[3:])
        elif route == "details" and len(parts) > 2 and parts[2]:
            self._details(parts[2])
        elif route == "download" and len(parts) > 2 and parts[2]:
            self._download(parts[2], name)
        else:
            self._send(404, render.not_found_html(self.decoded_path).encode())

    def _target(self) -> tuple[str, Item | None]:
        """The file name and item a /download or storage path is about ("" and None if none)."""
        parts = self.raw_path.split("/", 4)
        if self.server.role == "archive":
            if len(parts) >= 4 and parts[1] == "download":
                return _decode("/".join(parts[3:])), self.state.catalog.get(_decode(parts[2]))
            return "", None
        if len(parts) == 5 and parts[2] == "items":
            item = self.state.catalog.get(_decode(parts[3]))
            if item and parts[1] == str(item.dir_number):
                return _decode(parts[4]), item
        return "", None

    def _status_fault(self, name: str, item: Item | None) -> bool:
        kinds = STATUS_KINDS | REDIRECT_KINDS
        rule = self.state.take_fault(self.server.role, self.decoded_path, name, kinds)
        if rule is None:
            return False
        self.fault_kind = rule.kind
        if rule.kind == "redirect_loop":
            here = f"http://{self._host()}{self.path}"
            self._send(302, b"", headers=[("Location", here)])
        elif rule.kind == "redirect_foreign":
            self._send(302, b"", headers=[("Location", f"{rule.location}{self.raw_path}")])
        elif rule.kind == "redirect_404":
            missing = f"{self.state.storage_host}/0/items/missing{self.raw_path}"
            self._send(302, b"", headers=[("Location", f"http://{missing}")])
        elif rule.kind == "redirect_refused":  # a storage node that refuses connections
            with socket.socket() as probe:
                probe.bind((STORAGE_IP, 0))
                closed = probe.getsockname()[1]
            path = render.storage_path(item, name) if item and name else self.raw_path
            location = f"http://{STORAGE_IP}:{closed}{path}"  # at the item's dir, as a node
            self._send(302, b"", headers=[("Location", location)])
        else:
            headers = []
            if rule.retry_after is not None and rule.status in (429, 503):
                seconds = rule.retry_after
                headers.append(
                    ("Retry-After", str(int(seconds)) if seconds == int(seconds) else str(seconds))
                )
            body = f"<html><body><h1>{rule.status}</h1></body></html>\n".encode()
            self._send(rule.status, body, headers=headers)
        return True

    def _scrape(self) -> None:
        """The scrape API (GET, or POST with the parameters in the query, as the official
        client sends them): see collections.py."""
        if self.command == "POST":
            self._read_body()
        params = parse_qs(self.query, keep_blank_values=True)
        with self.state.lock:
            catalog = self.state.catalog
        self._send(200, render.dumps(scrape(catalog, params)), "application/json")

    def _host(self) -> str:
        return self.headers.get("Host") or f"{self.server.ip}:{self.server.server_port}"

    def _metadata(self, identifier: str, rest: list[str]) -> None:
        identifier = _decode(identifier)
        if identifier in (self.state.knob("metadata_fail") or []):
            self._send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>\n")
            return
        item = self.state.catalog.get(identifier)
        doc: Any = render.metadata(item, self.state.storage_host) if item else {}
        key = _decode("/".join(rest)).strip("/")
        if key:
            doc = {"result": doc[key]} if item and key in doc else {"error": f"no such key: {key}"}
        kinds = self._hostile(identifier)
        if kinds:
            self._send(200, *hostile.metadata(kinds, doc))
            return
        self._send(200, render.dumps(doc), "application/json")

    def _hostile(self, identifier: str) -> list[str]:
        return (self.state.knob("hostile") or {}).get(identifier) or []

    def _details(self, identifier: str) -> None:
        item = self.state.catalog.get(_decode(identifier))
        if item is None:
            self._send(404, render.not_found_html(f"/details/{_decode(identifier)}").encode())
            return
        page = render.details_html(item, f"http://{self._host()}")
        kinds = self._hostile(item.identifier)
        if kinds:
            doc = render.metadata(item, self.state.storage_host)
            self._send(200, *hostile.details(kinds, page, doc))
            return
        self._send(200, page.encode())

    def _download(self, identifier: str, name: str) -> None:
        item = self.state.catalog.get(_decode(identifier))
        if item is None:
            self._send(404, render.not_found_html(self.decoded_path).encode())
            return
        if not name:
            slash = self.raw_path.endswith("/")
            self._send(200, render.listing_html(item, trailing_slash=slash).encode())
            return
        entry = item.file(name)
        if entry is None or entry.private:
            status = 403 if entry else 404
            self._send(status, render.not_found_html(self.decoded_path).encode())
            return
        location = f"http://{self.state.storage_host}{render.storage_path(item, name)}"
        self._send(302, b"", headers=[("Location", location)])

    def _storage(self, item: Item | None, name: str) -> None:
        entry = item.file(name) if item else None
        if item is None or entry is None or entry.private:
            status = 403 if entry else 404
            body = b"<html><head><title>%d</title></head><body></body></html>\n" % status
            self._send(status, body)
            return
        self._file(item, entry)

    def _file(self, item: Item, entry: FileEntry) -> None:
        size = entry.size
        first, last = 0, size - 1
        status = 200
        modified = entry.mtime + int(self.state.knob("validator_epoch", 0))
        last_modified = email.utils.formatdate(modified, usegmt=True)
        etag = f'"{modified:x}-{size:x}"'
        ignore_ranges = bool(self.state.knob("ignore_ranges", False))
        headers = [
            (
                "Content-Type",
                CONTENT_TYPES.get(
                    os.path.splitext(entry.name)[1].lower(), "application/octet-stream"
                ),
            ),
            ("Last-Modified", last_modified),
            ("ETag", etag),
        ]
        if not ignore_ranges:
            headers.append(("Accept-Ranges", "bytes"))
        wanted = _parse_range(self.headers.get("Range"), size)
        if_range = None if self.state.knob("ignore_if_range") else self.headers.get("If-Range")
        if ignore_ranges or (if_range is not None and if_range not in (etag, last_modified)):
            wanted = None  # the whole file: the client's copy is of another version
        if wanted is not None and self.state.knob("refuse_ranges"):
            wanted = "unsatisfiable"
        if wanted == "unsatisfiable":
            self._send(416, b"", headers=[("Content-Range", f"bytes */{size}")])
            return
        if wanted is not None:
            first, last = wanted
            status = 206
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        length = last - first + 1
        with_body = self.command != "HEAD" and length > 0
        framing = self.state.take_fault("storage", self.decoded_path, entry.name, FRAMING_KINDS)
        if framing and with_body:
            self.fault_kind = framing.kind
            chunks = iter_file_chunks(
                item.identifier, entry.content_key, first, last + 1, 65536, size=size
            )
            self._unframed_body(framing.kind, headers, status, chunks, length)
            return
        self._headers(status, [*headers, ("Content-Length", str(length))], last=not with_body)
        if not with_body:
            return
        bandwidth = self.state.knob("bandwidth")
        chunk = max(1024, min(16384, int(bandwidth) // 20)) if bandwidth else 256 * 1024
        key = entry.content_key
        chunks = iter_file_chunks(item.identifier, key, first, last + 1, chunk, size=size)
        self._write_body(chunks, length, entry.name, float(bandwidth) if bandwidth else None)

    def _unframed_body(
        self,
        kind: str,
        headers: list[tuple[str, str]],
        status: int,
        chunks: Iterable[memoryview],
        length: int,
    ) -> None:
        """A body without Content-Length: chunked, or ended by closing the connection."""
        self.close_connection = kind != "chunked"
        framing = ("Transfer-Encoding", "chunked") if kind == "chunked" else ("Connection", "close")
        self._headers(status, [*headers, framing], last=False)
        limit = length // 2 if kind == "close_short" else length
        bandwidth, started = self.state.knob("bandwidth"), time.monotonic()
        for chunk in chunks:
            chunk = chunk[: max(0, limit - self.bytes_sent)]
            if not chunk:
                break
            if kind == "chunked":
                self.wfile.write(b"%x\r\n" % len(chunk) + bytes(chunk) + b"\r\n")
            else:
                self.wfile.write(chunk)
            self.bytes_sent += len(chunk)
            if bandwidth:
                time.sleep(max(0.0, started + self.bytes_sent / bandwidth - time.monotonic()))
        self._done()
        if kind == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    # --- control -------------------------------------------------------------------------

    def _control(self) -> None:
        route = (self.command, self.raw_path.rstrip("/"))
        if route == ("GET", "/_fake/stats"):
            self._send(200, render.dumps(self.state.snapshot()), "application/json")
        elif route == ("POST", "/_fake/reset"):
            self.state.reset()
            self._send(200, b'{"ok":true}', "application/json")
        elif route == ("GET", "/_fake/config"):
            self._send(200, render.dumps(self.state.config), "application/json")
        elif route == ("POST", "/_fake/config"):
            try:
                update = json.loads(self._read_body() or b"{}")
                if not isinstance(update, dict):
                    raise ConfigError("the config must be a JSON object")
                self.state.configure(update)
            except (ValueError, KeyError, TypeError) as error:
                self._send(400, render.dumps({"error": str(error)}), "application/json")
                return
            self._send(200, render.dumps(self.state.config), "application/json")
        else:
            self._send(404, b'{"error":"no such control route"}', "application/json")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(first, last)`` of a single ``bytes=`` range, "unsatisfiable", or None (send all)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    start, sep, end = header[6:].strip().partition("-")
    if not sep:
        return None
    try:
        if not start:
            suffix = int(end)
            if suffix <= 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        first = int(start)
        last = min(int(end), size - 1) if end else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return "unsatisfiable"
    return first, last


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, ip: str, state: State) -> None:
        self.ip = ip
        self.role = ROLES[ip]
        self.state = state
        super().__init__((ip, 0), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in DNS (socket.getfqdn).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def load_config(value: str | None) -> dict[str, Any]:
    """A config from inline JSON (starting with ``{``) or a JSON file path."""
    if not value:
        return {}
    text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ConfigError("the config must be a JSON object")
    return config


def _stop_on_stdin_eof(stop: threading.Event) -> None:
    """Watch standard input when it is a pipe: the parent going away closes it."""
    try:
        fd = sys.stdin.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
    except (OSError, ValueError):
        return

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts the
        # interpreter's shutdown.
        while os.read(fd, 4096):
            pass
        stop.set()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakearchive", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="JSON object, or the path of a JSON file")
    args = parser.parse_args(argv)
    state = State()
    try:
        state.configure(load_config(args.config))
    except (OSError, ValueError, KeyError, TypeError) as error:
        parser.error(f"bad --config: {error}")
    servers = [FakeServer(ARCHIVE_IP, state), FakeServer(STORAGE_IP, state)]
    state.storage_host = f"{STORAGE_IP}:{servers[1].server_port}"
    for server in servers:
        threading.Thread(
            target=server.serve_forever, args=(0.1,), name=server.role, daemon=True
        ).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _stop_on_stdin_eof(stop)
    origins = {server.role: f"http://{server.ip}:{server.server_port}" for server in servers}
    print(json.dumps(origins), flush=True)
    while not stop.wait(0.2):
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
