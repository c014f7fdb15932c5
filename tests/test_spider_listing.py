"""ravelscraper.spiders.listing's ItemListing, in-process: from an archive.org answer to the
judged, stamped files one item yields (tests/test_listing.py lists items end to end)."""

from __future__ import annotations

import json
import logging

import pytest
from scrapy.http import HtmlResponse, Response
from scrapy.utils.test import get_crawler

from ravelscraper.archive.metadata import ItemLocation, RemoteFile
from ravelscraper.items import AudioFile
from ravelscraper.spiders.choice import ListingRefused
from ravelscraper.spiders.listing import ItemListing
from ravelscraper.spiders.ravel import RavelSpider

ORIGIN = "http://127.0.0.1:1"
ITEM = ItemLocation.on(ORIGIN, "item")
MD5 = "0" * 32


def spider(**arguments: str) -> RavelSpider:
    crawler = get_crawler(RavelSpider, {"RAVEL_ORIGIN": ORIGIN})
    return RavelSpider.from_crawler(crawler, **arguments)


def mp3(name: str, **fields: object) -> dict:
    return {"name": name, "format": "VBR MP3", "source": "derivative", "md5": MD5, **fields}


def metadata_body(*files: dict, **fields: object) -> bytes:
    return json.dumps({"files": list(files), **fields}).encode()


def files_of(*names: str, size: int | None = None) -> list[AudioFile]:
    return [AudioFile.listed(ITEM, RemoteFile(name=n, size=size)) for n in names]


# --- announce: judged, stamped, counted, said ------------------------------------------------


def test_each_file_is_stamped_with_its_items_bookkeeping():
    listing = spider(formats="Flac").listing
    files = listing.announce(files_of("a.flac", "b.flac", "c.flac"), True, "0123abcd")
    assert [f.item_fingerprint for f in files] == ["0123abcd"] * 3
    assert [f.item_files for f in files] == [3, 3, 3]
    assert [f.selection for f in files] == ["formats Flac"] * 3


def test_no_fingerprint_and_an_empty_one_both_stamp_none():
    listing = spider().listing
    assert listing.announce(files_of("a.mp3"), True, "")[0].item_fingerprint is None
    assert listing.announce(files_of("b.mp3"), True)[0].item_fingerprint is None
    assert listing.announce(files_of("c.mp3"), True)[0].selection == "mp3 (one per recording)"


def test_announce_counts_the_item_its_files_and_their_listed_bytes():
    crawl = spider()
    crawl.listing.announce(files_of("a.mp3", "b.mp3", size=10), True)
    crawl.listing.announce(files_of("c.mp3", size=None), False)  # size unknown: 0 bytes
    stats = crawl.crawler.stats
    assert stats.get_value("ravel/items_listed") == 2
    assert stats.get_value("ravel/files_total") == 3
    assert stats.get_value("ravel/bytes_total") == 20


def test_announce_says_one_item_line_and_whether_checksums_are_known(caplog):
    listing = spider().listing
    with caplog.at_level(logging.INFO):
        listing.announce(files_of("a.mp3", "b.mp3"), True)
        listing.announce(files_of("c.mp3"), False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[item]")]
    assert lines == ["[item] item: 2 files", "[item] item: 1 files (no checksums)"]


def test_a_file_already_in_error_keeps_its_reason_and_others_are_judged():
    listing = spider().listing
    files = files_of("Bolero.mp3", "BOLERO.mp3", "ok.mp3")
    files[2].error = "conflicting md5s"
    judged = listing.announce(files, True)
    assert judged[0].error == ""
    assert "differs only in case" in judged[1].error
    assert judged[2].error == "conflicting md5s"
    # The claims last for the crawl: the same name in a later item's listing is refused.
    assert "differs only in case" in listing.announce(files_of("bolero.MP3"), True)[0].error


# --- from /metadata and from a details page ------------------------------------------------


def test_from_metadata_takes_the_chosen_files_with_their_checksums():
    listing = spider().listing
    body = metadata_body(
        mp3("a.mp3", size="10"),
        {"name": "a.flac", "format": "Flac", "source": "original", "md5": MD5},
        metadata={"title": "Miroirs", "creator": "Ravel"},
    )
    (file,) = listing.from_metadata(ITEM, body)
    assert (file.name, file.size, file.md5) == ("a.mp3", 10, MD5)
    assert (file.album, file.creator) == ("Miroirs", "Ravel")  # the item's, filled in
    assert file.url == f"{ORIGIN}/download/item/a.mp3" and file.file_urls == [file.url]


def test_from_metadata_refuses_an_item_with_nothing_to_take():
    listing = spider().listing
    with pytest.raises(ListingRefused) as refused:
        listing.from_metadata(ITEM, metadata_body({"name": "a.flac", "format": "Flac"}))
    assert refused.value.reason == "no_matching_files"
    with pytest.raises(ListingRefused) as refused:
        listing.from_metadata(ITEM, b"{}")
    assert refused.value.reason == "unknown_item"


def test_restricted_files_beside_public_ones_are_one_warning(caplog):
    listing = spider().listing
    body = metadata_body(mp3("a.mp3"), mp3("b.mp3", private="true"))
    with caplog.at_level(logging.WARNING):
        files = listing.from_metadata(ITEM, body)
    assert [f.name for f in files] == ["a.mp3"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "1 file of 'item' (mp3 (one per recording)) is access-restricted and skipped"
    ]


def test_from_page_takes_the_linked_names_the_selection_matches():
    listing = spider(glob="*.ogg").listing
    files = listing.from_page(ITEM, ["a.mp3", "a.ogg", "b.ogg"])
    assert [f.name for f in files] == ["a.ogg", "b.ogg"]
    assert all(f.md5 is None and f.size is None for f in files)  # names only
    with pytest.raises(ListingRefused) as refused:
        listing.from_page(ITEM, [])
    assert refused.value.reason == "metadata_failed"


def test_a_details_page_that_cannot_be_read_links_nothing(caplog):
    listing: ItemListing = spider().listing
    not_html = Response(ITEM.details_url, body=b"{}", headers={"Content-Type": "application/json"})
    with caplog.at_level(logging.WARNING):
        assert listing.page_links(not_html, ITEM) == []
    assert any("is not HTML" in r.getMessage() for r in caplog.records)
    page = HtmlResponse(
        ITEM.details_url,
        body=b'<link itemprop="associatedMedia" href="/download/item/x.mp3">',
        headers={"Content-Type": "text/html"},
    )
    assert listing.page_links(page, ITEM) == ["x.mp3"]
