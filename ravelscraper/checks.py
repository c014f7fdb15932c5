"""Settings checked at start: a value that would hang, crash or make no sense stops the crawl
with one ERROR line before anything is built or downloaded (see ``commands/crawl.py``)."""

from __future__ import annotations

import math

from scrapy.settings import BaseSettings

from ravelscraper.distributed.connection import redis_url
from ravelscraper.pipelines.records import RECHECK_MODES

BOOLEANS = {"0", "1", "true", "false"}  # what Scrapy's getbool takes
BOOLEAN_SETTINGS = ("RAVEL_DRY_RUN", "RAVEL_STORAGE_DIRECT")
TRUE = {"1", "true"}

# name -> (lowest allowed, highest allowed or None, whole numbers only)
NUMERIC_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "CONCURRENT_REQUESTS": (1, None, True),
    "CONCURRENT_REQUESTS_PER_DOMAIN": (1, None, True),
    "DOWNLOAD_DELAY": (0, None, False),
    "DOWNLOAD_DELAY_JITTER": (0, 1, False),  # ±100 % at most: a delay is never negative
    "DOWNLOAD_MAXSIZE": (0, None, True),
    "RETRY_TIMES": (0, None, True),
    "RAVEL_RETRY_BACKOFF_BASE": (0, None, False),
    "RAVEL_RETRY_BACKOFF_MAX": (0, None, False),
    "RAVEL_VERIFY_RETRIES": (0, None, True),
    "RAVEL_PART_MAX_AGE": (0, None, False),
    "RAVEL_BANDWIDTH_LIMIT": (0, None, True),
    "RAVEL_PROGRESS_INTERVAL": (0, None, False),
    "RAVEL_FILE_LINES": (0, None, False),
    "RAVEL_FLEET_MAX_TRANSFERS": (0, None, True),
    "RAVEL_NODE_TTL": (1, None, False),  # a node is dead after this: not a blip
    "RAVEL_WAIT_FOR_WORK": (-1, None, False),
    "RAVEL_IDLE_QUIET": (0, None, False),
    "RAVEL_FLEET_TICK": (0.05, None, False),  # each one is a few Redis calls
    "RAVEL_REDIS_GRACE": (0, None, False),
    "RAVEL_LISTING_DELAY": (0, None, False),
    "RAVEL_SEARCH_PAGE_SIZE": (100, 10000, True),  # archive.org's scrape API limits
    "RAVEL_HEARTBEAT": (0.2, None, False),  # each one is a few Redis calls
    "RAVEL_MAX_ATTEMPTS": (1, None, True),
    "RAVEL_NODE_MAX_LEASES": (0, None, True),
    "RAVEL_MAX_START_URL_BYTES": (1, None, True),
    "RAVEL_FLEET_LEASE_TTL": (5, None, False),  # renewed with each heartbeat
    "RAVEL_FLEET_WAIT_TIMEOUT": (1, None, False),
    "RAVEL_FLEET_MAX_PENDING": (0, None, True),
}


def number(raw: object) -> float | None:
    """A setting's value as a finite number, or None."""
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def settings_problem(settings: BaseSettings) -> str | None:
    """The first setting out of its range, as one sentence; None if all are fine."""
    for name in BOOLEAN_SETTINGS:
        value = str(settings.get(name)).strip().lower()  # "none": not set
        if value not in BOOLEANS | {"none"}:
            return f"setting {name}={settings[name]!r} is not valid: expected 1 or 0"
    dry_run = str(settings.get("RAVEL_DRY_RUN")).strip().lower()
    if dry_run in TRUE and redis_url(settings).strip():
        return (
            "RAVEL_DRY_RUN can't be used on a fleet node (REDIS_URL is set): a dry run lists "
            "on one machine; run it without REDIS_URL"
        )
    if "RAVEL_RECHECK" in settings and settings["RAVEL_RECHECK"] not in RECHECK_MODES:
        value = settings["RAVEL_RECHECK"]
        return f"setting RAVEL_RECHECK={value!r} is not valid: expected 'quick' or 'full'"
    for name, (low, high, whole) in NUMERIC_RANGES.items():
        if name not in settings:
            continue
        raw = settings[name]
        value = number(raw)
        kind = "a whole number" if whole else "a number"
        bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
        expected = f"{kind} {bounds}"
        if value is None or (whole and value != int(value)):
            return f"setting {name}={raw!r} is not valid: expected {expected}"
        if value < low or (high is not None and value > high):
            return f"setting {name}={raw!r} is out of range: expected {expected}"
    return None
