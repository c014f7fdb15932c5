"""Scrapy's downloader with a per-slot concurrency cap that holds at any download delay.

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
"""

from __future__ import annotations

from time import monotonic

from scrapy import Request
from scrapy.core.downloader import Downloader, Slot
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import _schedule_coro
from twisted.python.failure import Failure


def is_redirect_hop(request: Request) -> bool:
    return bool(request.meta.get("redirect_times"))


class TransferCancelled(IgnoreRequest):
    """A queued download dropped because the crawl is stopping."""


class PoliteDownloader(Downloader):
    stopping = False

    def stop_transfers(self) -> None:
        """Start no new transfer; those under way finish. Used on a fatal store error."""
        self.stopping = True
        for slot in list(self.slots.values()):
            self._process_queue(slot)

    def _process_queue(self, slot: Slot) -> None:
        if self.stopping or not self.crawler.engine.running:
            # Ctrl-C, SIGTERM or a fatal error: drop what has not started, so the crawl
            # stops after the transfers under way instead of after the whole queue.
            while slot.queue:
                _, queue_dfd = slot.queue.popleft()
                queue_dfd.errback(Failure(TransferCancelled("the crawl is stopping")))
            return
        while slot.queue and slot.free_transfer_slots() > 0:
            # A file half-way through its redirect goes first, without a pause, even while
            # the next new request waits for its delay.
            position = next((i for i, (r, _) in enumerate(slot.queue) if is_redirect_hop(r)), 0)
            request, queue_dfd = slot.queue[position]
            if not is_redirect_hop(request):
                if slot.latercall:
                    return  # a delayed dispatch is already planned
                now = monotonic()
                penalty = slot.download_delay() - (now - slot.lastseen)
                if penalty > 0:
                    slot.latercall = call_later(penalty, self._latercall, slot)
                    return
                slot.lastseen = now
            del slot.queue[position]
            # Reserve the place now: _download() adds it again (a no-op) and frees it.
            slot.transferring.add(request)
            _schedule_coro(self._wait_for_download(slot, request, queue_dfd))
