"""A fast archive.org for the machinery-bound scenarios: Debian's nginx serving static copies
of what the fake archive serves, so that the client's cost shows rather than the server's.

Two server blocks on loopback ports: 127.0.0.1 serves ``/robots.txt``, ``/details/<id>`` and
``/metadata/<id>`` as static files and answers ``/download/<id>/<name>`` with a 302 to the
second block, on 127.0.0.2, at the item's ``dir`` as its ``/metadata`` gives it (as on
archive.org), which serves the bytes (``Range`` included). Its access log gives
the same request ``log`` as the fake's stats, so the harness reads both alike. Faults,
throttling and anything else the fake can do stay with the fake.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.model import Dataset
from tests.fakearchive import FakeArchive, Item, iter_file_chunks, url_name

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LOG_FORMAT = (
    '{"host":"$server_addr","method":"$request_method","path":"$uri","end":$msec,'
    '"took":$request_time,"status":$status,"bytes_sent":$body_bytes_sent,"range":"$http_range"}'
)
CONFIG = """\
worker_processes 2;
daemon off;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bench escape=json '{log_format}';
    access_log {prefix}/access.log bench;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{archive_port};
        root {prefix}/archive;
        location /metadata/ {{ default_type application/json; }}
        location /details/ {{ default_type text/html; }}
{downloads}
    }}
    server {{
        listen 127.0.0.2:{storage_port};
        root {prefix}/storage;
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NginxArchive:
    """nginx serving static copies of ``datasets`` as ``fake`` serves them.

    Duck-types the parts of :class:`FakeArchive` the harness uses: the URLs, ``item``,
    ``reset``, ``stats()["log"]`` and ``configure`` (unthrottled only).
    """

    def __init__(self, fake: FakeArchive, datasets: list[Dataset], binary: str) -> None:
        self.fake = fake
        self.datasets = datasets
        self.binary = binary
        self.prefix = Path(tempfile.mkdtemp(prefix="ravel-nginx-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.archive_port = free_port("127.0.0.1")
        self.storage_port = free_port("127.0.0.2")
        self.archive = f"http://127.0.0.1:{self.archive_port}"
        self.storage = f"http://127.0.0.2:{self.storage_port}"

    def __enter__(self) -> NginxArchive:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- content -------------------------------------------------------------------------

    def _copy(self, route: str, path: Path) -> None:
        """Save what the fake serves at ``route``, its own addresses replaced by ours."""
        with OPENER.open(f"{self.fake.archive}{route}", timeout=300) as response:
            text = response.read().decode()
        fake_storage = self.fake.storage.split("//", 1)[1]
        text = text.replace(self.fake.archive, self.archive)
        text = text.replace(fake_storage, self.storage.split("//", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def populate(self) -> None:
        """robots.txt, the pages and every audio file of the datasets, on disk."""
        self._copy("/robots.txt", self.prefix / "archive" / "robots.txt")
        self._copy("/robots.txt", self.prefix / "storage" / "robots.txt")
        for data in self.datasets:
            self._copy(f"/metadata/{data.item}", self.prefix / "archive/metadata" / data.item)
            self._copy(f"/details/{data.item}", self.prefix / "archive/details" / data.item)
            item = self.fake.item(data.item)
            assert item is not None, data.item
            folder = self.prefix / "storage" / item.dir.lstrip("/")  # /<n>/items/<id>
            folder.mkdir(parents=True, exist_ok=True)
            for entry in item.files:
                if not entry.is_audio:
                    continue
                with open(folder / entry.name, "wb") as out:
                    chunks = iter_file_chunks(
                        data.item, entry.content_key, chunk=1 << 20, size=entry.size
                    )
                    for chunk in chunks:
                        out.write(chunk)

    def download_locations(self) -> str:
        """One nginx ``location`` per item: its /download 302 to the item's ``dir``."""
        blocks = []
        for data in self.datasets:
            item = self.fake.item(data.item)
            assert item is not None, data.item
            target = f"http://127.0.0.2:{self.storage_port}{item.dir}/$1"
            blocks.append(
                f"        location /download/{data.item}/ {{\n"
                f"            rewrite ^/download/{data.item}/(.+)$ {target} redirect;\n"
                "        }"
            )
        return "\n".join(blocks)

    # --- process -------------------------------------------------------------------------

    def start(self) -> NginxArchive:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.populate()
        user = ""
        if os.geteuid() == 0:  # the workers drop to nobody: everything they read is public
            user = "user nobody nogroup;"
            for folder, _, _ in os.walk(self.prefix):
                os.chmod(folder, 0o755)
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            CONFIG.format(
                user=user,
                prefix=self.prefix,
                log_format=LOG_FORMAT,
                archive_port=self.archive_port,
                storage_port=self.storage_port,
                downloads=self.download_locations(),
            )
        )
        with open(self.prefix / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(conf), "-e", "stderr"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with OPENER.open(f"{self.archive}/robots.txt", timeout=1) as response:
                    response.read()
                with OPENER.open(f"{self.storage}/robots.txt", timeout=1) as response:
                    response.read()
                break
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("nginx did not answer within 10 s")
        if self.process.poll() is not None:
            error = (self.prefix / "stderr.log").read_text(errors="replace")
            self.stop()
            raise RuntimeError(f"nginx did not start: {error}")
        self.reset()
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self.prefix, ignore_errors=True)

    # --- what the harness asks of a server -----------------------------------------------

    def details_url(self, identifier: str) -> str:
        return f"{self.archive}/details/{identifier}"

    def metadata_url(self, identifier: str) -> str:
        return f"{self.archive}/metadata/{identifier}"

    def download_url(self, identifier: str, name: str) -> str:
        return f"{self.archive}/download/{identifier}/{url_name(name)}"

    def item(self, identifier: str) -> Item | None:
        return self.fake.item(identifier)

    def configure(self, knobs: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        update = {**(knobs or {}), **more}
        if update.get("bandwidth") or update.get("latency"):
            raise ValueError("nginx serves unthrottled: use the fake for bandwidth or latency")
        return {}

    def reset(self) -> None:
        """Empty the access log (nginx appends, so it goes on at the new end)."""
        os.truncate(self.prefix / "access.log", 0)

    def stats(self) -> dict[str, Any]:
        """``{"log": [...]}``, entries shaped as the fake's: host, method, path, start, end."""
        log = []
        for line in (self.prefix / "access.log").read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            entry["start"] = entry["end"] - entry.pop("took")
            log.append(entry)
        return {"log": log}
