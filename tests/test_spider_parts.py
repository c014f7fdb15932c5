"""The spider's parts that need no crawl: its ``-a`` arguments and the choice of files."""

from __future__ import annotations

import json

import pytest
from scrapy.http import HtmlResponse, Response

from ravelscraper.archive.metadata import BadInput, ItemLocation, Metadata, Selection
from ravelscraper.spiders.arguments import SpiderArguments, scrapyd_arguments
from ravelscraper.spiders.choice import (
    ListingRefused,
    choose_linked,
    choose_listed,
    linked_names,
    read_metadata,
)

ITEM = ItemLocation("http://127.0.0.1:1", "item")
ORIGIN = "http://127.0.0.1:1"


def metadata(*files: dict, **fields: object) -> Metadata:
    found = Metadata.from_json("item", json.dumps({"files": list(files), **fields}))
    assert found is not None
    return found


def mp3(name: str, **fields: object) -> dict:
    return {"name": name, "format": "VBR MP3", "source": "derivative", **fields}


# --- the -a arguments ------------------------------------------------------------------


def test_arguments_set_aside_the_unknown_and_the_empty_ones():
    given = SpiderArguments.given(
        {"item": " ", "formats": "Flac", "_job": "1", "colour": "red", "size": "9"}
    )
    assert given.unknown == ("colour", "size")
    assert given.empty == ("item",)
    assert given.selection == Selection(formats=("Flac",))
    assert scrapyd_arguments({"_job": "1", "colour": "red"}) == {"_job": "1"}


def test_an_unknown_argument_is_named_before_an_empty_one():
    given = SpiderArguments.given({"item": "", "colour": "red"})
    with pytest.raises(BadInput, match=r"unknown argument -a colour=; the known arguments"):
        given.check()
    with pytest.raises(BadInput, match=r"empty argument -a item=: give it a value"):
        SpiderArguments.given({"item": ""}).check()


def test_the_location_comes_from_the_url_or_the_item_not_both():
    assert SpiderArguments().location(ORIGIN) == ItemLocation.on(
        ORIGIN, "ThePianoMusicOfMauriceRavel"
    )
    assert SpiderArguments(item="x").location(ORIGIN) == ItemLocation.on(ORIGIN, "x")
    by_url = SpiderArguments(url="https://archive.org/details/y").location(ORIGIN)
    assert by_url == ItemLocation("https://archive.org", "y")
    with pytest.raises(BadInput, match="not both"):
        SpiderArguments(url="https://archive.org/details/y", item="x").location(ORIGIN)


# --- /metadata ------------------------------------------------------------------------------


def test_an_unreadable_or_empty_answer_is_refused():
    with pytest.raises(ListingRefused, match="cannot read the file list") as bad:
        read_metadata(ITEM, b"[]")
    assert bad.value.reason == "bad_metadata"
    with pytest.raises(ListingRefused, match="unknown item 'item'") as unknown:
        read_metadata(ITEM, b"{}")
    assert unknown.value.reason == "unknown_item"


def test_the_chosen_files_and_the_restricted_ones_skipped():
    listed = metadata(mp3("a.mp3"), mp3("b.mp3", private="true"))
    chosen = choose_listed(ITEM, listed, Selection())
    assert [f.name for f in chosen.files] == ["a.mp3"]
    assert chosen.warning == (
        "1 file of 'item' (mp3 (one per recording)) is access-restricted and skipped"
    )
    assert choose_listed(ITEM, metadata(mp3("a.mp3")), Selection()).warning == ""


def test_nothing_public_ends_the_crawl_with_the_reason():
    restricted = metadata(mp3("a.mp3", private="true"), mp3("b.mp3", private="true"))
    with pytest.raises(ListingRefused, match=r"access-restricted \(2 files") as refused:
        choose_listed(ITEM, restricted, Selection())
    assert refused.value.reason == "access_restricted"
    assert "its public formats are: none" in str(refused.value)
    with pytest.raises(ListingRefused, match="has no formats Flac files") as none:
        choose_listed(ITEM, metadata(mp3("a.mp3")), Selection(formats=("Flac",)))
    assert none.value.reason == "no_matching_files"
    with pytest.raises(ListingRefused, match="is a collection") as collection:
        choose_listed(ITEM, metadata(is_collection=True), Selection())
    assert collection.value.reason == "collection"


def test_public_samples_are_hinted_at():
    listed = metadata(
        mp3("a.mp3", private="true"), {"name": "a_sample.mp3", "format": "MP3 Sample"}
    )
    with pytest.raises(ListingRefused, match="only 30-second samples are public"):
        choose_listed(ITEM, listed, Selection())


# --- the details page -----------------------------------------------------------------------


def test_a_page_that_is_not_html_links_nothing():
    response = Response(ITEM.details_url, headers={"Content-Type": "application/json"})
    with pytest.raises(BadInput, match="is not HTML"):
        linked_names(response, ITEM)


def test_the_names_a_page_links_and_the_files_taken_of_them():
    page = "".join(
        f'<a itemprop="associatedMedia" href="/download/item/{name}">{name}</a>'
        for name in ("a.mp3", "b.flac")
    )
    response = HtmlResponse(
        ITEM.details_url, body=page.encode(), headers={"Content-Type": "text/html"}
    )
    names = linked_names(response, ITEM)
    assert sorted(names) == ["a.mp3", "b.flac"]
    assert [f.name for f in choose_linked(ITEM, names, Selection())] == ["a.mp3"]
    assert [f.name for f in choose_linked(ITEM, names, Selection(globs=("*.flac",)))] == ["b.flac"]
    with pytest.raises(ListingRefused, match="links no files") as empty:
        choose_linked(ITEM, [], Selection())
    assert empty.value.reason == "metadata_failed"
    with pytest.raises(ListingRefused, match="links no names x files") as none:
        choose_linked(ITEM, names, Selection(globs=("x",)))
    assert none.value.reason == "no_matching_files"
