"""Item records on a store that keeps them itself (S3, FTP): the logic, with an in-memory
store (the real ones are exercised end to end in test_store_records.py)."""

from __future__ import annotations

import json
from typing import ClassVar

from ravelscraper.pipelines.records import ItemRecords


class MemoryStore:
    keeps_item_records: ClassVar[bool] = True

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.files: dict[str, dict[str, tuple[int, str]]] = {}
        self.listings = 0

    def read_item_record(self, identifier: str) -> bytes | None:
        return self.records.get(identifier)

    def write_item_record(self, identifier: str, data: bytes) -> None:
        self.records[identifier] = data

    def item_files(self, identifier: str) -> dict[str, tuple[int, str]]:
        self.listings += 1
        return dict(self.files.get(identifier, {}))


def records(store: MemoryStore, recheck: str = "quick", write: bool = True) -> ItemRecords:
    return ItemRecords(None, recheck, write, store=store, files_store="s3://bucket/prefix")


def test_a_complete_item_is_unchanged_while_the_listing_says_the_same():
    store = MemoryStore()
    store.files["a"] = {"x.mp3": (10, "etag-x"), "y.mp3": (20, "etag-y"), "other": (1, "o")}
    kept = records(store)
    kept.complete("a", "fp1", "mp3", ["y.mp3", "x.mp3"])
    record = json.loads(store.records["a"])
    assert record["files"] == [
        {"name": "x.mp3", "size": 10, "tag": "etag-x"},
        {"name": "y.mp3", "size": 20, "tag": "etag-y"},
    ]
    assert kept.unchanged("a", "fp1", "mp3")
    assert not kept.unchanged("a", "fp2", "mp3")  # archive.org reports a change
    assert not kept.unchanged("a", "fp1", "flac")  # another selection
    assert not kept.unchanged("b", "fp1", "mp3")  # no record
    assert not records(store, recheck="full").unchanged("a", "fp1", "mp3")
    store.files["a"]["x.mp3"] = (10, "another-etag")  # rewritten behind the mirror's back
    assert not kept.unchanged("a", "fp1", "mp3")
    del store.files["a"]["x.mp3"]  # deleted
    assert not kept.unchanged("a", "fp1", "mp3")


def test_no_record_for_a_missing_file_a_dry_run_or_a_bad_identifier():
    store = MemoryStore()
    store.files["a"] = {"x.mp3": (10, "e")}
    records(store).complete("a", "fp", "mp3", ["x.mp3", "gone.mp3"])
    records(store, write=False).complete("a", "fp", "mp3", ["x.mp3"])
    records(store).complete(".hidden", "fp", "mp3", ["x.mp3"])
    records(store).complete("a", "", "mp3", ["x.mp3"])  # no fingerprint: nothing to vouch
    assert store.records == {}


def test_a_record_that_is_not_ours_or_a_failing_store_means_list_again():
    store = MemoryStore()
    store.files["a"] = {"x.mp3": (10, "e")}
    for raw in (b"not json", b"[]", json.dumps({"v": 1, "identifier": "b"}).encode()):
        store.records["a"] = raw
        assert not records(store).unchanged("a", "fp", "mp3")

    class Failing(MemoryStore):
        def read_item_record(self, identifier: str) -> bytes | None:
            raise OSError("connection reset")

    assert not records(Failing()).unchanged("a", "fp", "mp3")
