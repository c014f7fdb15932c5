"""Secrets stay out of logs; code-running endpoints stay off."""

from __future__ import annotations

import logging
import re
import sys
from urllib.parse import urlsplit

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from ravelscraper import settings as project_settings
from ravelscraper.downloadermiddlewares.hosts import host_allowed, host_patterns
from ravelscraper.extensions.redact import (
    MASK,
    add_secrets,
    redact,
    redact_record,
    redact_url,
    secrets_in,
    url_secrets,
)
from tests.support.crawl import scrapy_crawl
from tests.support.loopback import free_port as closed_port


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


def test_a_record_is_masked_in_its_formatted_message():
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "key=%s url=%s", ("abc123", "redis://:abc123@h"), None
    )
    redact_record(record, ["abc123"])
    assert record.getMessage() == "key=*** url=redis://***@h"


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("FTP_PASSWORD", "Pa\\ssw0rdZ", "Pa\\\\ssw0rdZ"),  # repr doubles the backslash
        ("FTP_PASSWORD", "it's\"both", "it\\'s"),
        ("AWS_SECRET_ACCESS_KEY", "ab", "'ab'"),  # too short to mask bare, masked quoted
    ],
)
def test_a_secret_setting_is_masked_as_scrapy_prints_it(archive, tmp_path, name, value, shown):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    crawl = scrapy_crawl(store=blocker / "store", RAVEL_ORIGIN=archive.archive, **{name: value})
    assert crawl.returncode == 1
    assert re.search(rf"'{name}': ['\"]?\*\*\*", crawl.log), crawl.log
    assert shown not in crawl.log
    assert len(value) < 3 or value not in crawl.log  # "ab" is in many words


PASSWORD = "MySecretPassw0rd"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:6390/0",
        f"redis://:{PASSWORD}#@127.0.0.1:6390/0",  # urlsplit reads the password as the port
        f"redis://:{PASSWORD}/x@127.0.0.1:6390/0",
        f"redis://:{PASSWORD}?x@127.0.0.1:6390/0",
        f"http://user:{PASSWORD}@127.0.0.1:1/details/x",
        f"ftp://user:{PASSWORD}@host/mirror",
    ],
)
def test_passwords_in_urls_are_masked_whatever_the_parser_makes_of_them(url):
    secrets = url_secrets(url)
    assert PASSWORD in "".join(secrets)
    try:
        urlsplit(url).port  # noqa: B018 - what a library would say about it
        parsed = ""
    except ValueError as exc:
        parsed = str(exc)
    for text in (url, f"failed: {url!r}", parsed, f"<GET {url}>"):
        assert PASSWORD not in redact(text, sorted(secrets, key=len, reverse=True))


def test_tracebacks_through_logging_are_masked():
    logger = logging.getLogger("test-redaction")
    record = None
    try:
        raise ValueError(f"invalid hostname: user:{PASSWORD}@127.0.0.1 in http://u:{PASSWORD}@h/")
    except ValueError:
        record = logger.makeRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    redact_record(record, [PASSWORD])
    assert record.exc_text and "ValueError" in record.exc_text
    assert PASSWORD not in logging.Formatter().format(record)


def test_a_generic_url_userinfo_is_masked_even_when_unknown():
    assert redact_url("see http://bob:hunter22@host/x and ftp://a@b") == (
        "see http://***@host/x and ftp://***@b"
    )
    assert redact_url("https://archive.org/download/x/a%40b.mp3") == (
        "https://archive.org/download/x/a%40b.mp3"
    )
    # An "@" in a path is no userinfo (a name such as a@b.mp3, unencoded in a message)...
    for url in ("https://archive.org/download/x/a@b.mp3", "http://h:8080/x/a@b.mp3"):
        assert redact_url(f"failed ({url})") == f"failed ({url})"
    # ...but a password holding a "/" is.
    assert redact_url("redis://:pass/word@h:6379/0") == "redis://***@h:6379/0"


@pytest.mark.slow
@pytest.mark.parametrize(
    "redis_url",
    [f"redis://:{PASSWORD}@127.0.0.1:{{port}}/0", f"redis://:{PASSWORD}#@127.0.0.1:{{port}}/0"],
    ids=["valid", "malformed"],
)
def test_a_redis_password_never_reaches_the_log(archive, tmp_path, redis_url):
    crawl = scrapy_crawl(
        "-a",
        f"url={archive.details_url('ThePianoMusicOfMauriceRavel')}",
        store=tmp_path,
        REDIS_URL=redis_url.format(port=closed_port()),
        timeout=60,
    )
    assert crawl.returncode == 1
    assert len(crawl.errors) == 1
    assert PASSWORD not in crawl.log


def test_text_stats_are_masked():
    crawler = get_crawler(settings_dict={"STATS_CLASS": project_settings.STATS_CLASS})
    add_secrets({PASSWORD})
    crawler.stats.set_value("ravel/error", f"bad REDIS_URL: port {PASSWORD!r}, redis://:x@h/0")
    crawler.stats.set_value("ravel/files_failed", 3)
    assert crawler.stats.get_value("ravel/error") == "bad REDIS_URL: port ***, redis://***@h/0"
    assert crawler.stats.get_value("ravel/files_failed") == 3


@pytest.mark.slow
def test_a_password_in_the_item_url_never_reaches_the_log(archive, tmp_path):
    host = archive.archive.split("://", 1)[1]
    url = f"http://user:{PASSWORD}@{host}/details/ThePianoMusicOfMauriceRavel"
    crawl = scrapy_crawl("-a", f"url={url}", store=tmp_path, RETRY_TIMES=0)
    assert crawl.returncode == 1
    assert PASSWORD not in crawl.log
    # Refused up front, in one line, before any request.
    assert len(crawl.errors) == 1 and "user name or password" in crawl.errors[0], crawl.errors
    assert archive.stats()["log"] == []


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("ia800204.us.archive.org", True),
        ("archive.org", True),
        ("IA8.US.ARCHIVE.ORG", True),
        ("127.0.0.2", True),
        ("evilarchive.org", False),
        ("archive.org.evil.net", False),
        ("127.0.0.3", False),
        ("", False),
        (None, False),
    ],
)
def test_storage_hosts_match_exactly_or_by_domain(host, allowed):
    patterns = host_patterns(" .archive.org, 127.0.0.2 ,")
    assert host_allowed(host, patterns) is allowed


def test_the_default_storage_hosts_are_archive_orgs():
    settings = Settings()
    settings.setmodule(project_settings, priority="project")
    assert host_patterns(settings["RAVEL_STORAGE_HOSTS"]) == (".archive.org",)


@pytest.mark.slow
def test_refused_names_are_logged_escaped(archive, tmp_path):
    crawl = scrapy_crawl("-a", "item=hostile-names", store=tmp_path, RAVEL_ORIGIN=archive.archive)
    assert crawl.returncode == 1
    assert "\x00" not in crawl.log
    refused = [line for line in crawl.errors if "nul" in line]
    assert len(refused) == 1 and "[download failed] 'nul\\x00byte.mp3': refused" in refused[0]


PASSWORD_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="'\"<>@\\"
    ),
    min_size=3,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(password=PASSWORD_TEXT, scheme=st.sampled_from(["redis", "ftp", "http"]))
@example(password="00/", scheme="redis")  # a "/" after digits once read as a port and path
def test_any_password_in_a_url_is_masked_in_what_a_parser_says(password, scheme):
    # A password that is also a piece of the rest ("127", "***") can't be told apart there.
    assume(password not in f"{scheme}://user:@127.0.0.1:6390/0 REDIS_URL=<GET >: invalid {MASK}")
    url = f"{scheme}://user:{password}@127.0.0.1:6390/0"
    secrets = sorted(url_secrets(url), key=len, reverse=True)
    texts = [url, f"REDIS_URL={url!r}", f"<GET {url}>: invalid hostname"]
    try:
        parts = urlsplit(url)
        texts += [parts.netloc, parts.password or "", str(parts.port)]
    except ValueError as exc:
        texts.append(str(exc))
    for text in texts:
        assert password not in redact(text, secrets), text
