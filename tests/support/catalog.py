"""The fixtures of a test module that runs its own fake archive.org on its own catalog."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakearchive import FakeArchive


def catalog_fixtures(config: dict[str, Any]) -> tuple[Callable, Callable]:
    """``fake, routes = catalog_fixtures(CONFIG)`` in a test module: ``fake`` is a fake
    archive.org serving ``config`` for the module; ``routes`` is that server with its counters
    reset, for each test."""

    @pytest.fixture(scope="module")
    def fake() -> Iterator[FakeArchive]:
        with FakeArchive(config) as server:
            yield server

    @pytest.fixture
    def routes(fake: FakeArchive) -> FakeArchive:
        fake.reset()
        return fake

    return fake, routes
