"""One download attempt's body as the files pipeline gets it, measured for ``verify``.

Owns :class:`ReceivedBody` (a body streamed to a part file, or held in memory, with its
size and checksum) and :func:`received_body`, which turns a response into one: it waits for
a streamed body's last write, or hashes an in-memory body off the reactor thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from scrapy.http import Response
from scrapy.pipelines.media import FileException

from ravelscraper.downloader.streaming import STREAMED, StoreWriteError, StreamedBody
from ravelscraper.pipelines.verify import hex_digest


@dataclass
class ReceivedBody:
    """One attempt's body: streamed to a part file, or in memory (``data``)."""

    size: int
    checksum: str
    partial: bool  # the connection closed without saying the body was complete
    data: bytes | None = None
    streamed: StreamedBody | None = None

    def discard(self) -> None:
        if self.streamed is not None:
            self.streamed.discard()  # a no-op once renamed into place


async def received_body(
    response: Response,
    streamed: StreamedBody | None,
    write_error: OSError | None,
    algorithm: str,
) -> ReceivedBody:
    """The body of ``response``, now the caller's; ``streamed`` is what the request's target
    got (deleted here unless it is this response's body), ``write_error`` a failed write of
    it. Raises FileException for a body that can't be a file, StoreWriteError for a write
    that failed."""
    partial = "partial" in response.flags
    try:
        resumed = response.status == 206 and STREAMED in response.flags  # the whole file
        if response.status != 200 and not resumed:
            raise FileException(f"HTTP {response.status} from {response.url}")
        if write_error is not None:
            raise StoreWriteError(write_error)
        if STREAMED in response.flags:
            if streamed is None:
                raise FileException("the streamed body was lost")
            try:  # waits for the last queued write: never a file still being written
                size, checksum = await streamed.result()
            except OSError as exc:
                raise StoreWriteError(exc) from None
            return ReceivedBody(size, checksum, partial, streamed=streamed)
    except BaseException:
        if streamed is not None:
            streamed.discard()
        raise
    if streamed is not None:
        streamed.discard()  # not this response's body
    # Hashing releases the GIL: off the reactor thread, it overlaps the transfers.
    checksum = await asyncio.to_thread(hex_digest, algorithm, response.body)
    return ReceivedBody(len(response.body), checksum, partial, data=response.body)
