"""The one module that touches Scrapy's and scrapy-redis's private names.

Everything here leans on something upstream does not promise. Each use is a small function
with a docstring saying why there is no public way; ``missing_names()`` lists what the pinned
versions must still have, and the crawl refuses to start, with one ERROR line, when any of it
is gone (see ``tests/test_scrapy_compat.py``).
"""

from __future__ import annotations

from typing import Any

from scrapy import Request

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
