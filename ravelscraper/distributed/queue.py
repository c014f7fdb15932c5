"""The fleet's request queue: scrapy-redis's queue class, leasing entries instead of popping them.

Stock scrapy-redis pops destructively: a request in flight on a node that dies is lost. Here
:meth:`ReliableQueue.pop` moves the entry to ``inflight`` under the node's name; the scheduler
acknowledges it once the request and everything it produced is done (see
:mod:`ravelscraper.distributed.scheduler`), or hands it back. The Redis side of each step is
one script of :mod:`ravelscraper.distributed.schema`.
"""

from __future__ import annotations

from typing import Any

from scrapy import Request, Spider
from scrapy_redis.queue import Base

from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.schema.queue import JobData
from ravelscraper.distributed.serializer import HELD_CALLBACKS, MAX_ENTRY_BYTES, decode

ENTRY_META = "ravel_entry"  # the id of the queue entry a popped request came from


class RejectedEntry(Exception):
    """An entry that cannot be used (too large, malformed, hostile); ``reason`` is one line."""

    def __init__(self, entry_id: str, reason: str) -> None:
        super().__init__(reason)
        self.entry_id = entry_id
        self.reason = reason


class ReliableQueue(Base):
    """A priority queue with leases; the scheduler's ``queue``."""

    def __init__(
        self,
        spider: Spider,
        serializer: Any,
        *,
        data: JobData,
        origins: AllowedOrigins,
        max_pending: int = 0,
    ) -> None:
        super().__init__(data.client, spider, data.keys.requests, serializer)
        self.data = data
        self.origins = origins
        self.max_pending = max_pending  # RAVEL_FLEET_MAX_PENDING (0: no bound)

    def __len__(self) -> int:
        return self.data.queued()

    def encode(self, request: Request) -> bytes:
        """The entry for ``request``: the serializer's checked JSON of ``Request.to_dict``."""
        # A popped request carries a guarded errback (see scheduler): queue the spider's
        # own method, which is what the entry names.
        original = getattr(request.errback, "ravel_original", None)
        if original is not None:
            request = request.replace(errback=original)
        return self.serializer.dumps(request.to_dict(spider=self.spider))

    # Extends Base.push: "seen" and "queued" in one script (the fingerprint), and the owner
    # ("file:<path>" or "item:<identifier>") the ledger fails if the entry is ever given up.
    def push(self, request: Request, fingerprint: str | None = None, owner: str = "") -> bool:
        """Queue ``request`` unless its fingerprint was seen in this run; False if it was."""
        listing = getattr(request.callback, "__name__", "") in HELD_CALLBACKS
        return self.data.push(
            self.encode(request), request.priority, fingerprint or "", owner, listing
        )

    # Overrides Base.pop, which removes the entry for good: here it is leased (``ENTRY_META``
    # names it) until the scheduler acknowledges it or hands it back.
    def pop(self, timeout: int = 0) -> Request | None:
        """Lease the first entry and decode it; RejectedEntry if it cannot be used."""
        popped = self.data.pop(MAX_ENTRY_BYTES, self.max_pending)
        if popped is None:
            return None
        entry_id, payload = popped
        if isinstance(payload, int):
            raise RejectedEntry(entry_id, f"entry of {payload} bytes is larger than the limit")
        try:
            request = decode(payload, self.spider, self.origins)
        except Exception as exc:  # any bad entry: one line, never a crash
            raise RejectedEntry(entry_id, describe(exc)) from None
        request.meta[ENTRY_META] = entry_id
        return request

    # Overrides Base.clear, which deletes the key: the queue belongs to the whole fleet.
    def clear(self) -> None:
        raise RuntimeError("a fleet queue is shared: reset it with `scrapy fleet reset`")


def describe(exc: BaseException) -> str:
    """An exception as one short line (the message of ours, the type of anything else)."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, ValueError) and type(exc).__module__.startswith("ravelscraper"):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
