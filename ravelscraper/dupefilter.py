"""The dupefilter of a crawl without a fleet (``DUPEFILTER_CLASS``; a fleet's is in Redis).

Scrapy's ``RFPDupeFilter`` keeps every request's 20-byte fingerprint as a ``bytes`` object in a
set, ~140 bytes a request with its slot: with one ``/metadata`` request an item, memory that
grows with the collection. :class:`CompactDupeFilter` keeps 8 bytes of each (a
``ravelscraper.digests.DigestSet``), the rest of Scrapy's behaviour unchanged.
"""

from __future__ import annotations

from scrapy import Request
from scrapy.dupefilters import RFPDupeFilter

from ravelscraper.digests import DigestSet


class CompactDupeFilter(RFPDupeFilter):
    """``RFPDupeFilter`` that keeps the first 8 bytes of each fingerprint, in arrays.

    Two different requests are taken for one with probability about n**2 / 2**65 for n
    requests (1 in 200 million for a million). With ``JOBDIR`` the fingerprints are kept on
    disk as well, by Scrapy's own code.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen = DigestSet()

    def request_seen(self, request: Request) -> bool:
        if self.file:  # JOBDIR: Scrapy's own, which writes each fingerprint to the job's folder
            return super().request_seen(request)
        key = int.from_bytes(self.fingerprinter.fingerprint(request)[:8], "big")
        if key in self.seen:
            return True
        self.seen.add(key)
        return False
