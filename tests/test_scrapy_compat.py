"""The private names of Scrapy that ravelscraper relies on: all there in the pinned versions,
and a crawl that refuses to start, with one ERROR line, when one is gone."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

from scrapy import Request
from scrapy.core import engine
from scrapy.core.downloader import Downloader, Slot
from scrapy.core.downloader.handlers import http11
from scrapy.exceptions import IgnoreRequest
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.media import MediaPipeline
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ravelscraper import scrapy_compat
from ravelscraper.scrapy_compat import (
    PINNED,
    QueueDispatchDownloader,
    abort_body,
    forget_media_results,
    installed_versions,
    missing_names,
)
from tests.support.crawl import ROOT, crawl_command, crawl_env

HTTP11 = "scrapy.core.downloader.handlers.http11"
CHECK_MEDIA = "scrapy.pipelines.media.MediaPipeline._check_media_to_download"
UPDATE_STORES = "scrapy.pipelines.files.FilesPipeline._update_stores"
WAIT_FOR_DOWNLOAD = "scrapy.core.downloader.Downloader._wait_for_download"


def test_the_pinned_versions_have_every_private_name():
    assert installed_versions() == PINNED
    assert missing_names() == []


def test_the_pinned_versions_are_the_requirements():
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    for package, version in PINNED.items():
        assert f"{package}=={version}" in requirements


def test_a_method_gone_is_named(monkeypatch):
    monkeypatch.delattr(http11._ScrapyAgent, "download_request")
    assert missing_names() == [f"{HTTP11}._ScrapyAgent.download_request"]


def test_a_class_gone_is_named_once(monkeypatch):
    monkeypatch.delattr(http11, "_ScrapyAgent")
    assert missing_names() == [f"{HTTP11}._ScrapyAgent"]


def test_a_downloader_method_gone_is_named(monkeypatch):
    monkeypatch.delattr(Downloader, "_latercall")
    assert missing_names() == ["scrapy.core.downloader.Downloader._latercall"]


def test_an_instance_attribute_no_longer_set_is_named(monkeypatch):
    def init(self, finished, **kwargs):  # sets _finished, not _bodybuf
        self._finished = finished

    monkeypatch.setattr(http11._ResponseReader, "__init__", init)
    assert missing_names() == [f"{HTTP11}._ResponseReader._bodybuf"]


def test_the_engine_slot_is_checked(monkeypatch):
    def init(self, crawler, spider_closed_callback):  # no _slot any more
        self.crawler = crawler

    monkeypatch.setattr(engine.ExecutionEngine, "__init__", init)
    assert missing_names() == ["scrapy.core.engine.ExecutionEngine._slot"]


def test_a_constructor_keyword_gone_is_named(monkeypatch):
    original = http11._ScrapyAgent.__init__

    def init(self, *, contextFactory, pool=None, maxsize=0, warnsize=0, crawler, **kwargs):
        original(self, contextFactory=contextFactory, pool=pool, crawler=crawler)

    monkeypatch.setattr(http11._ScrapyAgent, "__init__", init)
    assert set(missing_names()) == {
        f"{HTTP11}._ScrapyAgent(bindAddress=)",
        f"{HTTP11}._ScrapyAgent(fail_on_dataloss=)",
        f"{HTTP11}._ScrapyAgent(tls_verbose_logging=)",
    }


def test_the_private_code_media_failed_relies_on_is_there():
    assert not [name for name in missing_names() if name.startswith(CHECK_MEDIA)]


def test_media_failed_no_longer_called_is_named(monkeypatch):
    def check_media_to_download(self, result, request, info, item=None):  # no media_failed
        return result

    monkeypatch.setattr(MediaPipeline, "_check_media_to_download", check_media_to_download)
    assert missing_names() == [f"{CHECK_MEDIA} (media_failed)"]


def test_media_check_gone_is_named(monkeypatch):
    monkeypatch.delattr(MediaPipeline, "_check_media_to_download")
    assert missing_names() == [CHECK_MEDIA]


def test_a_private_module_gone_is_named(monkeypatch):
    monkeypatch.setattr(scrapy_compat, "_ATTRIBUTES", ("scrapy.utils._no_such_module.x",))
    assert missing_names() == ["scrapy.utils._no_such_module"]


# The crawl command as a user runs it, in a Scrapy that lost a private method.
CRAWL_WITHOUT_A_NAME = """
import sys
from scrapy.core.downloader.handlers import http11
del http11._ScrapyAgent._cb_bodyready
from scrapy.cmdline import execute
sys.argv[0] = "scrapy"
execute()
"""


def test_a_crawl_with_a_name_gone_stops_before_it_starts(tmp_path):
    command = crawl_command("-a", "url=http://127.0.0.1:9/details/x", store=tmp_path / "store")
    assert command[1:3] == ["-m", "scrapy"]
    command[1:3] = ["-c", CRAWL_WITHOUT_A_NAME]
    done = subprocess.run(
        command, cwd=ROOT, env=crawl_env(), capture_output=True, text=True, timeout=120
    )
    log = done.stdout + done.stderr
    errors = [line for line in log.splitlines() if line.startswith("[ERROR]")]
    assert done.returncode == 1, log
    assert len(errors) == 1, log
    assert f"{HTTP11}._ScrapyAgent._cb_bodyready" in errors[0]
    assert "Scrapy==2.19.0, scrapy-redis==0.9.1" in errors[0]
    assert "Spider opened" not in log and "Traceback" not in log
    assert not (tmp_path / "store").exists()


class Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def stopProducing(self) -> None:
        self.calls.append("stop")

    def loseConnection(self) -> None:
        self.calls.append("lose")


def test_abort_body_fails_the_download_once_and_drops_the_connection():
    reader = SimpleNamespace(_finished=Deferred(), transport=Transport())
    failures: list[Failure] = []
    reader._finished.addErrback(failures.append)
    abort_body(reader, ValueError("disk full"))
    abort_body(reader, ValueError("again"))  # already failed: not a second errback
    assert [f.value.args for f in failures] == [("disk full",)]
    assert reader.transport.calls == ["stop", "lose", "stop", "lose"]


def test_drop_queued_fails_every_queued_request():
    slot = Slot(concurrency=2, delay=0, jitter=0)
    queued = [Deferred() for _ in range(3)]
    for number, deferred in enumerate(queued):
        slot.queue.append((Request(f"http://example.com/{number}"), deferred))
    failures: list[Failure] = []
    for deferred in queued:
        deferred.addErrback(failures.append)
    QueueDispatchDownloader.drop_queued(slot, IgnoreRequest("stopping"))
    assert not slot.queue
    assert [type(f.value) for f in failures] == [IgnoreRequest] * 3


def test_the_stores_settings_handover_is_checked(monkeypatch):
    def update_stores(cls, settings):  # hands the S3 and FTP stores nothing
        pass

    monkeypatch.setattr(FilesPipeline, "_update_stores", classmethod(update_stores))
    assert f"{UPDATE_STORES} (AWS_ACCESS_KEY_ID)" in missing_names()
    assert f"{UPDATE_STORES} (FTP_PASSWORD)" in missing_names()


def test_the_reserved_place_release_is_checked(monkeypatch):
    async def wait_for_download(self, slot, request, queue_dfd):  # never calls _download
        return None

    monkeypatch.setattr(Downloader, "_wait_for_download", wait_for_download)
    assert missing_names() == [f"{WAIT_FOR_DOWNLOAD} (_download)"]


def test_a_done_files_result_is_forgotten_by_the_media_pipeline():
    from scrapy.utils.test import get_crawler

    crawler = get_crawler()
    info = MediaPipeline.SpiderInfo(None)
    url = "http://127.0.0.1:1/download/x/a.mp3"
    info.downloaded[crawler.request_fingerprinter.fingerprint(Request(url))] = {"path": "x/a"}
    info.downloaded[b"other"] = {"path": "y/b"}
    forget_media_results(info, [crawler.request_fingerprinter.fingerprint(Request(url))])
    assert list(info.downloaded) == [b"other"]
