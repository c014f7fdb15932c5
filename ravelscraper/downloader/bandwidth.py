"""``RAVEL_BANDWIDTH_LIMIT``: bytes per second for all of one node's file transfers together.

A token bucket (:class:`TokenBucket`) shared by every file body the node receives. Each
chunk read from a transport takes its size in tokens; a bucket in debt pauses that
transport (``pauseProducing``) for as long as the debt takes to refill, then resumes it
(:class:`Pacer`). The kernel's receive window then fills and the sender slows down: the
rate is held while bytes flow, not by sleeping between files. The bucket holds at most
:data:`BURST_SECONDS` of tokens (at least :data:`MIN_BURST` bytes), so an idle spell is not
followed by a burst.

The clock is injectable: the bucket's arithmetic is tested in-process with a fake clock;
the achieved rate is measured by ``python -m benchmarks.bandwidth``, never in a timed test.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from io import BytesIO
from time import monotonic
from typing import Any

BURST_SECONDS = 0.05
MIN_BURST = 16 * 1024


class TokenBucket:
    """``rate`` bytes per second; :meth:`take` says how long to wait after a read."""

    def __init__(self, rate: float, clock: Callable[[], float] = monotonic):
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.rate = float(rate)
        self.burst = max(float(MIN_BURST), self.rate * BURST_SECONDS)
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock()
        self.pauses = 0  # reads paused so far
        self.on_pause: Callable[[], None] | None = None  # counts them (ravel/bandwidth_pauses)

    def refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, size: int) -> float:
        """Count ``size`` bytes just read; the seconds to pause reading (0.0: none)."""
        self.refill()
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def bucket_for(settings: Any) -> TokenBucket | None:
    """The node's bucket, or None when ``RAVEL_BANDWIDTH_LIMIT`` is 0 (no limit)."""
    rate = settings.getfloat("RAVEL_BANDWIDTH_LIMIT")
    return TokenBucket(rate) if rate > 0 else None


class Pacer:
    """Pauses one body's transport while the bucket is in debt.

    ``held`` says whether another reason (the writer thread's backlog) also holds the
    transport paused: it is resumed only once neither does.
    """

    def __init__(self, bucket: TokenBucket, reader: Any, held: Callable[[], bool] = bool):
        self.bucket = bucket
        self.reader = reader
        self.held = held
        self.throttled = False
        self.stopped = False

    def read(self, size: int) -> None:
        """``size`` bytes were read (on the reactor thread)."""
        wait = self.bucket.take(size)
        if wait <= 0 or self.throttled or self.stopped:
            return
        self.throttled = True
        self.bucket.pauses += 1
        if self.bucket.on_pause is not None:
            self.bucket.on_pause()
        self.call("pauseProducing")
        from twisted.internet import reactor

        reactor.callLater(wait, self.release)  # type: ignore[attr-defined]

    def release(self) -> None:
        self.throttled = False
        if not self.stopped and not self.held():
            self.call("resumeProducing")

    def call(self, method: str) -> None:
        transport = getattr(self.reader, "transport", None)
        if transport is not None:
            with suppress(AttributeError, RuntimeError):  # a transport already gone
                getattr(transport, method)()


class PacedBuffer(BytesIO):
    """An in-memory body (S3, FTP stores) read under the node's bandwidth limit."""

    def __init__(self, bucket: TokenBucket, reader: Any):
        super().__init__()
        self.pacer = Pacer(bucket, reader)

    def write(self, data: Any) -> int:
        written = super().write(data)
        self.pacer.read(written)
        return written

    def getvalue(self) -> bytes:
        self.pacer.stopped = True
        return super().getvalue()

    def discard(self) -> None:
        self.pacer.stopped = True

    def failed(self) -> None:
        self.pacer.stopped = True
