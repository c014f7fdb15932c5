"""The delay proxy of the benchmarks (E2R): it forwards bytes both ways, in order, and each
way at least its delay later (a lower bound only: never an upper one)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from benchmarks.delayproxy import delay_proxy

DELAY = 0.05  # seconds each way: large enough to be told from loopback
ARRIVED: list[float] = []  # when the server read each line (time.monotonic)


class Upper(socketserver.StreamRequestHandler):
    """Says hello first, then answers each line upper-cased, noting when it came."""

    def handle(self) -> None:
        self.wfile.write(b"hello\n")
        for line in self.rfile:
            ARRIVED.append(time.monotonic())
            self.wfile.write(line.upper())


@pytest.fixture
def upper_server() -> Iterator[int]:
    ARRIVED.clear()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Upper)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def read_line(stream: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = stream.recv(65536)
        assert chunk, f"connection closed after {len(data)} bytes"
        data += chunk
    return data


@pytest.mark.slow  # starts the proxy's process
def test_the_proxy_forwards_both_ways_each_at_least_its_delay_later(upper_server):
    with (
        delay_proxy(upper_server, DELAY) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        assert read_line(client) == b"hello\n"  # the server spoke first
        for text in (b"one\n", b"two\n"):
            sent = time.monotonic()
            client.sendall(text)
            assert read_line(client) == text.upper()
            back = time.monotonic()
            assert ARRIVED[-1] - sent >= DELAY  # client to server
            assert back - ARRIVED[-1] >= DELAY  # server to client
        big = bytes(range(97, 123)) * 40_000 + b"\n"  # ~1 MB: many chunks, kept in order
        client.sendall(big)
        assert read_line(client) == big.upper()
