"""Keep credentials out of the log: Scrapy prints every overridden setting at start-up."""

from __future__ import annotations

import logging
import os
from typing import Self
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings

SECRET_SETTINGS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "FTP_PASSWORD",
)
URL_SETTINGS = ("REDIS_URL",)  # a password may hide in their userinfo
MASK = "***"


def secrets_in(settings: BaseSettings) -> set[str]:
    found = {
        str(settings[name])
        for name in SECRET_SETTINGS
        # Scrapy's own defaults (FTP_PASSWORD = "guest") are no secret.
        if settings.get(name) and settings.getpriority(name) > SETTINGS_PRIORITIES["default"]
    }
    for name in URL_SETTINGS:
        for url in (settings.get(name), os.environ.get(name)):
            try:
                password = urlsplit(url).password if url else None
            except ValueError:
                password = None
            if password:
                found.add(password)
    return {s for s in found if len(s) >= 3}


class SecretFilter(logging.Filter):
    def __init__(self, secrets: set[str]):
        super().__init__()
        self.secrets = sorted(secrets, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, MASK)
            record.msg, record.args = message, None
        return True


class RedactSecrets:
    """Masks credential values (AWS keys, FTP and Redis passwords) in every log line.

    Extensions are built before Scrapy logs the overridden settings, so the filter is in
    place for that line too.
    """

    def __init__(self, secrets: set[str]):
        self.filter = SecretFilter(secrets)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self.filter)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(secrets_in(crawler.settings))
