"""scrapy-redis's own start-URL convention: a plain details page URL or identifier pushed onto
``ravel:start_urls`` (``redis-cli lpush ravel:start_urls https://archive.org/details/<id>``),
with the same checks as the JSON forms."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import ItemLocation
from ravelscraper.distributed.origins import AllowedOrigins
from ravelscraper.distributed.starturls import BadStartUrl, start_location, start_requests
from ravelscraper.spiders.ravel import RavelSpider
from tests.support.fleet import wait_for

ORIGIN = "https://archive.org"
ORIGINS = AllowedOrigins([ORIGIN])


@pytest.fixture
def spider() -> RavelSpider:
    return RavelSpider.from_crawler(get_crawler(RavelSpider, {"RAVEL_ORIGIN": ORIGIN}))


@pytest.mark.parametrize(
    "raw",
    [
        b"https://archive.org/details/gd1977-05-08",
        b"https://archive.org/details/gd1977-05-08/",
        b"  https://archive.org/details/gd1977-05-08\r\n",
        b"gd1977-05-08",
        b"gd1977-05-08\n",
        b'{"url": "https://archive.org/details/gd1977-05-08"}',
        b'{"item": "gd1977-05-08"}',
    ],
)
def test_a_plain_url_or_identifier_names_the_item_as_the_json_forms_do(spider, raw):
    assert start_location(raw, spider, ORIGINS) == ItemLocation(ORIGIN, "gd1977-05-08")
    metadata, details = start_requests(raw, spider, ORIGINS)
    assert metadata.url == f"{ORIGIN}/metadata/gd1977-05-08"
    assert details.url == f"{ORIGIN}/details/gd1977-05-08"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"https://elsewhere.example/details/x", "origin 'https://elsewhere.example' is not"),
        (b"https://archive.org/download/x/a.mp3", "not a details page"),
        (b"ftp://archive.org/details/x", "not an http(s) URL"),
        (b"not an identifier", "not an archive.org identifier: 'not an identifier'"),
        (b"a\tb", "not JSON"),  # not one printable line: read as JSON, and refused
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"https://user:pw@archive.org/details/x", "user name or password is not supported"),
    ],
)
def test_a_bad_plain_entry_is_refused_in_one_line(spider, raw, reason):
    with pytest.raises(BadStartUrl, match=re.escape(reason)) as refused:
        start_requests(raw, spider, ORIGINS)
    assert "\n" not in str(refused.value)
    assert "pw" not in str(refused.value)


def push(url: str, *entries: str) -> str:
    """``redis-cli -u <url> lpush ravel:start_urls <entry>...`` where redis-cli is installed
    (the system's, Debian's redis-tools); else the same LPUSH from the redis Python client.
    Returns which one pushed."""
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli is not None:
        done = subprocess.run(
            [cli, "-u", url, "lpush", "ravel:start_urls", *entries],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0 and done.stdout.strip().isdigit(), done
        return cli
    import redis

    with redis.Redis.from_url(url) as client:
        client.lpush("ravel:start_urls", *entries)
    return "redis-py"


@pytest.mark.slow
def test_a_waiting_node_takes_plain_start_urls_pushed_with_redis_cli(
    archive, fleet, tmp_path, capsys
):
    archive.configure({"items": {"alpha": {"count": 3}, "beta": {"count": 2}}})
    store = tmp_path / "store"
    node = fleet.start(store=store, RAVEL_WAIT_FOR_WORK=3, RAVEL_ORIGIN=archive.archive)
    wait_for(node, "[fleet] waiting for work")
    pusher = push(
        fleet.url,
        archive.details_url("alpha"),  # a bare details URL
        "beta",  # a bare identifier, on RAVEL_ORIGIN
        "https://elsewhere.example/details/gamma",  # refused: not an allowed origin
    )
    fleet.wait(timeout=120)
    with capsys.disabled():
        print(f"\n[plain start URLs] pushed with {pusher}")
    assert node.returncode == 0, node.log[-3000:]
    assert "Traceback" not in node.log
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*.mp3")) == [
        *(f"alpha/track{n:02d}.mp3" for n in range(1, 4)),
        *(f"beta/track{n:02d}.mp3" for n in range(1, 3)),
    ]
    rejected = node.lines("[fleet] rejected")
    assert (
        len(rejected) == 1 and "origin 'https://elsewhere.example' is not allowed" in (rejected[0])
    )
    assert fleet.redis.llen("ravel:start_urls") == 0
    assert fleet.redis.hlen("ravel:rejected") == 1
