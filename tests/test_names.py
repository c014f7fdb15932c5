"""Unit tests of ravelscraper.archive.names and of where names are judged: the spider, once."""

from __future__ import annotations

from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import ItemLocation, RemoteFile
from ravelscraper.archive.names import NameClaims, refused_name
from ravelscraper.items import AudioFile
from ravelscraper.spiders.ravel import RavelSpider


def test_a_refused_name_is_the_reason_a_file_fails():
    claims = NameClaims()
    assert refused_name(claims, "item", "Bolero.mp3") == ""
    assert refused_name(claims, "item", "../up.mp3") == (
        "refused the name: it has a '..' path component"
    )
    assert refused_name(claims, "item", "BOLERO.mp3") == (
        "refused the name: it differs only in case from 'Bolero.mp3'"
    )
    assert refused_name(claims, "other", "BOLERO.mp3") == ""  # another item's folder


def test_the_spider_yields_refused_names_as_failed_items():
    crawler = get_crawler(RavelSpider)
    spider = crawler._create_spider()
    location = ItemLocation("http://127.0.0.1:1", "item")
    names = ["Bolero.mp3", "bolero.MP3", "evil\u202e.mp3", "Ondine.mp3"]
    files = [AudioFile.listed(location, RemoteFile(name=n)) for n in names]
    files.append(AudioFile.listed(location, RemoteFile(name="x.mp3", error="listed twice")))
    yielded = list(spider.announce(files, verified=True))
    assert [f.error for f in yielded] == [
        "",
        "refused the name: it differs only in case from 'Bolero.mp3'",
        "refused the name: it contains the invisible layout character U+202E",
        "",
        "listed twice",  # the spider's own reason stays
    ]
    assert crawler.stats.get_value("ravel/files_total") == 5


def test_claims_keep_one_entry_per_item_not_per_file():
    claims = NameClaims()
    for number in range(100):
        for track in range(10):
            claims.claim(f"item{number}", f"track{track}.mp3")
    assert len(claims.folders) == 100 and len(claims.taken) == 10
    assert refused_name(claims, "ITEM7", "x.mp3") == (
        "refused the name: its item 'ITEM7' differs only in case from 'item7'"
    )
