"""Servers for the store tests, on loopback: moto's S3 server and pyftpdlib's FTP server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support.crawl import ROOT, Crawl, crawl_command, crawl_env
from tests.support.loopback import free_port

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


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client on ``endpoint`` with the tests' credentials (``S3_SETTINGS``)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_SETTINGS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_SETTINGS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_SETTINGS["AWS_REGION_NAME"],
    )


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


@contextmanager
def ftp_server(home: Path, user: str, password: str) -> Iterator[str]:
    """A real FTP server (pyftpdlib, a subprocess) on 127.0.0.1 serving ``home`` read-write
    to one user; yields ``host:port``."""
    port = free_port()
    command = [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(port), "-w"]
    command += ["-d", str(home), "-u", user, "-P", password]
    server = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


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
