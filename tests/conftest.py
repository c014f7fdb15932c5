"""The tests' fixtures and Hypothesis profile; the helpers they share are in tests/support/."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

from ravelscraper.distributed.schema.keys import JobKeys
from tests.fakearchive import FakeArchive
from tests.fakearchive.server import KNOBS
from tests.support.fleet import NodeGroup
from tests.support.redisserver import RedisServer

NO_KNOBS = dict.fromkeys(KNOBS)  # every knob back to its default

# CI runs the property tests on a fixed seed: an example found by chance is a finding to fix
# where it was found, never a red build on an unrelated change. Locally, seeds vary.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# A resource left open (a ResourceWarning, an error here) surfaces when the garbage collector
# gets to it, in whichever test runs then. RAVEL_TEST_GC=1 collects after every test, so
# that it fails the test that left it (about 20 s more, most of it in the fast loop).
COLLECT_AFTER_EACH_TEST = os.environ.get("RAVEL_TEST_GC") == "1"


@pytest.fixture(autouse=COLLECT_AFTER_EACH_TEST)
def collect_garbage() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="session")
def fake_archive() -> Iterator[FakeArchive]:
    with FakeArchive() as server:
        yield server


@pytest.fixture
def archive(fake_archive: FakeArchive) -> FakeArchive:
    """The session's fake archive.org, with no faults and empty counters."""
    fake_archive.configure(NO_KNOBS)
    fake_archive.reset()
    return fake_archive


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the module (a module that needs another kind overrides this)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on a fresh database of the module's ``redis_server``."""
    with redis_server.client(redis_server.fresh_db()) as opened:
        yield opened


@pytest.fixture
def keys() -> JobKeys:
    """The keys of job "job"."""
    return JobKeys.for_prefix("job")


@pytest.fixture
def fleet(redis_server: RedisServer, tmp_path: Path) -> Iterator[NodeGroup]:
    """Fleet nodes on the module's ``redis_server`` (each fleet test module has its own)."""
    with NodeGroup.on(redis_server, tmp_path) as group:
        yield group
