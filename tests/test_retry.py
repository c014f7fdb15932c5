"""The retry middleware's pure parts: Retry-After parsing and the backoff schedule.

In-process, no crawl: the middleware is built from a crawler that never runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.test import get_crawler
from twisted.internet import error as tx_error

from ravelscraper import settings as project_settings
from ravelscraper.downloadermiddlewares import retry as retry_module
from ravelscraper.downloadermiddlewares.retry import (
    BackoffRetryMiddleware,
    HostUnreachable,
    host_of,
    retry_after_seconds,
    unreachable_cause,
)
from ravelscraper.spiders.ravel import RavelSpider

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
URL = "http://127.0.0.1:1/download/item/a.mp3"


# --- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (b"0", 0.0),
        (b"7", 7.0),
        (b"  120 ", 120.0),  # surrounding blanks are no error
        (b"0030", 30.0),
    ],
)
def test_retry_after_as_seconds(header, seconds):
    assert retry_after_seconds(header, NOW) == seconds


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_retry_after_as_an_http_date_counts_from_now(local_time_not_utc):
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True).encode()
    assert retry_after_seconds(later, NOW) == 90.0
    # A date without a zone ("-0000") is taken as UTC, not as local time.
    assert retry_after_seconds(b"Fri, 02 Jan 2026 03:05:05 -0000", NOW) == 60.0
    # Another zone is converted: 04:04:05 +0100 is 03:04:05 UTC, i.e. now.
    assert retry_after_seconds(b"Fri, 02 Jan 2026 04:04:35 +0100", NOW) == 30.0


def test_a_date_in_the_past_means_no_wait_not_a_negative_one():
    earlier = format_datetime(NOW - timedelta(hours=1), usegmt=True).encode()
    assert retry_after_seconds(earlier, NOW) == 0.0


@pytest.mark.parametrize(
    "header",
    [None, b"", b"   ", b"-5", b"1.5", b"soon", b"12s", b"\xb2", b"\xb9\xb3", b"Fri, 99 Foo"],
)
def test_a_header_that_is_neither_seconds_nor_a_date_is_ignored(header):
    # b"\xb2" is "²" in Latin-1, which str.isdigit() accepts and float() refuses.
    assert retry_after_seconds(header, NOW) is None


# Bytes at random, and Latin-1 text made of what looks like digits and blanks.
HEADERS = st.one_of(
    st.binary(max_size=40),
    st.text(alphabet="0123456789\xb2\xb3\xb9\xbc \t\xa0", max_size=12).map(
        lambda text: text.encode("latin-1")
    ),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(HEADERS)
def test_any_bytes_give_a_wait_of_zero_or_more_or_none(header):
    seconds = retry_after_seconds(header, NOW)
    assert seconds is None or (seconds >= 0 and not math.isnan(seconds))


@hypothesis_settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=datetime(1900, 1, 1), timezones=st.just(UTC)))
def test_any_http_date_gives_its_distance_from_now(when):
    # From 1900: RFC 5322 reads years under 100 as two-digit years (68 -> 2068).
    header = format_datetime(when.replace(microsecond=0), usegmt=True).encode()
    expected = (when.replace(microsecond=0) - NOW).total_seconds()
    assert retry_after_seconds(header, NOW) == max(0.0, expected)


@hypothesis_settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**30))
def test_any_delta_seconds_is_read_as_is(seconds):
    assert retry_after_seconds(str(seconds).encode(), NOW) == float(seconds)


# --- the backoff ---------------------------------------------------------------------------


@cache  # one crawler per schedule: Hypothesis calls it once per example
def middleware(base: float = 1.0, cap: float = 60.0) -> BackoffRetryMiddleware:
    crawler = get_crawler(
        settings_dict={"RAVEL_RETRY_BACKOFF_BASE": base, "RAVEL_RETRY_BACKOFF_MAX": cap}
    )
    return BackoffRetryMiddleware.from_crawler(crawler)


def retry(times: int | None) -> Request:
    return Request(URL, meta={} if times is None else {"retry_times": times})


def answer(retry_after: bytes | None = None) -> Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Response(URL, status=503, headers=headers)


def test_the_backoff_doubles_from_the_base_up_to_the_cap():
    backoff = middleware(base=1.5, cap=20.0).backoff
    waits = [backoff(retry(n), None) for n in range(6)]
    assert waits == [1.5, 3.0, 6.0, 12.0, 20.0, 20.0]
    assert backoff(retry(None), None) == 1.5  # a first try has no retry_times yet
    assert backoff(retry(200), None) == 20.0  # 2**200 is no overflow


def test_the_project_defaults_give_1_2_4_s_and_at_most_a_minute():
    crawler = get_crawler(
        settings_dict={
            "RAVEL_RETRY_BACKOFF_BASE": project_settings.RAVEL_RETRY_BACKOFF_BASE,
            "RAVEL_RETRY_BACKOFF_MAX": project_settings.RAVEL_RETRY_BACKOFF_MAX,
        }
    )
    backoff = BackoffRetryMiddleware.from_crawler(crawler).backoff
    assert [backoff(retry(n), None) for n in range(3)] == [1.0, 2.0, 4.0]
    assert backoff(retry(10), None) == 60.0


def test_retry_after_lengthens_the_backoff_never_shortens_it():
    backoff = middleware(base=1.0, cap=60.0).backoff
    assert backoff(retry(0), answer(b"10")) == 10.0
    assert backoff(retry(4), answer(b"3")) == 16.0  # the backoff is longer
    assert backoff(retry(0), answer(b"junk")) == 1.0
    assert backoff(retry(1), answer()) == 2.0


def test_a_huge_retry_after_is_capped_at_the_backoff_max():
    backoff = middleware(base=1.0, cap=45.0).backoff
    assert backoff(retry(0), answer(b"86400")) == 45.0
    assert backoff(retry(0), answer(b"9" * 400)) == 45.0  # float("9"*400) is inf
    far = format_datetime(datetime(9999, 12, 31, tzinfo=UTC), usegmt=True).encode()
    assert backoff(retry(0), answer(far)) == 45.0


@hypothesis_settings(max_examples=200, deadline=None)
@given(header=HEADERS, times=st.integers(min_value=0, max_value=64))
def test_any_header_gives_a_wait_between_the_backoff_and_the_cap(header, times):
    mw = middleware(base=0.5, cap=30.0)
    wait = mw.backoff(retry(times), answer(header))
    assert min(0.5 * 2**times, 30.0) <= wait <= 30.0


# --- what the offline check and the log lines say -------------------------------------------


def test_only_failures_to_connect_count_as_unreachable():
    assert "does not resolve" in str(unreachable_cause(tx_error.DNSLookupError()))
    assert "refused" in str(unreachable_cause(tx_error.ConnectionRefusedError()))
    assert "no route" in str(unreachable_cause(tx_error.NoRouteError()))
    assert unreachable_cause(tx_error.TCPTimedOutError()) == "cannot connect (TCPTimedOutError)"
    assert unreachable_cause(tx_error.ConnectionLost()) is None  # it had connected
    assert unreachable_cause(ValueError("x")) is None


def test_host_of_names_host_and_port_never_the_credentials():
    assert host_of("http://user:secret@example.org:8080/x") == "example.org:8080"
    assert host_of("https://archive.org/download/x") == "archive.org"
    assert host_of("http://evil\x1b.org/") == "evil\\x1b.org"  # escaped for the log


# --- the middleware: waits, and offline fail-fast ------------------------------------------


class Engine:
    """The engine as stop_crawl uses it: closing the spider, with a reason."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    async def close_spider_async(self, reason: str) -> None:
        self.closed.append(reason)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The middleware's waits, recorded instead of slept."""
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(retry_module, "asyncio", SimpleNamespace(sleep=sleep))
    return waited


def running_middleware(**settings: object) -> BackoffRetryMiddleware:
    crawler = get_crawler(
        RavelSpider,
        {
            "RAVEL_RETRY_BACKOFF_BASE": 1.0,
            "RAVEL_RETRY_BACKOFF_MAX": 60.0,
            "RETRY_TIMES": 2,
            **settings,
        },
    )
    crawler.spider = RavelSpider.from_crawler(crawler)
    crawler.engine = Engine()
    crawler.stats.open_spider()
    return BackoffRetryMiddleware.from_crawler(crawler)


def test_a_retried_response_waits_its_backoff_first(waits):
    mw = running_middleware()
    request = retry(1)
    retried = asyncio.run(mw.process_response(request, answer(b"5")))
    assert isinstance(retried, Request) and retried.meta["retry_times"] == 2
    assert waits == [5.0]  # Retry-After beat the 2 s backoff
    assert mw.crawler.stats.get_value("ravel/retry_wait_seconds") == 5.0
    ok = Response(URL, status=200)
    assert asyncio.run(mw.process_response(retry(0), ok)) is ok and waits == [5.0]


def test_a_host_that_cannot_be_reached_before_anything_answered_stops_the_crawl(waits):
    mw = running_middleware()
    first = asyncio.run(mw.process_exception(retry(None), tx_error.DNSLookupError()))
    assert isinstance(first, Request) and waits == [1.0]  # retried once
    with pytest.raises(HostUnreachable) as stopped:
        asyncio.run(mw.process_exception(first, tx_error.DNSLookupError()))
    message = str(stopped.value)
    assert message.startswith("cannot reach 127.0.0.1:1: its name does not resolve")
    assert mw.crawler.stats.get_value("ravel/error") == message
    assert mw.crawler.engine.closed == ["archive_unreachable"] and waits == [1.0]
    with pytest.raises(HostUnreachable):  # every later request is dropped at once
        mw.process_request(Request("http://127.0.0.1:2/other"))


def test_once_anything_answered_the_same_error_is_only_retried(waits):
    mw = running_middleware()
    asyncio.run(mw.process_response(retry(0), Response(URL, status=200)))
    retried = asyncio.run(mw.process_exception(retry(1), tx_error.ConnectionRefusedError()))
    assert isinstance(retried, Request) and waits == [2.0]
    assert mw.offline is None and not mw.crawler.engine.closed


def test_an_unavailable_robots_txt_is_one_warning_and_the_crawl_goes_on(waits, caplog):
    mw = running_middleware()
    mw.answered = True
    robots = Request("http://127.0.0.1:1/robots.txt", meta={"dont_obey_robotstxt": True})
    robots.meta["retry_times"] = 2  # its retries are used up
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(IgnoreRequest, match=r"robots\.txt unavailable"),
    ):
        asyncio.run(mw.process_exception(robots, tx_error.TCPTimedOutError()))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "robots.txt of 127.0.0.1:1 unavailable (TCPTimedOutError); going on without it"
    ]
    assert not waits and mw.offline is None
