"""Secrets stay out of logs; code-running endpoints stay off."""

from __future__ import annotations

import logging

from scrapy.settings import Settings

from ravelscraper import settings as project_settings
from ravelscraper.redact import SecretFilter, secrets_in
from tests.conftest import scrapy_crawl


def test_remote_control_and_telnet_are_off():
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    assert settings.getbool("REMOTE_CONTROL_ENABLED") is False
    assert settings.getbool("TELNETCONSOLE_ENABLED") is False


def test_secrets_are_found_in_settings_and_urls(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:env-pass@127.0.0.1:6379/0")
    settings = Settings({"AWS_SECRET_ACCESS_KEY": "s3-secret", "REDIS_URL": "redis://u:pw-1@h/0"})
    assert secrets_in(settings) == {"s3-secret", "pw-1", "u:pw-1", "env-pass", ":env-pass"}
    monkeypatch.setenv("REDIS_URL", "redis://h:port/0")  # malformed: no crash, no secret
    assert secrets_in(Settings()) == set()


def test_the_filter_masks_formatted_messages():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "key=%s url=%s", ("abc123", "redis://:abc123@h"), None
    )
    assert SecretFilter({"abc123"}).filter(record)
    assert record.getMessage() == "key=*** url=redis://***@h"


def test_credentials_never_reach_the_log(archive, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    crawl = scrapy_crawl(
        store=blocker / "store",
        RAVEL_ORIGIN=archive.archive,
        AWS_SECRET_ACCESS_KEY="aws-very-secret",
        FTP_PASSWORD="ftp-very-secret",
    )
    assert crawl.returncode == 1
    assert "AWS_SECRET_ACCESS_KEY" in crawl.log  # Scrapy lists the overridden setting...
    assert "very-secret" not in crawl.log  # ...but not its value
