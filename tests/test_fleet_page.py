"""``scrapy fleet serve`` as a person and a script see it: the page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium) while two real nodes mirror an item,
``/status.json`` and ``/metrics`` beside it; the server never writes to Redis, shows no
password, and rides out a Redis restart; ``scrapy fleet status --watch`` stops on Ctrl-C.

``RAVEL_SCREENSHOT=docs/fleet-page.png pytest tests/test_fleet_page.py -k follows`` saves the
page as it is at the end of the run (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from ravelscraper import settings as project_settings
from tests.support.crawl import ROOT, crawl_env, stored_files
from tests.support.fleet import NodeGroup, scrapy_fleet, wait_for
from tests.support.redisserver import RedisServer

SECRET = "pAge-s3cret"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
COUNTS = [f"files-{k}" for k in ("listed", "verified", "failed", "pending")]
COUNTS += [f"items-{k}" for k in ("listed", "done", "failed", "pending")]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=SECRET) as server:
        yield server


@dataclass
class Served:
    """A running ``scrapy fleet serve``: its base URL; once stopped, its exit status and
    stderr."""

    base: str
    process: subprocess.Popen[str]
    stderr: str = ""

    def __iter__(self) -> Iterator[Any]:  # `as (base, process)`
        return iter((self.base, self.process))


def start_fleet(redis_url: str, *args: str) -> subprocess.Popen[str]:
    """``scrapy fleet ARGS`` started with its output piped, to be stopped with Ctrl-C."""
    return subprocess.Popen(
        [sys.executable, "-m", "scrapy", "fleet", *args],
        cwd=ROOT,
        env=crawl_env(REDIS_URL=redis_url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal sends it: not ignored, as it would be for a background job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@contextmanager
def serving(redis_url: str, *args: str, timeout: float = 30) -> Iterator[Served]:
    """``scrapy fleet serve --port 0`` running (its address from the line it prints); stopped
    with Ctrl-C at the end."""
    process = start_fleet(redis_url, "serve", "--port", "0", *args)
    served = Served("", process)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        found = re.search(r" at (http://\S+/) ", line)
        assert found, f"no address line: {line!r}"
        served.base = found.group(1)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            _, served.stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=5)


def get(url: str) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def status(base: str) -> dict[str, Any]:
    code, body = get(base + "status.json")
    assert code == 200, body
    return json.loads(body)


def counts_of(data: dict[str, Any]) -> tuple[int, ...]:
    return tuple(data["files"][k] for k in ("listed", "verified", "failed", "pending")) + tuple(
        data["item_counts"][k] for k in ("listed", "done", "failed", "pending")
    )


@contextmanager
def polling(base: str) -> Iterator[list[tuple[int, ...]]]:
    """Every state ``/status.json`` gives while the block runs: polled every 0.2 s, and the
    server keeps each reading for 1 s, so none is missed."""
    seen: list[tuple[int, ...]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.append(counts_of(status(base)))
            stop.wait(0.2)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=15)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Chromium is not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1500"):
        options.add_argument(flag)
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver: Any) -> tuple[int, ...] | None:
    """The counts the page shows (None before its first render), read at one instant."""
    values = driver.execute_script(
        "return arguments[0].map((id) => document.getElementById(id).textContent)", COUNTS
    )
    if not all(v.isdigit() for v in values):
        return None
    return tuple(int(v) for v in values)


def node_states(driver: Any) -> list[str]:
    """The nodes table's state column ("alive", "gone"), sorted."""
    rows = driver.find_elements("css selector", "#nodes tbody tr td:nth-child(2)")
    return sorted(cell.text for cell in rows)


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    """The page as it is, in tmp_path; also where RAVEL_SCREENSHOT says, for the README."""
    path = tmp_path / name
    height = driver.execute_script("return document.querySelector('main').offsetHeight + 60")
    driver.set_window_size(1280, min(3000, max(600, int(height) + 140)))  # + the window's own
    driver.save_screenshot(str(path))
    wanted = os.environ.get("RAVEL_SCREENSHOT")
    if wanted and "follows" in name:
        shutil.copy(path, ROOT / wanted)
    return path


def after_the_end(base: str, browser: Any) -> tuple[dict[str, Any], tuple[int, ...] | None]:
    """/status.json and the page's counts once the page refreshed to the run's end (every
    2 s): both nodes gone and the page showing what /status.json says, or 15 s passed."""
    deadline = time.monotonic() + 15
    while True:
        final, page = status(base), shown(browser)
        states = node_states(browser)
        ended = page == counts_of(final) and states and set(states) == {"gone"}
        if ended or time.monotonic() > deadline:
            return final, page
        time.sleep(0.3)


@pytest.mark.slow
def test_the_page_in_chromium_follows_a_two_node_run_to_its_true_totals(
    archive, fleet, tmp_path, browser
):
    archive.configure({"bandwidth": 65536, "items": {"watched-32": {"count": 32}}})
    store = tmp_path / "store"
    with serving(fleet.url) as (base, _), polling(base) as seen:
        browser.get(base)
        details = f"url={archive.details_url('watched-32')}"
        fleet.start("-a", details, store=store)
        fleet.start("-a", details, store=store)
        on_page: list[tuple[int, ...]] = []
        mid_run: Path | None = None
        deadline = time.monotonic() + 90
        while any(n.process.poll() is None for n in fleet.nodes) and time.monotonic() < deadline:
            page = shown(browser)
            if page is not None:
                on_page.append(page)
                if not mid_run and 12 <= page[1] <= 24:  # the README's picture: mid-run
                    mid_run = screenshot(browser, tmp_path, "follows.png")
            time.sleep(0.3)
        fleet.wait(timeout=30)
        final, page = after_the_end(base, browser)
        screenshot(browser, tmp_path, "end.png")
        metrics = get(base + "metrics")[1].decode()
        node_rows = len(browser.find_elements("css selector", "#nodes tbody tr"))
        drawn = browser.find_elements("css selector", "#chart polyline")
        texts = {name: browser.find_element("id", name).text for name in ("conn", "listing")}
        source = browser.page_source

    files = len(stored_files(store))
    assert files == 32
    # it ends at the run's true totals: the page, /status.json and the store agree
    assert counts_of(final) == (32, 32, 0, 0, 1, 1, 0, 0)
    assert page == counts_of(final)
    # the counts moved on the page during the run, and each was one /status.json gave
    verified = sorted({p[1] for p in on_page})
    print(f"\n[page] verified counts shown during the run: {verified}; {len(on_page)} readings")
    assert len([v for v in verified if 0 < v < 32]) >= 2
    assert set(on_page) <= set(seen) | {counts_of(final)}
    # what else it shows: both nodes, their bytes, the chart, the rate
    rows = {r["node"]: r for r in final["node_rows"]}
    assert len(rows) == 2 and sum(r["files"] for r in rows.values()) == 32
    assert sum(r["bytes"] for r in rows.values()) == final["bytes"]["verified"]
    assert sum(final["throughput"]["bytes_per_s"]) > 0
    assert node_rows == 2 and drawn
    # the default RAVEL_FLEET_MAX_PENDING, which 32 files never reach
    bound = project_settings.RAVEL_FLEET_MAX_PENDING
    assert texts == {"conn": "live", "listing": f"not held back (bound {bound})"}
    assert SECRET not in source and SECRET not in json.dumps(final)
    assert mid_run and mid_run.stat().st_size > 10_000
    parsed = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert parsed[("ravel_files", ("verified",))] == 32
    assert sum(v for (name, _), v in parsed.items() if name == "ravel_node_files_total") == 32
    assert parsed[("ravel_nodes", ("gone",))] == 2  # both exited when the run closed


@pytest.mark.slow
def test_the_page_shows_a_killed_node_as_gone_and_a_failed_file_with_its_reason(
    archive, fleet, tmp_path, browser
):
    archive.configure(
        {
            "bandwidth": 65536,
            "items": {"hurt-12": {"count": 12, "size": 131072}},
            "faults": [{"match": "track03.mp3", "kind": "corrupt", "times": 100}],
        }
    )
    store = tmp_path / "store"
    details = f"url={archive.details_url('hurt-12')}"
    with serving(fleet.url) as (base, _):
        browser.get(base)
        victim = fleet.start("-a", details, store=store)
        survivor = fleet.start("-a", details, store=store)
        wait_for(victim, "[download start]")
        time.sleep(1.5)  # a heartbeat with counters
        victim.process.send_signal(signal.SIGKILL)
        victim.exited = time.time()
        # once its heartbeat expires (RAVEL_NODE_TTL 4 s), while the survivor works on
        deadline = time.monotonic() + 30
        while node_states(browser) != ["alive", "gone"] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert survivor.process.poll() is None and node_states(browser) == ["alive", "gone"]
        screenshot(browser, tmp_path, "killed.png")
        fleet.wait(timeout=90)
        final, _ = after_the_end(base, browser)
        states = node_states(browser)
        failures = browser.find_element("id", "failures").text
        failed_count = browser.find_element("id", "files-failed").text
        screenshot(browser, tmp_path, "failed.png")
    assert survivor.returncode == 1  # the failed file
    assert states == ["gone", "gone"]  # both: the survivor exited at the end
    assert final["failures"]["count"] == 1 and failed_count == "1"
    assert failures.startswith("hurt-12/track03.mp3: sha1 mismatch: archive.org lists "), failures
    assert final["reclaimed"] >= 1
    gone = [r for r in final["node_rows"] if r["last_heartbeat_s_ago"] is not None]
    assert len(gone) == 2


@pytest.mark.slow
def test_serve_never_writes_to_redis_even_with_a_read_only_user(redis_server, tmp_path, archive):
    db = redis_server.fresh_db()
    with NodeGroup(redis_server, db, tmp_path) as group:
        archive.configure({"items": {"ro-4": {"count": 4}}})
        node = group.start("-a", f"url={archive.details_url('ro-4')}", store=tmp_path / "s")
        group.wait()
        assert node.returncode == 0, node.log[-2000:]
        admin = group.redis
        admin.execute_command(
            "ACL", "SETUSER", "watcher", "on", f">{SECRET}", "~*", "+@all", "-@write"
        )
        admin.execute_command("ACL", "LOG", "RESET")
        before = write_calls(admin)
        url = f"redis://watcher:{SECRET}@127.0.0.1:{redis_server.port}/{db}"
        with serving(url, "--bind", "127.0.0.2") as served:
            base = served.base
            data = status(base)
            time.sleep(1.1)
            assert get(base + "metrics")[0] == 200
            assert get(base)[0] == 200
            assert get(base + "status.json")[0] == 200
        assert data["files"]["verified"] == 4 and data["node_rows"]  # it read everything
        assert write_calls(admin) == before  # no write command ran, by anyone
        assert admin.execute_command("ACL", "LOG") == []  # nor was any refused
        assert SECRET not in json.dumps(data) and data["redis"].startswith("redis://127.0.0.1")
    assert served.process.returncode == 0 and served.stderr == ""  # Ctrl-C; no WARNING


def write_calls(client: redis.Redis) -> dict[str, int]:
    """Calls of each write command so far (INFO commandstats), scripts' own calls included."""
    writes = {
        "set", "hset", "hdel", "hincrby", "del", "zadd", "zrem", "zremrangebyscore", "xadd",
        "lpush", "rpush", "lrem", "ltrim", "sadd", "expire", "pexpire", "incr", "zpopmin",
        "flushdb", "xtrim",
    }  # fmt: skip
    stats = client.info("commandstats")
    return {
        name: stats[f"cmdstat_{name}"]["calls"] for name in writes if f"cmdstat_{name}" in stats
    }


@pytest.mark.slow
def test_serve_answers_503_while_redis_is_down_and_recovers(tmp_path):
    with (
        RedisServer(appendonly=True, databases=1) as server,
        serving(server.url(0)) as served,
    ):
        base = served.base
        assert get(base + "status.json")[0] == 200
        server.stop()
        time.sleep(1.1)  # past the reading's freshness
        code, body = get(base + "status.json")
        assert code == 503 and json.loads(body)["error"].startswith("Redis unreachable")
        assert get(base + "metrics")[0] == 503
        assert get(base)[0] == 200  # the page itself, which then says why
        server.start()
        deadline = time.monotonic() + 20
        while get(base + "status.json")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert get(base + "status.json")[0] == 200
    lines = served.stderr.splitlines()
    assert lines[0].startswith("WARNING: Redis unreachable (ConnectionError: "), lines
    assert lines[1:] == [f"Redis at redis://127.0.0.1:{server.port}/0 answers again"]


@pytest.mark.slow
def test_status_watch_refreshes_until_ctrl_c_and_exits_0(redis_server):
    url = redis_server.url(redis_server.fresh_db())
    process = start_fleet(url, "status", "--watch")
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 30
    while sum("Ctrl-C stops" in line for line in lines) < 2 and time.monotonic() < deadline:
        lines.append(process.stdout.readline())
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    text = "".join(lines) + out
    assert process.returncode == 0 and "Traceback" not in err, err
    assert text.count("live nodes: 0") >= 2 and SECRET not in text + err
    once = scrapy_fleet(url, "status")
    assert once.returncode == 0 and once.stdout.splitlines()[0] in text  # the same summary


@pytest.mark.slow
def test_the_page_shows_hostile_names_from_redis_as_text(redis_server, browser):
    db = redis_server.fresh_db()
    node = '<img id="pwned" src="x" onerror="document.title=1">'
    path = 'evil/<b id="bold">x</b>.mp3'
    with redis_server.client(db) as client:  # as a hostile writer of the job's keys would
        client.xadd("ravel:history", {"node": node, "files": 1, "failed": 0, "bytes": 9})
        client.hset("ravel:failures", path, "<script>document.title=2</script>")
        client.hset("ravel:rejected", "<i id=it>e</i>", "<u id=under>why</u>")
        client.zadd("ravel:nodes", {node: 1})
    with serving(redis_server.url(db)) as (base, _):
        browser.get(base)
        deadline = time.monotonic() + 15
        while browser.find_element("id", "failures-count").text != "1":
            assert time.monotonic() < deadline, browser.page_source[-2000:]
            time.sleep(0.2)
        for injected in ("pwned", "bold", "it", "under"):
            assert browser.find_elements("id", injected) == []
        assert browser.title == "ravelscraper fleet"
        assert node in browser.find_element("id", "nodes").text
        assert f"{path}: <script>" in browser.find_element("id", "failures").text
        assert "<i id=it>e</i>: <u id=under>why</u>" in browser.find_element("id", "rejected").text
