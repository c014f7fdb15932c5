"""``-a exclude=<patterns>``: comma-separated, case-insensitive name patterns left out after
``formats``/``glob``, for one item, collections, searches, item lists and fleets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ravelscraper.archive.metadata import ItemLocation, RemoteFile, Selection
from ravelscraper.spiders.arguments import SpiderArguments
from ravelscraper.spiders.choice import choose_linked
from tests.support.catalog import catalog_fixtures
from tests.support.crawl import FAST_LISTING, RAVEL, RAVEL_MP3S, scrapy_crawl, stored_files
from tests.support.fleet import NodeGroup

ITEM = ItemLocation("https://archive.org", "item")


def files(*names: str, private: tuple[str, ...] = ()) -> list[RemoteFile]:
    return [
        RemoteFile(
            name=n,
            format="64Kbps MP3" if n.endswith("_64kb.mp3") else "VBR MP3",
            private=n in private,
        )
        for n in names
    ]


def test_exclude_leaves_out_names_after_formats_and_glob_case_insensitively():
    listed = files("a.mp3", "a_64kb.mp3", "B.MP3", "c.mp3")
    selection = Selection.from_args("VBR MP3,64Kbps MP3", None, "*_64KB.mp3, b.*")
    assert [f.name for f in selection.choose(listed)] == ["a.mp3", "c.mp3"]
    assert selection.describe() == "formats VBR MP3, 64Kbps MP3 except *_64KB.mp3, b.*"
    globbed = Selection.from_args(None, "*.mp3", "c*")
    assert [f.name for f in globbed.choose(listed)] == ["a.mp3", "a_64kb.mp3", "B.MP3"]


def test_exclude_applies_after_the_default_choice_of_one_mp3_per_recording():
    listed = files("a.mp3", "a_64kb.mp3", "b.mp3")
    default = Selection.from_args(None, None, "A.MP3")
    assert default.is_default  # still one mp3 per recording: the 64 kb one is never taken
    assert [f.name for f in default.choose(listed)] == ["b.mp3"]
    assert default.describe() == "mp3 (one per recording) except A.MP3"
    assert Selection.from_args(None, None, None).describe() == "mp3 (one per recording)"


def test_an_excluded_private_file_is_not_reported_restricted():
    listed = files("a.mp3", "b.mp3", private=("b.mp3",))
    assert [f.name for f in Selection.from_args(None, None, "b*").restricted(listed)] == []
    assert [f.name for f in Selection().restricted(listed)] == ["b.mp3"]


def test_exclude_applies_to_the_details_page_fallback():
    chosen = choose_linked(ITEM, ["a.mp3", "b.mp3"], Selection.from_args(None, None, "a.*"))
    assert [f.name for f in chosen] == ["b.mp3"]


def test_exclude_is_an_argument_and_an_empty_one_is_refused():
    given = SpiderArguments.given({"collection": "x", "exclude": "*.png,*.ogg"})
    given.check()
    assert given.selection == Selection(excludes=("*.png", "*.ogg"))
    empty = SpiderArguments.given({"exclude": " "})
    with pytest.raises(ValueError, match="empty argument -a exclude="):
        empty.check()


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.slow
def test_an_item_crawl_leaves_out_the_excluded_files(archive, tmp_path):
    store = tmp_path / "store"
    crawl = scrapy_crawl(
        "-a",
        f"url={archive.details_url(RAVEL)}",
        "-a",
        "glob=*.mp3,*.png",
        "-a",
        "exclude=*_64KB.MP3,*_spectrogram.png,05*",
        store=store,
    )
    assert crawl.returncode == 0, crawl.log
    kept = [n for n in RAVEL_MP3S if not n.startswith("05")]
    pngs = [n.replace(".mp3", ".png") for n in kept]
    assert sorted(stored_files(store)) == sorted(f"{RAVEL}/{n}" for n in kept + pngs)


CONFIG = {"collections": {"exgen": {"items": 3, "files": 3, "size": 1500}}}
EXPECTED = sorted(f"exgen-0000{n}/track{t}.mp3" for n in (1, 2, 3) for t in ("01", "03"))


fake, routes = catalog_fixtures(CONFIG)


@pytest.mark.slow
@pytest.mark.parametrize("many", ["collection", "search", "items"])
def test_collections_searches_and_item_lists_leave_out_the_excluded_files(routes, tmp_path, many):
    store = tmp_path / "store"
    if many == "items":
        listing = tmp_path / "items.txt"
        listing.write_text("exgen-00001\nexgen-00002\nexgen-00003\n")
        source = f"items={listing}"
    else:
        source = {"collection": "collection=exgen", "search": "search=collection:exgen"}[many]
    crawl = scrapy_crawl(
        "-a",
        source,
        "-a",
        "exclude=TRACK02.mp3",
        store=store,
        RAVEL_ORIGIN=routes.archive,
        **FAST_LISTING,
    )
    assert crawl.returncode == 0, crawl.log[-3000:]
    assert sorted(stored_files(store)) == EXPECTED
    # The item records hold the selection: a run without the exclusion is a new selection.
    if many == "collection":
        again = scrapy_crawl("-a", source, store=store, RAVEL_ORIGIN=routes.archive, **FAST_LISTING)
        assert again.returncode == 0, again.log[-3000:]
        assert again.stat("ravel/items_unchanged") == 0
        assert len(stored_files(store)) == 9


@pytest.mark.slow
def test_a_fleet_leaves_out_the_excluded_files_whichever_node_lists_an_item(
    routes, redis_server, tmp_path
):
    store = tmp_path / "store"
    settings = {**FAST_LISTING, "RAVEL_ORIGIN": routes.archive}
    with NodeGroup.on(redis_server, tmp_path) as fleet:
        args = ("-a", "collection=exgen", "-a", "exclude=track02.*")
        nodes = [fleet.start(*args, store=store, **settings) for _ in range(2)]
        fleet.wait(timeout=120)
        for node in nodes:
            assert node.returncode == 0, node.log[-3000:]
            assert "Traceback" not in node.log
    assert sorted(stored_files(Path(store))) == EXPECTED
    assert sum(node.downloaded for node in nodes) == len(EXPECTED)
