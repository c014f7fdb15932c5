"""A fleet node's one policy when Redis fails (Fleet.redis_failed), in-process on a fake clock;
tests/test_soak.py restarts a real Redis under a crawl."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis import ConnectionError as RedisConnectionError
from redis import ResponseError
from scrapy.utils.test import get_crawler

from ravelscraper.distributed import fleet as fleet_module
from ravelscraper.distributed.fleet import REDIS_UNAVAILABLE, Fleet, FleetSettings
from ravelscraper.distributed.schema.keys import JobKeys

START = 1000.0
WRONGTYPE = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Engine:
    def __init__(self, running: bool = True) -> None:
        self.running = running
        self.closed: list[str] = []

    async def close_spider_async(self, reason: str) -> None:
        self.closed.append(reason)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(fleet_module, "monotonic", fake)
    return fake


def failed(fleet: Fleet, exc: Exception) -> bool:
    """``fleet.redis_failed(exc)`` in an event loop, which runs the spider's closing."""

    async def call() -> bool:
        gave_up = fleet.redis_failed(exc)
        await asyncio.sleep(0)  # stop_crawl schedules the engine's close_spider_async
        return gave_up

    return asyncio.run(call())


def node(grace: float = 30.0, running: bool = True) -> Fleet:
    crawler = get_crawler(settings_dict={"RAVEL_REDIS_GRACE": grace})
    crawler.engine = Engine(running)
    crawler.stats.open_spider()
    fleet = Fleet(crawler)
    fleet.where = "127.0.0.1:6379/0"
    return fleet


def test_redis_failing_is_ridden_out_for_the_grace_then_stops_the_crawl(clock, caplog):
    fleet = node(grace=30.0)
    with caplog.at_level(logging.WARNING):
        assert not failed(fleet, RedisConnectionError())
        clock.now += 29.9
        assert not failed(fleet, RedisConnectionError())
    assert [r.getMessage() for r in caplog.records] == [  # said once per outage
        "[fleet] Redis at 127.0.0.1:6379/0 failed (ConnectionError); retrying for up to 30 s"
    ]
    assert not fleet.stopped and not fleet.crawler.engine.closed
    clock.now += 0.1  # the grace is over
    assert failed(fleet, RedisConnectionError())
    assert fleet.stopped and fleet.crawler.engine.closed == [REDIS_UNAVAILABLE]
    assert fleet.crawler.stats.get_value("ravel/error") == (
        "[fleet] lost Redis at 127.0.0.1:6379/0 for 30 s (ConnectionError); stopping"
    )
    assert failed(fleet, RedisConnectionError())  # stopped for good
    assert fleet.crawler.engine.closed == [REDIS_UNAVAILABLE]  # closed once


def test_an_outage_that_ends_starts_the_grace_afresh(clock, caplog):
    fleet = node(grace=10.0)
    assert not failed(fleet, RedisConnectionError())
    clock.now += 8
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fleet.recovered()
    assert [r.getMessage() for r in caplog.records] == [
        "[fleet] Redis at 127.0.0.1:6379/0 answers again after 8.0 s"
    ]
    clock.now += 5
    assert not failed(fleet, RedisConnectionError())  # 13 s after the first failure
    clock.now += 9.9
    assert not failed(fleet, RedisConnectionError())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        fleet.recovered()
        fleet.recovered()  # no outage: nothing to say
    assert [r.getMessage() for r in caplog.records] == [
        "[fleet] Redis at 127.0.0.1:6379/0 answers again after 9.9 s"  # from the new outage
    ]


def test_a_key_of_the_wrong_type_stops_at_once(clock):
    fleet = node(grace=600.0)
    fleet.keys = JobKeys.for_prefix("job")
    assert failed(fleet, WRONGTYPE)
    error = fleet.crawler.stats.get_value("ravel/error")
    assert error.startswith("[fleet] a key under job:* has the wrong Redis type (WRONGTYPE)")
    assert fleet.crawler.engine.closed == [REDIS_UNAVAILABLE]


def test_giving_up_when_the_crawl_is_not_running_only_reports(clock):
    fleet = node(grace=0.0, running=False)
    assert failed(fleet, RedisConnectionError())
    assert fleet.stopped and not fleet.crawler.engine.closed
    assert "lost Redis" in fleet.crawler.stats.get_value("ravel/error")


def test_max_leases_defaults_to_the_per_domain_cap():
    settings = {"CONCURRENT_REQUESTS_PER_DOMAIN": 3, "RAVEL_NODE_MAX_LEASES": 0}
    assert FleetSettings.from_settings(get_crawler(settings_dict=settings).settings).max_leases == 3
    settings["RAVEL_NODE_MAX_LEASES"] = 7
    assert FleetSettings.from_settings(get_crawler(settings_dict=settings).settings).max_leases == 7
