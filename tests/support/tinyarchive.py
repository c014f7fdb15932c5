"""A tiny archive.org in the test process, serving hand-written metadata.

A real HTTP server on 127.0.0.1 (a thread of the test process): it serves ``/metadata/<id>``
exactly as given, so a test can list files the shared fake archive does not have (odd
lengths, names differing only in case), and each file's bytes from ``/download``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit


def body_of(identifier: str, name: str, size: int = 2048) -> bytes:
    seed = hashlib.sha256(f"{identifier}/{name}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def metadata_entry(identifier: str, name: str, **fields: str) -> dict[str, str]:
    data = body_of(identifier, name)
    entry = {"name": name, "format": "VBR MP3", "source": "original", "size": str(len(data))}
    entry["md5"] = hashlib.md5(data).hexdigest()
    entry.update(fields)
    return entry


class TinyArchive:
    """``with TinyArchive({"item": [entries...]}) as archive: archive.details_url("item")``."""

    def __init__(self, items: dict[str, list[dict[str, str]]]) -> None:
        self.items = items
        self.downloads: list[str] = []
        tiny = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
                if parts[:1] == ["robots.txt"]:
                    self.reply(b"User-agent: *\nAllow: /\n", "text/plain")
                elif parts[:1] == ["details"]:
                    self.reply(b"<html><body>details</body></html>", "text/html")
                elif parts[:1] == ["metadata"] and len(parts) == 2:
                    files = tiny.items.get(parts[1])
                    found = {"files": files, "metadata": {"title": parts[1]}} if files else {}
                    self.reply(json.dumps(found).encode(), "application/json")
                elif parts[:1] == ["download"] and len(parts) >= 3:
                    name = "/".join(parts[2:])
                    tiny.downloads.append(name)
                    self.reply(body_of(parts[1], name), "audio/mpeg")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TinyArchive:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def details_url(self, identifier: str) -> str:
        return f"{self.origin}/details/{quote(identifier)}"
