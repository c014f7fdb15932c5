"""The fleet cap's decisions (ravelscraper.distributed.fleetcap), in-process on a fake clock:
when a transfer goes ahead, waits, gives up; what it returns and renews. The Redis semaphore
itself is TransferPlaces (tests/test_redis_schema.py); one test here runs two nodes' caps on a
real redis-server."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from redis import ConnectionError as RedisConnectionError
from scrapy import Request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.utils.test import get_crawler

from ravelscraper.distributed import fleetcap
from ravelscraper.distributed.fleetcap import POLL, FleetTransferCap
from ravelscraper.distributed.schema.keys import JobKeys
from ravelscraper.distributed.schema.places import TransferPlaces
from tests.support.redisserver import RedisServer

URL = "http://127.0.0.1:1/download/item/a.mp3"
START = 1000.0


class Clock:
    """The module's monotonic(), and its asyncio.sleep, which moves the clock on."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []
        self.on_sleep: list = []  # called at each sleep, e.g. another node releasing

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for call in self.on_sleep:
            call()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(fleetcap, "monotonic", fake)
    monkeypatch.setattr(fleetcap, "asyncio", SimpleNamespace(sleep=fake.sleep))
    return fake


class Places:
    """A stand-in for TransferPlaces: ``answers`` to acquire in turn (True, False, or an
    exception to raise), then ``then``."""

    def __init__(self, *answers: object, then: object = False) -> None:
        self.answers = list(answers)
        self.then = then
        self.acquired: list[tuple[str, int, int, int]] = []
        self.released: list[str] = []
        self.stopped_waiting: list[str] = []
        self.renewed: list[tuple[int, list[str]]] = []
        self.release_error: Exception | None = None

    def acquire(self, token: str, limit: int, ttl_ms: int, waiting_ttl_ms: int) -> bool:
        self.acquired.append((token, limit, ttl_ms, waiting_ttl_ms))
        answer = self.answers.pop(0) if self.answers else self.then
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    def release(self, token: str) -> None:
        if self.release_error is not None:
            raise self.release_error
        self.released.append(token)

    def stop_waiting(self, token: str) -> None:
        self.stopped_waiting.append(token)

    def renew(self, ttl_ms: int, tokens: list[str]) -> int:
        self.renewed.append((ttl_ms, tokens))
        return len(tokens)


def cap(
    places: object = None, limit: int = 2, connected: bool = True, **settings
) -> FleetTransferCap:
    crawler = get_crawler(
        settings_dict={
            "RAVEL_FLEET_MAX_TRANSFERS": limit,
            "RAVEL_FLEET_LEASE_TTL": 60.0,
            "RAVEL_FLEET_WAIT_TIMEOUT": 10.0,
            "DOWNLOAD_TIMEOUT": 180,
            **settings,
        }
    )
    crawler.stats.open_spider()
    made = FleetTransferCap.from_crawler(crawler)
    made.fleet.queue = object() if connected else None  # what "connected" asks
    made.fleet.node = "n1"
    made.places = places  # type: ignore[assignment]
    return made


def take(middleware: FleetTransferCap, request: Request) -> None:
    asyncio.run(middleware.process_request(request))


# --- from the settings ----------------------------------------------------------------------


def test_no_cap_is_no_middleware():
    with pytest.raises(NotConfigured):
        cap(limit=0)
    made = cap(limit=3, RAVEL_FLEET_LEASE_TTL=1.5, RAVEL_FLEET_WAIT_TIMEOUT=30.0)
    assert (made.limit, made.lease_ttl_ms, made.wait_timeout) == (3, 1500, 30.0)
    assert made.renew in made.fleet.on_heartbeat


# --- taking a place -------------------------------------------------------------------------


def test_a_free_place_is_taken_at_once(clock):
    places = Places(True)
    middleware = cap(places, limit=2)
    request = Request(URL)
    take(middleware, request)
    ((token, limit, ttl_ms, waiting_ttl_ms),) = places.acquired
    assert token.startswith("n1:") and (limit, ttl_ms) == (2, 60_000)
    assert waiting_ttl_ms == fleetcap.WAITING_TTL_MS
    assert middleware.held == {id(request): (token, START)} and not clock.sleeps
    assert middleware.crawler.stats.get_value("ravel/fleet_cap_wait_seconds") is None


@pytest.mark.parametrize("url", ["data:,x", "file:///etc/hosts", "s3://bucket/key"])
def test_only_http_transfers_take_a_place(clock, url):
    places = Places(True)
    middleware = cap(places)
    take(middleware, Request(url))
    assert not places.acquired and not middleware.held


def test_a_node_not_connected_takes_no_place(clock):
    places = Places(True)
    middleware = cap(places, connected=False)
    take(middleware, Request(URL))
    assert not places.acquired and not middleware.held


def test_a_transfer_waits_polling_until_a_place_frees(clock):
    places = Places(*[False] * 5, True)
    middleware = cap(places)
    request = Request(URL)
    take(middleware, request)
    assert len(places.acquired) == 6 and len(clock.sleeps) == 5
    assert len({token for token, *_ in places.acquired}) == 1  # one place in line, kept
    assert all(POLL[0] <= s <= POLL[1] for s in clock.sleeps)
    assert middleware.held[id(request)][1] == clock.now  # taken when it got the place
    # 5 polls are under 1 s (at most 0.75 s): not counted as a wait.
    assert middleware.crawler.stats.get_value("ravel/fleet_cap_wait_seconds") is None


def test_a_wait_of_a_second_or_more_is_counted(clock):
    middleware = cap(Places(*[False] * 20, True))  # 20 polls of at least 0.05 s: >= 1 s
    take(middleware, Request(URL))
    waited = sum(clock.sleeps)
    assert waited >= 1
    assert middleware.crawler.stats.get_value("ravel/fleet_cap_wait_seconds") == round(waited, 1)


def test_no_place_within_the_wait_timeout_fails_the_transfer(clock):
    places = Places(then=False)
    middleware = cap(places, RAVEL_FLEET_WAIT_TIMEOUT=2.0)
    request = Request(URL)
    with pytest.raises(IgnoreRequest, match=r"no transfer place within 2 s"):
        take(middleware, request)
    token = places.acquired[0][0]
    assert places.stopped_waiting == [token]  # gives its turn away
    assert not middleware.held
    # It gave up on the first look past the timeout, not before, not later.
    assert sum(clock.sleeps[:-1]) <= 2.0 < sum(clock.sleeps)


def test_redis_failing_within_the_grace_keeps_the_transfer_waiting(clock):
    failures: list[Exception] = []
    places = Places(RedisConnectionError("down"), RedisConnectionError("down"), True)
    middleware = cap(places)
    middleware.fleet.redis_failed = lambda exc: failures.append(exc) or False
    request = Request(URL)
    take(middleware, request)
    assert len(failures) == 2 and id(request) in middleware.held and len(clock.sleeps) == 2


def test_redis_failing_for_good_fails_the_transfer(clock):
    places = Places(RedisConnectionError("down"), then=True)
    middleware = cap(places)
    middleware.fleet.redis_failed = lambda exc: True
    with pytest.raises(IgnoreRequest, match=r"fleet cap: Redis failed \(ConnectionError\)"):
        take(middleware, Request(URL))
    assert not middleware.held and not clock.sleeps


# --- giving it back, renewing ---------------------------------------------------------------


def test_the_place_is_returned_with_the_response_or_the_error(clock):
    places = Places(then=True)
    middleware = cap(places)
    first, second = Request(URL), Request(URL)
    take(middleware, first)
    take(middleware, second)
    tokens = [token for token, *_ in places.acquired]
    response = Response(URL)
    assert middleware.process_response(first, response) is response
    assert middleware.process_exception(second, OSError("reset")) is None
    assert places.released == tokens and not middleware.held
    middleware.process_response(first, response)  # returned once only
    assert places.released == tokens


def test_a_failed_return_is_one_warning_the_lease_expires_by_itself(clock, caplog):
    places = Places(then=True)
    middleware = cap(places)
    request = Request(URL)
    take(middleware, request)
    places.release_error = RedisConnectionError("down")
    with caplog.at_level(logging.WARNING):
        middleware.process_exception(request, OSError())
    assert not middleware.held
    assert [r.getMessage() for r in caplog.records] == [
        "[fleet] could not return a fleet-cap lease: ConnectionError"
    ]


def test_renew_extends_running_transfers_and_forgets_the_lost(clock):
    places = Places(then=True)
    middleware = cap(places, DOWNLOAD_TIMEOUT=100)
    middleware.renew()
    assert not places.renewed  # nothing held: no call
    old, slow, new = Request(URL), Request(URL), Request(URL)
    take(middleware, old)
    clock.now += 2
    take(middleware, slow)
    clock.now += 100 + 59  # slow: DOWNLOAD_TIMEOUT + 59 s; old: 1 s more than + 60 s
    take(middleware, new)
    middleware.renew()
    tokens = [middleware.held[id(r)][0] for r in (slow, new)]
    assert places.renewed == [(60_000, tokens)]
    assert id(old) not in middleware.held  # lost track of: it expires by itself
    clock.now += 100 + 60 + 1
    middleware.renew()  # the others lost too: nothing to renew
    assert len(places.renewed) == 1 and not middleware.held


# --- two nodes on one Redis -----------------------------------------------------------------


def test_two_nodes_share_one_place(redis_server: RedisServer, clock):
    with redis_server.client(redis_server.fresh_db()) as client:
        keys = JobKeys.for_prefix("job")
        one, two = cap(limit=1), cap(limit=1)
        two.fleet.node = "n2"
        one.places = TransferPlaces(client, keys)
        two.places = TransferPlaces(client, keys)
        first, second = Request(URL), Request(URL)
        take(one, first)
        # n2 waits; after its third look, n1's transfer ends.
        clock.on_sleep.append(
            lambda: len(clock.sleeps) == 3 and one.process_response(first, Response(URL))
        )
        take(two, second)
        assert len(clock.sleeps) == 3 and id(second) in two.held
        assert client.zrange(keys.fleetcap, 0, -1) == [two.held[id(second)][0].encode()]
