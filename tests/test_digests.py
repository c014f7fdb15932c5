"""The compact sets and maps of ravelscraper.digests, and what keeps them: the dupefilter of a
crawl without a fleet and the item folders' case rule (memory flat in the number of items)."""

from __future__ import annotations

import random

from scrapy import Request
from scrapy.utils.test import get_crawler

from ravelscraper.archive.names import NameClaims, refused_name
from ravelscraper.digests import BUCKETS, DigestMap, DigestSet, digest64
from ravelscraper.dupefilter import CompactDupeFilter

MANY = 5 * BUCKETS  # several entries in each bucket


def distinct_keys(count: int, seed: int) -> list[int]:
    """``count`` different 64-bit keys, the extremes among them."""
    rng = random.Random(seed)
    keys = {0, (1 << 64) - 1}
    while len(keys) < count:
        keys.add(rng.getrandbits(64))
    return rng.sample(sorted(keys), count)


def test_a_digest_set_holds_every_key_added_and_no_other() -> None:
    keys = distinct_keys(2 * MANY, 7)
    added, others = keys[:MANY], keys[MANY:]
    digests = DigestSet()
    for key in added:
        digests.add(key)
        digests.add(key)  # a key added again is one entry
    assert len(digests) == MANY
    assert all(key in digests for key in added)
    assert not any(key in digests for key in others)
    buckets = [bucket for bucket in digests.buckets if bucket is not None]
    assert sum(map(len, buckets)) == MANY and all(list(b) == sorted(b) for b in buckets)
    assert {bucket.itemsize for bucket in buckets} == {8}


def test_a_digest_map_keeps_each_keys_first_value() -> None:
    keys = distinct_keys(MANY, 8)
    digests = DigestMap()
    for number, key in enumerate(keys):
        assert digests.setdefault(key, number) == number
    assert all(digests.setdefault(key, MANY) == n for n, key in enumerate(keys))
    assert len(digests) == MANY
    assert digests.setdefault(digest64("never added"), MANY) == MANY and len(digests) == MANY + 1


def test_the_dupefilter_takes_each_request_once_in_8_bytes() -> None:
    dupefilter = CompactDupeFilter.from_crawler(get_crawler())
    urls = [f"http://127.0.0.1:1/metadata/item-{n:05d}" for n in range(MANY)]
    assert not any(dupefilter.request_seen(Request(url)) for url in urls)
    assert all(dupefilter.request_seen(Request(url)) for url in urls)  # each a second time
    assert not dupefilter.request_seen(Request(urls[0], method="POST"))  # another request
    assert len(dupefilter.seen) == MANY + 1


def test_the_item_folders_case_rule_holds_for_many_whichever_spelling_came_first() -> None:
    claims = NameClaims()
    for number in range(MANY):  # lower-case identifiers keep no spelling; mixed-case ones do
        identifier = f"Item-{number}" if number % 2 else f"item-{number}"
        assert refused_name(claims, identifier, "a.mp3") == ""
        assert refused_name(claims, identifier, "b.mp3") == ""  # the same item, its files
    assert len(claims.folders) == MANY
    assert len(claims.spellings) < 10 * MANY  # the mixed-case ones only
    refused = "refused the name: its item {!r} differs only in case from {!r}"
    assert refused_name(claims, "ITEM-7", "a.mp3") == refused.format("ITEM-7", "Item-7")
    assert refused_name(claims, "item-7", "a.mp3") == refused.format("item-7", "Item-7")
    assert refused_name(claims, "Item-8", "a.mp3") == refused.format("Item-8", "item-8")
    assert refused_name(claims, "Item-7", "c.mp3") == ""  # its own spelling, again
    assert refused_name(claims, "item-2", "a.mp3") == ""  # an item listed again
    assert refused_name(claims, "Straße", "a.mp3") == ""
    assert refused_name(claims, "STRASSE", "a.mp3") == refused.format("STRASSE", "Straße")
