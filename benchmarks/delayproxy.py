"""A TCP proxy that delays every byte by a fixed time each way: Redis "on another machine".

    python -m benchmarks.delayproxy TARGET_PORT [--delay 0.001] [--target-host 127.0.0.1]

listens on a free loopback port, prints it on one line, and forwards each connection to the
target; whatever arrives from either side is written to the other ``delay`` seconds later
(1 ms each way: a 2 ms round trip, a LAN or one cloud zone). Only latency is added: chunks
keep their order and are not held back by the ones before them, so pipelined commands stay
pipelined. :func:`delay_proxy` runs it as a process of its own (the benchmark's sampling
never holds it up) until the ``with`` block ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DELAY = 0.001  # seconds each way: a 2 ms round trip


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await chunks.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(deliver())
    try:
        while data := await reader.read(65536):
            chunks.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    chunks.put_nowait((0.0, b""))
    with contextlib.suppress(ConnectionError):
        await sender
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof()


async def serve(target_host: str, target_port: int, delay: float, port: int = 0) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(pipe(client_r, server_w, delay), pipe(server_r, client_w, delay))
        finally:
            for writer in (client_w, server_w):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delayproxy", description=__doc__)
    parser.add_argument("target_port", type=int)
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--delay", type=float, default=DELAY, help="seconds each way (0.001)")
    parser.add_argument("--port", type=int, default=0, help="where to listen (0: a free port)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.target_host, args.target_port, args.delay, args.port))


@contextlib.contextmanager
def delay_proxy(target_port: int, delay: float = DELAY) -> Iterator[int]:
    """``with delay_proxy(redis_port) as port:`` Redis at ``127.0.0.1:port``, ``delay``
    seconds away each way."""
    command = [sys.executable, "-m", "benchmarks.delayproxy", str(target_port)]
    process = subprocess.Popen(
        [*command, "--delay", str(delay)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"the delay proxy did not start (it said {line!r})")
        yield int(line)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    main()
