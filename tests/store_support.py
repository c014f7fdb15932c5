"""Servers for the store tests: moto's S3 server and a refusing FTP server, on loopback."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from tests.conftest import ROOT, Crawl, crawl_command, crawl_env

S3_SETTINGS = {
    "AWS_ACCESS_KEY_ID": "test-key-id",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_REGION_NAME": "us-east-1",
}
# No instance-metadata lookup (a link-local address) when credentials are missing.
S3_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if server._server is not None:
            server._server.server_close()


class _RefusingFTP(socketserver.StreamRequestHandler):
    """Greets, asks for a password, refuses it: an FTP server with other credentials."""

    def handle(self) -> None:
        self.wfile.write(b"220 fake FTP\r\n")
        for _ in range(10):
            line = self.rfile.readline(512)
            if not line:
                return
            command = line.split(b" ", 1)[0].strip().upper()
            if command == b"USER":
                self.wfile.write(b"331 Password required\r\n")
            elif command == b"PASS":
                self.wfile.write(b"530 Login incorrect.\r\n")
            else:
                self.wfile.write(b"221 Bye\r\n")
                return


@contextmanager
def refusing_ftp() -> Iterator[str]:
    """An FTP server on 127.0.0.1 that refuses every login; yields ``host:port``."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RefusingFTP)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def crawl_with_env(
    *args: str, store: object, env: dict[str, str], timeout: float = 120, **settings: object
) -> Crawl:
    """``scrapy_crawl`` with extra environment variables and no AWS_* ones inherited."""
    base = {k: v for k, v in crawl_env().items() if not k.startswith("AWS_")}
    done = subprocess.run(
        crawl_command(*args, store=store, **settings),  # type: ignore[arg-type]
        cwd=ROOT,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Crawl(done.returncode, done.stdout + done.stderr)
