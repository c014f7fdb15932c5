"""Progress lines and the summary (ravelscraper.extensions.progress), from a crawl's stats."""

from __future__ import annotations

import logging

from scrapy.utils.test import get_crawler

from ravelscraper.extensions.progress import Progress
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
