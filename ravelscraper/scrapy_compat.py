"""The one module that touches Scrapy's and scrapy-redis's private names.

Everything here leans on something upstream does not promise. Each use is a small function
or class with a docstring saying why there is no public way. :func:`missing_names` lists
every private name used here that the installed Scrapy no longer has; the crawl command calls
it first and refuses to start, with one ERROR line, when any is gone, instead of failing
half-way through a crawl (see ``tests/test_scrapy_compat.py``, which also checks the pinned
versions still have them all).

Upstream issues that would make parts of this module unnecessary:

* scrapy/scrapy#7987: a public way to write a response body to a file as it arrives
  (section "bodies to files");
* scrapy/scrapy#7978: a signal for "a request's callback output was fully handled"
  (section "the engine's slot").
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO
from typing import Any, Protocol

from scrapy import Request
from scrapy.core.downloader import Downloader, Slot
from scrapy.exceptions import ResponseDataLossError
from scrapy.http import Response
from scrapy.utils.asyncio import call_later
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

logger = logging.getLogger(__name__)


# --- a cheaper import of the HTTP/1.1 handler --------------------------------------------------
# Importing Scrapy's HTTP/1.1 handler imports its TLS modules, which define deprecated aliases
# with ``scrapy.utils.deprecate.create_deprecated_class``. To name each alias's module, that
# takes its caller's frame from ``inspect.stack()`` (every frame with its source line) and
# ``inspect.getmodule(frame)``: three calls, each looking for the source of every frame of the
# import machinery, and a first getmodule that resolves the path of every loaded module (a
# system call per folder of each). Importing this module took 0.06 s of CPU, now 0.006 s.


def _frames_without_source(context: int = 1) -> list[inspect.FrameInfo]:
    """``inspect.stack()`` as ``inspect.stack(context=0)`` returns it, without looking for
    any frame's source file: the same frames, function names and line numbers."""
    frames = []
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        frames.append(
            inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None)
        )
        frame = frame.f_back
    return frames


@contextmanager
def _frames_looked_up_cheaply() -> Iterator[None]:
    """Within the block, ``inspect.stack`` is :func:`_frames_without_source`, and
    ``inspect.getmodule`` of a frame is the module its code runs in (others as usual)."""
    stack, getmodule = inspect.stack, inspect.getmodule

    def module_of(thing: Any, _filename: str | None = None) -> Any:
        if inspect.isframe(thing):
            return sys.modules.get(thing.f_globals.get("__name__", ""))
        return getmodule(thing, _filename)

    inspect.stack, inspect.getmodule = _frames_without_source, module_of  # type: ignore[assignment]
    try:
        yield
    finally:
        inspect.stack, inspect.getmodule = stack, getmodule  # type: ignore[assignment]


with _frames_looked_up_cheaply():
    from scrapy.core.downloader.handlers import http11

# The versions this module was checked against (requirements.txt pins the same).
PINNED = {"Scrapy": "2.19.0", "scrapy-redis": "0.9.1"}

# --- the engine's slot ---------------------------------------------------------------------
# Scrapy has no public signal for "a request's callback output was fully handled" (its
# children queued, its items through the pipelines): scrapy/scrapy#7978. The engine's slot
# tracks exactly that in ``inprogress``, and whether the spider is closing.


def in_progress(engine: Any) -> set[Request]:
    """Requests the engine is still working on: downloading, in callbacks or in pipelines."""
    return engine._slot.inprogress if engine._slot is not None else set()


def engine_closing(engine: Any) -> bool:
    """The engine has no slot yet, or is closing the spider."""
    return engine._slot is None or engine._slot.closing is not None


def wake_engine(engine: Any) -> None:
    """Ask the engine to look at the scheduler again now, not at its next heartbeat."""
    if engine._slot is not None:
        engine._slot.nextcall.schedule()


# --- bodies to files -----------------------------------------------------------------------
# Scrapy's HTTP/1.1 handler collects a body in the ``BytesIO`` of its private
# ``_ResponseReader``, made by its private ``_ScrapyAgent``; there is no public way to send
# the body elsewhere as it arrives (scrapy/scrapy#7987). The agent below swaps that buffer
# for a sink of the caller's before the first byte arrives.

# Private in Scrapy; looked up softly so that this module imports even when they are gone
# (and missing_names() can say so): the crawl refuses to start before any is used.
_ScrapyAgent: type = getattr(http11, "_ScrapyAgent", object)
_ResponseReader: type = getattr(http11, "_ResponseReader", type(None))
_download_handlers: Any = None
with suppress(ImportError):
    _download_handlers = importlib.import_module("scrapy.utils._download_handlers")


class BodySink(Protocol):
    """What the reader writes a body to, in place of its ``BytesIO``."""

    def write(self, data: bytes) -> int: ...

    def getvalue(self) -> bytes: ...

    def truncate(self, size: int | None = None) -> int: ...

    def discard(self) -> None: ...

    def failed(self) -> None:
        """The transfer failed mid-body: delete what was written, or keep it to resume."""


# Given the Twisted response (headers read, body not) and the reader about to receive its
# body, the sink to write the body to, or None to keep it in memory.
SinkFactory = Callable[[Any, Any], BodySink | None]


class _SinkAgent(_ScrapyAgent):
    """``_ScrapyAgent`` whose body reader writes to the sink ``make_sink`` returns."""

    def __init__(self, make_sink: SinkFactory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.make_sink = make_sink
        self.sink: BodySink | None = None

    def _cb_bodyready(self, txresponse: Any, request: Request) -> Any:
        deliver = txresponse.deliverBody

        def deliver_to_sink(reader: Any) -> None:
            if _fresh_reader(reader):
                self.sink = self.make_sink(txresponse, reader)
                if self.sink is not None:
                    reader._bodybuf = self.sink
            deliver(reader)

        txresponse.deliverBody = deliver_to_sink
        try:
            result = super()._cb_bodyready(txresponse, request)
        finally:
            del txresponse.deliverBody  # the instance attribute: back to the method
        sink = self.sink
        if sink is not None:
            if isinstance(result, Deferred):
                result.addErrback(_discard_on_failure, sink)
            else:
                sink.discard()
        return result


def _fresh_reader(reader: Any) -> bool:
    """A reader of the expected kind that has not received a byte yet."""
    return (
        isinstance(reader, _ResponseReader)
        and isinstance(getattr(reader, "_bodybuf", None), BytesIO)
        and reader._bodybuf.tell() == 0
        and isinstance(getattr(reader, "_finished", None), Deferred)
    )


def _discard_on_failure(failure: Failure, sink: BodySink) -> Failure:
    sink.failed()
    return failure


async def download_to_sink(
    handler: http11.HTTP11DownloadHandler, request: Request, make_sink: SinkFactory
) -> tuple[Response, BodySink | None]:
    """Download ``request`` as ``handler`` would, its body written to ``make_sink``'s sink.

    Returns the response (its body empty when a sink took it) and the sink, if any.
    Uses the handler's private connection pool, TLS context and limits so that the
    download is the handler's own in all but where its body goes.
    """
    agent = _SinkAgent(
        make_sink,
        contextFactory=handler._contextFactory,
        bindAddress=handler._bind_address,
        pool=handler._pool,
        maxsize=handler._default_maxsize,
        warnsize=handler._default_warnsize,
        fail_on_dataloss=handler._fail_on_dataloss,
        crawler=handler._crawler,
        tls_verbose_logging=handler._tls_verbose_logging,
    )
    with _handler_errors(handler, request):
        response = await maybe_deferred_to_future(agent.download_request(request))
    return response, agent.sink


@contextmanager
def _handler_errors(handler: http11.HTTP11DownloadHandler, request: Request) -> Iterator[None]:
    """Errors as ``HTTP11DownloadHandler.download_request`` raises and logs them (its
    Twisted exceptions turned into Scrapy's, one data-loss warning per handler)."""
    try:
        with _download_handlers.wrap_twisted_exceptions():
            yield
    except ResponseDataLossError:
        if not handler._fail_on_dataloss_warned:
            logger.warning(_download_handlers.get_dataloss_msg(request.url))
            handler._fail_on_dataloss_warned = True
        raise


def abort_body(reader: Any, error: Exception) -> None:
    """Fail the body ``reader`` is receiving with ``error`` and drop its connection.

    The reader settles its download through its private ``_finished`` Deferred; failing
    that Deferred is the only way to end the download with an error of our own.
    """
    finished: Deferred[Any] = reader._finished
    if not finished.called:
        finished.errback(Failure(error))
    transport = reader.transport
    if transport is not None:
        transport.stopProducing()
        transport.loseConnection()


# --- the downloader's slot queue -------------------------------------------------------------
# Scrapy's Downloader dispatches each slot's queue in its private ``_process_queue``: always
# the oldest request first, each after the slot's delay, and (Scrapy >= 2.14) counted as
# transferring only once its task runs, so at DOWNLOAD_DELAY = 0 one pass starts the whole
# queue whatever the slot's concurrency. There is no public hook to choose which queued
# request starts, nor when: a downloader middleware runs before the queue, not at dispatch
# (measured in downloader.py's docstring).


class QueueDispatchDownloader(Downloader):
    """Scrapy's Downloader whose slot queues are dispatched by :meth:`dispatch`.

    A subclass implements :meth:`dispatch` with :meth:`start_transfer`,
    :meth:`dispatch_later` and :meth:`drop_queued`; Scrapy calls it wherever it would
    process a slot's queue (a request queued, a transfer done, a delay over).
    """

    def dispatch(self, slot: Slot) -> None:
        """Start, postpone or drop the requests queued in ``slot``."""
        raise NotImplementedError

    def dispatch_all(self) -> None:
        for slot in list(self.slots.values()):
            self.dispatch(slot)

    def start_transfer(self, slot: Slot, position: int) -> None:
        """Start the request at ``position`` of the slot's queue, its place reserved now."""
        request, queue_dfd = slot.queue[position]
        del slot.queue[position]
        # Reserve the place now, not when the task runs: _download() adds it again (a
        # no-op) and frees it.
        slot.transferring.add(request)
        deferred_from_coro(self._wait_for_download(slot, request, queue_dfd))

    def dispatch_later(self, slot: Slot, wait: float) -> None:
        """Look at the slot's queue again in ``wait`` seconds (unless already planned)."""
        if not slot.latercall:
            slot.latercall = call_later(wait, self._latercall, slot)

    @staticmethod
    def drop_queued(slot: Slot, error: Exception) -> None:
        """Fail every request still queued in ``slot`` with ``error``."""
        while slot.queue:
            _, queue_dfd = slot.queue.popleft()
            queue_dfd.errback(Failure(error))

    def _process_queue(self, slot: Slot) -> None:
        self.dispatch(slot)


# --- a failed file's result ------------------------------------------------------------------
# ``MediaPipeline._check_media_to_download`` takes a ``None`` from ``media_failed`` as the
# file's result and logs nothing more. That is undocumented: the documented ways are to raise
# (logged again, with a traceback) or to return a Failure (deprecated). The pipeline's
# ``media_failed`` logs one line and returns None.

_CHECK_MEDIA = "scrapy.pipelines.media.MediaPipeline._check_media_to_download"


# --- the media pipeline's results -----------------------------------------------------------
# ``MediaPipeline`` keeps every file's result for the whole crawl (``SpiderInfo.downloaded``,
# set in its constructor), so that a request seen again is answered from it. A crawl of a
# collection never asks twice, and a million kept results is memory that grows with the
# collection: the pipeline forgets each file's once its item is done.


def forget_media_results(info: Any, fingerprints: list[bytes]) -> None:
    """Drop the cached results of the requests of ``fingerprints`` from the pipeline's
    ``info``."""
    for fingerprint in fingerprints:
        info.downloaded.pop(fingerprint, None)


# --- the stores' settings ----------------------------------------------------------------
# ``FilesPipeline.from_crawler`` hands the stores their settings (AWS_*, FILES_STORE_S3_ACL,
# FTP_USER, FTP_PASSWORD) by setting class attributes in ``_update_stores``, on the classes
# of ``STORE_SCHEMES["s3"]``, ``["gs"]`` and ``["ftp"]`` (so "gs" must stay a key). The
# project's S3 and FTP stores read those attributes; their own ``__init__`` replaces the
# bases', whose URI parsing refuses ``s3://bucket`` and an FTP URL without a port.

_UPDATE_STORES = "scrapy.pipelines.files.FilesPipeline._update_stores"


# --- the check at start ----------------------------------------------------------------------

_HTTP11 = "scrapy.core.downloader.handlers.http11"

# Looked up as attributes: module, then class, then method.
_ATTRIBUTES = (
    f"{_HTTP11}._ScrapyAgent.download_request",
    f"{_HTTP11}._ScrapyAgent._cb_bodyready",
    f"{_HTTP11}._ResponseReader",
    "scrapy.utils._download_handlers.wrap_twisted_exceptions",
    "scrapy.utils._download_handlers.get_dataloss_msg",
    "scrapy.core.downloader.Downloader._process_queue",
    "scrapy.core.downloader.Downloader._latercall",
    "scrapy.core.downloader.Downloader._wait_for_download",
    "scrapy.core.engine._Slot",
    _CHECK_MEDIA,
    _UPDATE_STORES,
)

# Instance attributes, which exist only on live objects: checked as names the class's
# constructor (its own or a base's) uses, which is where Scrapy sets each of them.
_SET_IN_CONSTRUCTOR = {
    "scrapy.pipelines.media.MediaPipeline.SpiderInfo": ("downloaded",),
    "scrapy.core.engine.ExecutionEngine": ("_slot",),
    "scrapy.core.engine._Slot": ("inprogress", "closing", "nextcall"),
    f"{_HTTP11}._ResponseReader": ("_bodybuf", "_finished"),
    f"{_HTTP11}.HTTP11DownloadHandler": (
        "_contextFactory",
        "_bind_address",
        "_pool",
        "_default_maxsize",
        "_default_warnsize",
        "_fail_on_dataloss",
        "_fail_on_dataloss_warned",
        "_tls_verbose_logging",
        "_crawler",
    ),
}

# Names a private function's code uses (reported as ``function (name)``).
_USED_IN_CODE = {
    _CHECK_MEDIA: ("media_failed",),
    # start_transfer reserves a place that _download() adds again and frees.
    "scrapy.core.downloader.Downloader._wait_for_download": ("_download",),
    _UPDATE_STORES: (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_REGION_NAME",
        "AWS_USE_SSL",
        "AWS_VERIFY",
        "AWS_MAX_POOL_CONNECTIONS",
        "POLICY",
        "FTP_USERNAME",
        "FTP_PASSWORD",
    ),
}

# Keyword arguments of private constructors.
_KEYWORDS = {
    f"{_HTTP11}._ScrapyAgent": (
        "contextFactory",
        "bindAddress",
        "pool",
        "maxsize",
        "warnsize",
        "fail_on_dataloss",
        "crawler",
        "tls_verbose_logging",
    ),
}


def _lookup(dotted: str) -> Any:
    """The object a dotted name names (its longest importable module, then attributes)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise AttributeError(dotted)


def _first_missing(dotted: str) -> str | None:
    """The shortest prefix of ``dotted`` that is gone (``a.B`` when class B is), or None."""
    parts = dotted.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        try:
            _lookup(prefix)
        except AttributeError:
            return prefix
    return None


def _constructor_names(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        code = getattr(vars(klass).get("__init__"), "__code__", None)
        names.update(code.co_names if code is not None else ())
    return names


def _code_names(function: Any) -> set[str]:
    return set(getattr(getattr(function, "__code__", None), "co_names", ()))


def _keywords(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


def missing_names() -> list[str]:
    """The private names this module uses that the installed Scrapy lacks; [] when all
    are there. Classes, functions and methods are looked up; instance attributes are
    looked for among the names their class's constructor uses; the names a function relies
    on calling among those its code uses (reported as ``function (name)``); constructor
    keywords in its signature (reported as ``Class(keyword=)``)."""
    missing = [gone for name in _ATTRIBUTES if (gone := _first_missing(name)) is not None]
    for owner, names in _SET_IN_CONSTRUCTOR.items():
        gone = _first_missing(owner)
        found = _constructor_names(_lookup(owner)) if gone is None else set()
        missing += [gone or f"{owner}.{name}" for name in names if name not in found]
    for owner, names in _USED_IN_CODE.items():
        gone = _first_missing(owner)
        found = _code_names(_lookup(owner)) if gone is None else set()
        missing += [gone or f"{owner} ({name})" for name in names if name not in found]
    for owner, names in _KEYWORDS.items():
        gone = _first_missing(owner)
        found = _keywords(_lookup(owner)) if gone is None else set()
        missing += [gone or f"{owner}({name}=)" for name in names if name not in found]
    return list(dict.fromkeys(missing))


def installed_versions() -> dict[str, str]:
    """The installed version of each package in :data:`PINNED`."""
    installed = {}
    for package in PINNED:
        try:
            installed[package] = version(package)
        except PackageNotFoundError:
            installed[package] = "not installed"
    return installed
