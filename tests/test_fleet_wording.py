"""What a fleet node says when it gives up on Redis (issue 18, 12): "lost" only when Redis
did not answer; an error answer (OOM under ``maxmemory``, say) is said as a refusal."""

from __future__ import annotations

import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError
from scrapy.utils.test import get_crawler

from ravelscraper.distributed.fleet import Fleet
from ravelscraper.spiders.ravel import RavelSpider


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), False),
        (RedisConnectionError("Connection refused"), True),
        (RedisTimeoutError("Timeout reading from socket"), True),
    ],
)
def test_a_node_giving_up_says_lost_only_when_redis_did_not_answer(
    caplog: pytest.LogCaptureFixture, error: Exception, lost: bool
) -> None:
    crawler = get_crawler(RavelSpider, {"RAVEL_ORIGIN": "https://archive.org"})
    RavelSpider.from_crawler(crawler)
    fleet = Fleet(crawler)
    crawler.engine = SimpleNamespace(running=False)  # not running: the line, no stop
    fleet.settings = replace(fleet.settings, redis_grace=0)
    with caplog.at_level(logging.ERROR):
        assert fleet.redis_failed(error)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and type(error).__name__ in errors[0]
    assert ("lost Redis" in errors[0]) == lost
    assert ("Redis refused our commands" in errors[0]) != lost
