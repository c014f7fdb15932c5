"""Keep credentials out of the log, the stats' log dump and tracebacks.

Two layers, both applied to every log record (message, formatted exception, stack):

* any URL's userinfo is masked, whatever the URL (``scheme://user:password@host`` becomes
  ``scheme://***@host``), even when the URL is malformed (a ``#``, ``/`` or ``?`` in the
  password);
* known secret values are masked wherever they appear: password-bearing settings
  (``AWS_*`` keys, ``FTP_PASSWORD``, anything named ``*PASSWORD*``, ``*SECRET*``,
  ``*TOKEN*``), and the passwords found in URLs given in settings, in ``REDIS_URL`` and the
  proxy variables of the environment, and on the command line (``-a url=...``), including
  the pieces a URL parser shows on its own (``Port could not be cast to integer value as
  '<password>'``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Any, Self

from scrapy.crawler import Crawler
from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings
from scrapy.statscollectors import MemoryStatsCollector

SECRET_SETTINGS = ("AWS_ACCESS_KEY_ID",)  # plus every name matching SECRET_NAME
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN", re.IGNORECASE)
ENV_URLS = ("REDIS_URL", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
MASK = "***"
MIN_SECRET = 3  # shorter pieces would mask ordinary words
# scheme://<userinfo>@ : the userinfo runs to the last "@" before a blank or a quote, so a
# password holding "/", "?", "#" or "@" is masked whole.
URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s'\"<>]*@")


def userinfo(match: re.Match[str]) -> str | None:
    """The userinfo a URL_USERINFO match holds, or None when its "@" is in the path
    (``https://archive.org/download/x/a@b.mp3``). A "/" before the "@" is a password's only
    when a ":" not followed by a port comes before it (``redis://:pass/word@host``)."""
    candidate = match.group(0)[len(match.group("scheme")) : -1]
    if "/" not in candidate:
        return candidate
    head = candidate.split("/", 1)[0]
    _, colon, after = head.partition(":")
    return candidate if colon and not after.isdigit() else None


def redact_url(text: str) -> str:
    """``text`` with the userinfo of every URL in it masked."""

    def masked(match: re.Match[str]) -> str:
        if userinfo(match) is None:
            return match.group(0)
        return f"{match.group('scheme')}{MASK}@"

    return URL_USERINFO.sub(masked, text)


def url_secrets(text: str) -> set[str]:
    """The userinfo and passwords of the URLs in ``text``, and the pieces a parser may show.

    ``text`` is the user's own settings or command line: there a "/" before the "@" is taken
    as the password's (``redis://user:00/@host``), never as a path, since an unmasked
    password costs more than a masked path.
    """
    found: set[str] = set()
    for match in URL_USERINFO.finditer(text):
        info = match.group(0)[len(match.group("scheme")) : -1]
        found.add(info)
        _, colon, password = info.partition(":")
        if colon and password:
            found.add(password)
            found.update(re.split(r"[/?#@]", password))
    return found


def secrets_in(settings: BaseSettings, argv: Iterable[str] = ()) -> set[str]:
    found: set[str] = set()
    values: set[str] = set()  # of password-bearing settings: masked whatever their length
    # .attributes, not .get(): reading every setting by name would warn about deprecated ones.
    for name, attribute in settings.attributes.items():
        value = attribute.value
        if not value:
            continue
        # Scrapy's own defaults (FTP_PASSWORD = "guest") are no secret.
        if (name in SECRET_SETTINGS or SECRET_NAME.search(name)) and attribute.priority > (
            SETTINGS_PRIORITIES["default"]
        ):
            values.add(str(value))
        if isinstance(value, str) and "://" in value:
            found |= url_secrets(value)
    for name in ENV_URLS:
        found |= url_secrets(os.environ.get(name, ""))
    for arg in argv:
        found |= url_secrets(arg)
    return {s for s in found if len(s) >= MIN_SECRET} | values


def variants(secret: str) -> set[str]:
    """A secret as it may be logged: as it is, and as ``repr`` shows it (Scrapy prints the
    overridden settings as a dict). A short one only quoted: bare, it would mask words."""
    shown = repr(secret)
    return {secret, shown, shown[1:-1]} if len(secret) >= MIN_SECRET else {shown}


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with URL userinfo and each secret (longest first) masked."""
    text = redact_url(text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_record(record: logging.LogRecord, secrets: Iterable[str]) -> None:
    """Mask a record's message, exception text and stack in place."""
    secrets = tuple(secrets)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it; nothing formatted to leak
        message = None
    if message is not None:
        masked = redact(message, secrets)
        if masked != message:
            record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text, secrets)
    if record.stack_info:
        record.stack_info = redact(record.stack_info, secrets)


_known: tuple[str, ...] = ()  # every secret found so far, longest first
_installed = False


def add_secrets(found: Iterable[str]) -> None:
    global _known
    merged = {*_known, *(v for s in found if s for v in variants(s))}
    _known = tuple(sorted(merged, key=len, reverse=True))


def install() -> None:
    """Mask every log record from now on, whichever handler shows it.

    Done with the record factory, not with handler filters: Scrapy replaces its root log
    handler after the extensions are built, which would drop a filter. Called by the
    project's ``crawl`` command before Scrapy logs anything (so the first lines are covered,
    secrets from the command line and the environment included) and again by
    :class:`RedactSecrets`.
    """
    global _installed
    add_secrets(url_secrets(" ".join(sys.argv)))
    for name in ENV_URLS:
        add_secrets(url_secrets(os.environ.get(name, "")))
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def masked_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record, _known)
        return record

    logging.setLogRecordFactory(masked_record)
    _installed = True


def mask(text: str) -> str:
    """``text`` with URL userinfo and every secret known to this process masked: for error
    messages kept outside the log (stats, Redis)."""
    return redact(text, _known)


class RedactingStatsCollector(MemoryStatsCollector):
    """Scrapy's stats collector, with text values masked (``ravel/error`` and the like)."""

    def set_value(self, key: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, str):
            value = mask(value)
        super().set_value(key, value, *args, **kwargs)


class RedactSecrets:
    """Adds the settings' secrets to the masked ones and makes sure masking is on.

    Extensions are built before Scrapy logs the overridden settings, so that line is
    masked too.
    """

    def __init__(self, secrets: set[str]):
        add_secrets(secrets)
        install()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(secrets_in(crawler.settings, sys.argv))
