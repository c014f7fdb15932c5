"""Files requested straight from their item's storage node, once one file has shown where.

archive.org answers ``/download/<id>/<name>`` with a 302 to ``https://<node>/<dir>/<quoted
name>``, ``dir`` being the item's in ``/metadata``. With ``RAVEL_STORAGE_DIRECT`` the files
pipeline sends an item's first file to be downloaded through ``/download`` (its other files
wait for that 302: one round trip), and :class:`StorageDirect` reads the 302: a redirect to
a storage host (``RAVEL_STORAGE_HOSTS``) at ``<dir>/<quoted name>`` teaches the item's
location, and the item's other files are requested there directly. That saves one request,
and one pass of Scrapy's request machinery, per file; archive.org's front sees one
``/download`` request per item instead of one per file.

Any other answer to that file's ``/download`` (a 200, a 404, a redirect elsewhere; a 503 or
a dropped connection once its retries are over) refuses the shortcut for that item: its
files go through ``/download`` as before, all at once.

A direct request keeps its file's download slot (the front's host): the same pause and the
same cap as before, and the downloader middlewares (robots.txt, retries...) see its real
URL. If it fails in any way (no connection, a timeout, any answer but 200 or 206: a 404, a 5xx, a
redirect) it goes again as its ``/download`` request, which has the usual redirect: at once
for what the retries would not retry (a 404, a redirect), else as the retry (after its
backoff, counted among ``RETRY_TIMES``). The item then takes no more shortcuts (its files
already sent to the node try it once each).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Self
from urllib.parse import quote, urljoin, urlsplit
from weakref import WeakKeyDictionary

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.misc import load_object

from ravelscraper.downloadermiddlewares.hosts import host_allowed, host_patterns

# Request meta: the file's /download URL, on a request sent straight to the storage node.
FRONT_META = "ravel_front"
# Request meta: the item's /metadata ``dir``, on the /download request whose 302 may teach
# the item's location.
DIR_META = "ravel_dir"
SERVED = (200, 206)
REDIRECTS = (301, 302, 303, 307, 308)
REMEMBERED = 1024  # items whose location (or refusal) is kept: memory stays flat


def front_folder(front_url: str, name: str) -> str | None:
    """``<origin>/download/<id>/`` of a file's /download URL, or None if it is not one."""
    quoted = quote(name)
    if not front_url.endswith("/" + quoted):
        return None
    return front_url[: -len(quoted)]


class StorageLocations:
    """Where each item's files are served: the storage URL of its folder, learned from a
    302, keyed by the item's ``<origin>/download/<id>/``. One per crawl (:meth:`of`)."""

    by_crawler: WeakKeyDictionary[Crawler, StorageLocations] = WeakKeyDictionary()

    def __init__(self, enabled: bool = True, storage_hosts: tuple[str, ...] = ()) -> None:
        self.enabled = enabled
        self.storage_hosts = storage_hosts
        self.folders: OrderedDict[str, str | None] = OrderedDict()  # None: refused
        self.teaching: dict[str, asyncio.Future[None]] = {}  # a first file is on its way

    @classmethod
    def of(cls, crawler: Crawler) -> StorageLocations:
        locations = cls.by_crawler.get(crawler)
        if locations is None:
            settings = crawler.settings
            enabled = settings.getbool("RAVEL_STORAGE_DIRECT")
            hosts = host_patterns(settings["RAVEL_STORAGE_HOSTS"]) if enabled else ()
            locations = cls(enabled, hosts)
            cls.by_crawler[crawler] = locations
        return locations

    def direct_url(self, front_url: str, name: str) -> str | None:
        """The storage node's URL of a file, if its item's location is known."""
        key = front_folder(front_url, name) if self.enabled else None
        folder = self.folders.get(key) if key is not None else None
        return None if folder is None else folder + quote(name)

    def may_teach(self, front_url: str, name: str) -> bool:
        """Whether this file's /download 302 may teach its item's location (not yet known
        nor refused)."""
        key = front_folder(front_url, name) if self.enabled else None
        return key is not None and key not in self.folders

    async def wait_turn(self, front_url: str, name: str, storage_dir: str) -> str | None:
        """Wait while another file of the item is on its way through /download; then the
        key this file teaches for (it goes through /download), or None (its item's location
        is known or refused, or it has none). The caller calls :meth:`taught` with the key
        once its file is done."""
        if not storage_dir or not self.enabled:
            return None
        key = front_folder(front_url, name)
        while key is not None and key not in self.folders:
            teaching = self.teaching.get(key)
            if teaching is None:
                self.teaching[key] = asyncio.get_running_loop().create_future()
                return key
            await asyncio.shield(teaching)
        return None

    def taught(self, key: str) -> None:
        """The teaching file is done, or its first answer came: let the others go."""
        teaching = self.teaching.pop(key, None)
        if teaching is not None and not teaching.done():
            teaching.set_result(None)

    def learn(
        self, front_url: str, location: str | None, name: str, storage_dir: str
    ) -> str | None:
        """A file's /download answer (``location``: its redirect, None for no redirect):
        the item's storage folder, kept if it is ``<dir>/`` on a storage host; otherwise the
        item is refused. Returns the folder learned, or None."""
        key = front_folder(front_url, name)
        if key is None or key in self.folders:
            return None
        folder = None
        if location is not None:
            parts = urlsplit(location)
            front_host = urlsplit(front_url).hostname
            allowed = parts.hostname == front_host or host_allowed(
                parts.hostname, self.storage_hosts
            )
            if (
                allowed
                and parts.scheme in ("http", "https")
                and not parts.query
                and not parts.fragment
                and parts.path == f"{storage_dir}/{quote(name)}"
            ):
                folder = f"{parts.scheme}://{parts.netloc}{storage_dir}/"
        self.remember(key, folder)
        return folder

    def refuse(self, front_url: str, name: str) -> None:
        """A direct request failed: the item's files go through /download from now on."""
        key = front_folder(front_url, name)
        if key is not None:
            self.remember(key, None)

    def remember(self, key: str, folder: str | None) -> None:
        self.folders[key] = folder
        self.folders.move_to_end(key)
        while len(self.folders) > REMEMBERED:
            self.folders.popitem(last=False)
        self.taught(key)


class StorageDirect:
    """Downloader middleware, nearer the downloader than redirects and retries: reads the
    item's location from the 302 of its teaching file, and sends a failed direct request
    back to its /download URL: at once for an answer or error the retries would not retry
    (a 404, a redirect), else by the retry path (its backoff, its count, ``[retry]``), whose
    next attempt goes to /download."""

    def __init__(self, crawler: Crawler, locations: StorageLocations) -> None:
        self.crawler = crawler
        self.locations = locations
        settings = crawler.settings
        self.retries = settings.getint("RETRY_TIMES") if settings.getbool("RETRY_ENABLED") else 0
        self.retry_codes = {int(code) for code in settings.getlist("RETRY_HTTP_CODES")}
        self.retry_exceptions = tuple(
            load_object(e) if isinstance(e, str) else e
            for e in settings.getlist("RETRY_EXCEPTIONS")
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler, StorageLocations.of(crawler))

    def process_request(self, request: Request) -> Request | None:
        if FRONT_META in request.meta and request.meta.get("retry_times"):
            return self.fall_back(request)  # a direct request's retry: through /download
        return None

    def process_response(self, request: Request, response: Response) -> Request | Response:
        meta = request.meta
        if FRONT_META in meta:
            if response.status in SERVED:
                return response
            if response.status in self.retry_codes and self.retried(request):
                return response  # the retries wait, then send it to /download
            return self.fall_back(request)
        storage_dir = meta.get(DIR_META)
        if storage_dir and not meta.get("redirect_urls"):  # the teaching file's /download
            if response.status in self.retry_codes and self.retried(request):
                return response  # a 503 or 429: its retry's answer decides
            location = None
            if response.status in REDIRECTS and b"Location" in response.headers:
                raw = response.headers[b"Location"].decode("latin-1")
                location = urljoin(request.url, raw)
            name = meta["ravel_name"]
            if self.locations.learn(request.url, location, name, storage_dir):
                self.inc_stat("ravel/storage_locations_learned")
        return response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        meta = request.meta
        if FRONT_META in meta:
            if isinstance(exception, IgnoreRequest):
                return None  # refused before any connection (robots.txt, stopping)
            if isinstance(exception, self.retry_exceptions) and self.retried(request):
                return None  # the retries wait, then send it to /download
            return self.fall_back(request)
        teaching = meta.get(DIR_META) and not meta.get("redirect_urls")
        retried = isinstance(exception, self.retry_exceptions) and self.retried(request)
        if teaching and not retried:  # no answer, and no retry to come: no shortcut
            self.locations.refuse(request.url, meta["ravel_name"])
        return None

    def retried(self, request: Request) -> bool:
        """Whether the retry middleware will retry ``request`` (a retryable failure)."""
        meta = request.meta
        most = meta.get("max_retry_times", self.retries)
        return not meta.get("dont_retry") and meta.get("retry_times", 0) < most

    def fall_back(self, request: Request) -> Request:
        """The file's /download request, in place of its failed direct request."""
        meta = dict(request.meta)
        front = meta.pop(FRONT_META)
        self.locations.refuse(front, meta["ravel_name"])
        self.inc_stat("ravel/storage_direct_fallbacks")
        return request.replace(url=front, meta=meta, dont_filter=True)

    def inc_stat(self, key: str) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value(key)
