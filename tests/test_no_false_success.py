"""No false success (issue 18): every path that drops work fails the run, end to end with
real ``scrapy crawl`` processes against the fake archive.org."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakearchive import FakeArchive
from tests.support.crawl import FAST_LISTING, scrapy_crawl, stored_files
from tests.support.redisserver import RedisServer

pytestmark = pytest.mark.slow


def fake_with(**config: Any) -> FakeArchive:
    return FakeArchive(config)


def test_a_search_whose_cursor_loops_back_fails_the_run_in_one_line(tmp_path: Path) -> None:
    # Pages FIRST -> X, X -> Y, Y -> X: the third page's cursor goes back to the second's.
    config = {
        "collections": {"loop": {"items": 350, "files": 1, "size": 200}},
        "scrape": {"loop_at": "loop-00300", "loop_to": "loop-00100"},
    }
    with fake_with(**config) as fake:
        crawl = scrapy_crawl(
            "-a", "collection=loop", store=tmp_path, RAVEL_ORIGIN=fake.archive, **FAST_LISTING
        )
        scrapes = fake.routes()["scrape"]
    assert crawl.returncode == 1, crawl.log[-3000:]
    repeated = [line for line in crawl.errors if "repeated a page" in line]
    assert len(repeated) == 1, crawl.errors
    assert "Traceback" not in crawl.log and scrapes == 3
    assert len(stored_files(tmp_path)) < 350


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_a_search_whose_cursor_loops_back_fails_a_fleet_node_too(fleet, tmp_path: Path) -> None:
    config = {
        "collections": {"loop": {"items": 350, "files": 1, "size": 200}},
        "scrape": {"loop_at": "loop-00300", "loop_to": "loop-00100"},
    }
    with fake_with(**config) as fake:
        node = fleet.start(
            "-a", "collection=loop", store=tmp_path / "store", RAVEL_ORIGIN=fake.archive,
            **FAST_LISTING,
        )  # fmt: skip
        fleet.wait(timeout=120)
    assert node.returncode == 1, node.log[-3000:]
    errors = node.lines("[ERROR]")
    assert (
        len([line for line in errors if "\tsearch 'collection:loop': archive.org repeated" in line])
        == 1
    )
    # The run closes failed, naming the search.
    assert any(
        "[fleet] run 1 closed" in line and "search:collection:loop" in line for line in errors
    )
    assert "Traceback" not in node.log
