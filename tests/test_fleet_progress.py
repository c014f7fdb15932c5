"""Progress lines and the summary (ravelscraper.extensions.progress), from a crawl's stats."""

from __future__ import annotations

import logging

from scrapy import Request
from scrapy.http import Headers
from scrapy.utils.test import get_crawler

from ravelscraper.extensions import progress as progress_module
from ravelscraper.extensions.progress import Progress, TransferLog
from ravelscraper.extensions.startup import skip_unshown_records
from ravelscraper.items import AudioFile
from ravelscraper.spiders.ravel import RavelSpider


def progress_with(stats: dict[str, int]) -> Progress:
    crawler = get_crawler(RavelSpider, {"RAVEL_PROGRESS_INTERVAL": 0})
    crawler.stats.open_spider()
    for key, value in stats.items():
        crawler.stats.set_value(key, value)
    return Progress(crawler, interval=0)


def test_the_summary_counts_unverified_files_apart(caplog):
    progress = progress_with(
        {"ravel/files_downloaded": 3, "ravel/files_unverified": 2, "ravel/files_failed": 0}
    )
    with caplog.at_level(logging.INFO, logger="ravelscraper.extensions.progress"):
        progress.spider_closed(None, "finished")
    assert "3 downloaded" in caplog.text and ", 2 unverified, 0 failed" in caplog.text


def test_the_summary_leaves_unverified_out_when_there_are_none(caplog):
    progress = progress_with({"ravel/files_downloaded": 3})
    with caplog.at_level(logging.INFO, logger="ravelscraper.extensions.progress"):
        progress.spider_closed(None, "finished")
    assert "already up to date, 0 failed" in caplog.text and "unverified" not in caplog.text


def test_a_fleet_node_shows_the_fleets_files_and_its_own_share(caplog):
    progress = progress_with(
        {
            "ravel/files_total": 40,  # what this node listed: not the fleet's truth
            "ravel/files_downloaded": 6,
            "ravel/bytes_downloaded": 400_000,
            "ravel/fleet_files_total": 40,
            "ravel/fleet_files_done": 13,
            "ravel/fleet_files_failed": 1,
            "ravel/fleet_bytes_total": 2_600_000,
            "ravel/fleet_bytes_done": 800_000,
        }
    )
    with caplog.at_level(logging.INFO, logger="ravelscraper.extensions.progress"):
        progress.log_progress()
    assert "[progress] fleet 13/40 files (1 failed), 0.8/2.6 MB; this node 6 files, 0.4 MB" in (
        caplog.text
    )


def test_progress_goes_on_while_items_remain_with_no_file_under_way(caplog):
    progress = progress_with({"ravel/items_total": 2000, "ravel/items_unchanged": 1500})
    with caplog.at_level(logging.INFO, logger="ravelscraper.extensions.progress"):
        progress.log_progress()
    assert "[progress] items 1500/2000 (1500 unchanged), 0/0 files" in caplog.text
    caplog.clear()
    done = progress_with({"ravel/items_total": 2, "ravel/items_unchanged": 2})
    with caplog.at_level(logging.INFO, logger="ravelscraper.extensions.progress"):
        done.log_progress()
    assert "[progress]" not in caplog.text


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def transfer_log(monkeypatch, rate: float) -> tuple[TransferLog, Clock]:
    clock = Clock()
    monkeypatch.setattr(progress_module, "monotonic", clock)
    crawler = get_crawler(RavelSpider, {"RAVEL_FILE_LINES": rate})
    crawler.stats.open_spider()
    return TransferLog(crawler), clock


def transfer(log: TransferLog, name: str) -> None:
    request = Request(f"http://127.0.0.1:1/download/x/{name}", meta={"ravel_name": name})
    log.transfer_started(Headers(), 8000, request, None)
    log.stored(AudioFile(identifier="x", name=name, url=request.url), 8000, verified=True)


def test_past_the_rate_file_lines_are_debug_and_that_is_said_once(monkeypatch, caplog):
    log, clock = transfer_log(monkeypatch, 1)  # 1 file a second, bursts of 2
    with caplog.at_level(logging.DEBUG, logger="ravelscraper.extensions.progress"):
        for name in ("a.mp3", "b.mp3", "c.mp3", "d.mp3"):
            transfer(log, name)
        clock.now += 1.0  # one file's lines earned back
        transfer(log, "e.mp3")
    shown = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert shown == [
        ("INFO", "[download start] a.mp3"),
        ("INFO", "[download finished] a.mp3"),
        ("INFO", "[download start] b.mp3"),
        ("INFO", "[download finished] b.mp3"),
        (
            "INFO",
            "[progress] over 1 files a second: their start and finish lines are DEBUG "
            "while that lasts",
        ),
        ("DEBUG", "[download start] c.mp3"),
        ("DEBUG", "[download finished] c.mp3"),
        ("DEBUG", "[download start] d.mp3"),
        ("DEBUG", "[download finished] d.mp3"),
        ("INFO", "[download start] e.mp3"),
        ("INFO", "[download finished] e.mp3"),
    ]
    assert log.stats.get_value("ravel/files_downloaded") == 5


def test_a_rate_of_0_keeps_every_file_line_at_info(monkeypatch, caplog):
    log, _ = transfer_log(monkeypatch, 0)
    with caplog.at_level(logging.DEBUG, logger="ravelscraper.extensions.progress"):
        for n in range(50):
            transfer(log, f"{n}.mp3")
    assert {r.levelname for r in caplog.records} == {"INFO"} and len(caplog.records) == 100


def test_records_no_handler_shows_are_not_made(monkeypatch):
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO)
    monkeypatch.setattr(logging.root, "handlers", [handler])
    scrapy_logger, own = logging.getLogger("scrapy"), logging.getLogger("test.own")
    before = (logging.root.level, scrapy_logger.level)
    logging.root.setLevel(logging.NOTSET)
    scrapy_logger.setLevel(logging.DEBUG)  # as Scrapy's DEFAULT_LOGGING sets it
    own.setLevel(logging.DEBUG)
    own.addHandler(logging.NullHandler())  # a logger with its own handler is left alone
    try:
        skip_unshown_records("INFO")  # LOG_LEVEL, the root handler's level
        assert not logging.getLogger("scrapy.core.engine").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("scrapy.core.engine").isEnabledFor(logging.INFO)
        assert not logging.getLogger("other").isEnabledFor(logging.DEBUG)
        assert own.isEnabledFor(logging.DEBUG)
    finally:
        logging.root.setLevel(before[0])
        scrapy_logger.setLevel(before[1])
        own.handlers.clear()
        own.setLevel(logging.NOTSET)
