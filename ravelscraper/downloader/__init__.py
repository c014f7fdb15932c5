"""The downloader's dispatch policy: which queued request of a slot starts, and when.

Owns the per-slot concurrency cap at any download delay, one pause per file (not per
redirect hop), the listing pace, and dropping queued downloads when the crawl stops. The
mechanism (an override of a private method of Scrapy's Downloader) lives in
:class:`ravelscraper.scrapy_compat.QueueDispatchDownloader`; this module only decides.

Scrapy >= 2.14 starts each request popped from a slot's queue as a task, and counts it
as transferring only once that task runs. With ``DOWNLOAD_DELAY = 0`` the dispatch loop
therefore empties the whole queue at once: a cap of 3 let 35 transfers run together.
``PoliteDownloader`` reserves the transfer place when it dispatches the request.

When the crawl stops (Ctrl-C, SIGTERM, a full disk), queued downloads are dropped and
only the transfers under way finish.

It also lets the follow-up of a redirect skip the delay: archive.org answers every
download with a 302 to a storage node, and a file should cost one pause, not two. The
follow-up stays in the slot of its first request (Scrapy copies ``download_slot`` into
the redirected request), so archive.org and its storage nodes share one cap.

The few small requests that list an item (robots.txt, ``/metadata``, the details page) keep
their own pace, ``RAVEL_LISTING_DELAY`` (or ``DOWNLOAD_DELAY`` if smaller), instead of each
waiting a file's pause: the first file starts about as soon as ``/metadata`` has answered,
and files still start ``DOWNLOAD_DELAY`` apart, under the same cap.

Why not a public downloader middleware with a per-slot semaphore (Scrapy's stock
Downloader, the cap taken in ``process_request`` and given back in ``process_response``
/ ``process_exception``)? Measured with tests/test_politeness.py and test_first_run.py:
it holds the cap (3 of 3 at zero delay, 2 of 2 with AutoThrottle), but a middleware runs
before the slot's queue, not at dispatch, so it cannot let a redirect hop or a listing
request go ahead of the files waiting their pause: the hop after a 302 waited 12.1 s
(median; under 0.15 s here) and the first file started 10.3 s after launch (under 3 s
here, the listing requests each paying a file's pause).
"""

from __future__ import annotations

from time import monotonic

from scrapy import Request
from scrapy.core.downloader import Slot
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.httpobj import urlparse_cached

from ravelscraper.scrapy_compat import QueueDispatchDownloader


def is_redirect_hop(request: Request) -> bool:
    return bool(request.meta.get("redirect_times"))


class TransferCancelled(IgnoreRequest):
    """A queued download dropped because the crawl is stopping."""


class PoliteDownloader(QueueDispatchDownloader):
    stopping = False

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self.listing_delay = crawler.settings.getfloat("RAVEL_LISTING_DELAY")
        self.listing_lastseen: dict[Slot, float] = {}

    def is_listing(self, request: Request) -> bool:
        """robots.txt, or a request of one of the spider's ``listing_callbacks``."""
        if urlparse_cached(request).path == "/robots.txt":
            return True
        callbacks = getattr(self.crawler.spider, "listing_callbacks", ())
        return getattr(request.callback, "__name__", None) in callbacks

    def next_ready(self, slot: Slot) -> tuple[int | None, float]:
        """The queue position of the request to start now (its start is recorded), or None
        and the seconds to wait.

        A file half-way through its redirect goes first, without a pause. Otherwise the first
        request whose pause is over: files wait ``DOWNLOAD_DELAY`` after the previous file,
        listing requests the listing pace after the previous listing request, so neither
        kind waits behind the other.
        """
        for position, (request, _) in enumerate(slot.queue):
            if is_redirect_hop(request):
                return position, 0.0
        now = monotonic()
        file_wait = slot.download_delay() - (now - slot.lastseen)
        pace = min(self.listing_delay, slot.delay)
        listing_wait = pace - (now - self.listing_lastseen.get(slot, 0.0))
        waiting: set[bool] = set()  # the kinds (listing or not) found waiting
        for position, (request, _) in enumerate(slot.queue):
            listing = self.is_listing(request)
            if (listing_wait if listing else file_wait) <= 0:
                if listing:
                    self.listing_lastseen[slot] = now
                else:
                    slot.lastseen = now
                return position, 0.0
            waiting.add(listing)
            if len(waiting) == 2:
                break  # both kinds wait: no need to look further
        return None, min(listing_wait if listing else file_wait for listing in waiting)

    def stop_transfers(self) -> None:
        """Start no new transfer; those under way finish. Used on a fatal store error."""
        self.stopping = True
        self.dispatch_all()

    def dispatch(self, slot: Slot) -> None:
        if self.stopping or not self.crawler.engine.running:
            # Ctrl-C, SIGTERM or a fatal error: drop what has not started, so the crawl
            # stops after the transfers under way instead of after the whole queue.
            self.drop_queued(slot, TransferCancelled("the crawl is stopping"))
            return
        while slot.queue and slot.free_transfer_slots() > 0:
            position, wait = self.next_ready(slot)
            if position is None:
                self.dispatch_later(slot, wait)
                return
            self.start_transfer(slot, position)
