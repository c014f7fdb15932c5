"""The fleet's Redis connection: ``REDIS_URL`` (setting or environment), validated, one-line
errors, no password in logs; and the fleet's constants that the Scrapy-free add-on needs.
Imports neither Scrapy nor redis at module level."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SCHEMES = ("redis", "rediss", "unix")
MIN_SERVER_VERSION = (5, 0)  # ZPOPMIN, and scripts that write after TIME
# REDIS_PARAMS for a node and the fleet command: no call waits on a dead server for long.
REDIS_PARAMS = {"socket_connect_timeout": 5, "socket_timeout": 15}
ENTRY_SLOT = "ravel-entries"  # download slot of file entries: no delay, they cost no request


def redis_url(settings: Any) -> str:
    """``REDIS_URL`` from the settings, else from the environment ("" or blank: no fleet)."""
    return str(settings.get("REDIS_URL") or os.environ.get("REDIS_URL", ""))


class FleetUnavailable(Exception):
    """The fleet's Redis cannot be used; the message is one line, without the password."""


def check_redis_url(url: str) -> str:
    """Validate ``url`` as redis-py would use it; return it redacted, for logs.

    redis-py silently falls back to db 0 on ``/abc``: that is refused here, like any scheme,
    port or database a user could not have meant.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError when not a number
    except ValueError:
        # Not the parser's words: they quote the piece that failed, maybe the password.
        raise FleetUnavailable(
            "REDIS_URL is not a valid URL (e.g. redis://:PASSWORD@queue-host:6379/0; "
            "percent-encode '#', '/', '?', '@' or ':' in the password: %23 %2F %3F %40 %3A)"
        ) from None
    if parts.scheme not in SCHEMES:
        raise FleetUnavailable(
            f"REDIS_URL must start with redis://, rediss:// or unix://, not {parts.scheme or '?'}://"
            " (e.g. redis://queue-host:6379/0)"
        )
    query = parse_qs(parts.query)
    db = query.get("db", [""])[-1]
    if parts.scheme == "unix":
        if not parts.path:
            raise FleetUnavailable("REDIS_URL unix:// needs a socket path (unix:///path?db=0)")
        where = f"unix://{parts.path}"
    else:
        if not parts.hostname:
            raise FleetUnavailable("REDIS_URL has no host (e.g. redis://queue-host:6379/0)")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise FleetUnavailable(
                "REDIS_URL database must be a number (e.g. redis://queue-host:6379/0; "
                "percent-encode '#', '/', '?' or '@' in the password)"
            )
        db = db or path
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        where = f"{parts.scheme}://{host}:{port or 6379}"
    if db and not re.fullmatch(r"\d+", db):
        raise FleetUnavailable("REDIS_URL database must be a number (e.g. ?db=0)")
    return f"{where}/{db or 0}"


def password_of(url: str) -> str | None:
    try:
        return unquote(urlsplit(url).password or "") or None
    except ValueError:
        return None


def scrub(message: str, url: str) -> str:
    """``message`` on one line, with any password of ``url`` masked."""
    secret = password_of(url)
    if secret:
        message = message.replace(secret, "***")
    return " ".join(message.split())


def connect(settings: Any) -> tuple[Any, str]:
    """A pinged client for ``REDIS_URL`` and its redacted address; FleetUnavailable on failure."""
    url = settings.get("REDIS_URL") or ""
    where = check_redis_url(url)
    import redis  # only a distributed crawl needs it
    from scrapy_redis.connection import get_redis_from_settings

    try:
        client = get_redis_from_settings(settings)
        client.ping()
        version = client.info("server").get("redis_version", "0")
    except redis.AuthenticationError as exc:
        if password_of(url) is None:
            raise FleetUnavailable(
                f"Redis at {where} needs a password: redis://default:PASSWORD@host:port/db"
            ) from None
        raise FleetUnavailable(
            f"Redis at {where} refused the credentials in REDIS_URL: {scrub(str(exc), url)}"
        ) from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "AUTH" in str(exc).upper():
            raise FleetUnavailable(
                f"Redis at {where} needs a password: redis://default:PASSWORD@host:port/db "
                f"({scrub(str(exc), url)})"
            ) from None
        raise FleetUnavailable(f"Redis at {where} answered: {scrub(str(exc), url)}") from None
    except (redis.RedisError, OSError) as exc:
        raise FleetUnavailable(
            f"cannot reach Redis at {where}: {type(exc).__name__}: {scrub(str(exc), url)}"
        ) from None
    numbers = tuple(int(n) for n in re.findall(r"\d+", str(version))[:2])
    if numbers < MIN_SERVER_VERSION:
        raise FleetUnavailable(
            f"Redis at {where} is version {version}; the fleet needs Redis >= 5.0"
        )
    return client, where
