"""Unit tests of ravelscraper.pipelines.verify: the verify-and-retry loop and the up-to-date check,
fed plain bodies and checksums (no network, no store)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import pytest
from scrapy.pipelines.media import FileException

from ravelscraper.items import AudioFile
from ravelscraper.pipelines.verify import expected_checksum, stale, up_to_date, verified_body

BODY = b"le tombeau de couperin" * 100
MD5 = hashlib.md5(BODY).hexdigest()
SHA1 = hashlib.sha1(BODY).hexdigest()


def listed(**fields) -> AudioFile:
    fields = {"size": len(BODY), "md5": MD5, **fields}
    return AudioFile(identifier="item", name="a.mp3", url="http://x/a.mp3", **fields)


@dataclass
class FakeBody:
    size: int
    checksum: str
    partial: bool = False
    discarded: bool = False

    def discard(self) -> None:
        self.discarded = True


GOOD = FakeBody(len(BODY), MD5)


def run(item: AudioFile, retries: int, bodies: list[FakeBody]) -> tuple[FakeBody, list[int]]:
    """The loop's answer, and the attempts it asked for."""
    asked: list[int] = []

    async def fetch(attempt: int) -> FakeBody:
        asked.append(attempt)
        return bodies[attempt]

    return asyncio.run(verified_body(item, retries, fetch)), asked


def test_a_matching_body_is_taken_at_once():
    body, asked = run(listed(), 1, [FakeBody(len(BODY), MD5)])
    assert asked == [0] and not body.discarded


def test_a_bad_body_is_fetched_again_and_the_good_one_kept():
    bad = FakeBody(len(BODY), "0" * 32)
    body, asked = run(listed(), 1, [bad, FakeBody(len(BODY), MD5)])
    assert asked == [0, 1] and bad.discarded and not body.discarded and body.checksum == MD5


def test_retries_are_counted_then_the_file_fails():
    bodies = [FakeBody(7, MD5) for _ in range(4)]
    asked: list[int] = []

    async def fetch(attempt: int) -> FakeBody:
        asked.append(attempt)
        return bodies[attempt]

    with pytest.raises(FileException, match=r"got 7 bytes, archive\.org lists"):
        asyncio.run(verified_body(listed(), 2, fetch))
    assert asked == [0, 1, 2]
    assert [b.discarded for b in bodies] == [True, True, True, False]


def test_no_retries_fails_the_first_bad_body():
    with pytest.raises(FileException, match="md5 mismatch"):
        run(listed(), 0, [FakeBody(len(BODY), "0" * 32)])


def test_a_regenerated_file_is_kept_unverified_after_its_retries():
    item = listed(md5="0" * 32, size=None, regenerated=True)
    body, asked = run(item, 1, [FakeBody(len(BODY), MD5), FakeBody(len(BODY), MD5)])
    assert asked == [0, 1] and not body.discarded


def test_a_regenerated_file_cut_short_still_fails():
    item = listed(md5="0" * 32, size=None, regenerated=True)
    with pytest.raises(FileException, match="md5 mismatch"):
        run(item, 0, [FakeBody(len(BODY), MD5, partial=True)])


def test_the_sha1_decides_where_listed():
    item = listed(sha1=SHA1)
    assert expected_checksum(item) == ("sha1", SHA1)
    _, asked = run(item, 0, [FakeBody(len(BODY), SHA1)])
    assert asked == [0]
    with pytest.raises(FileException, match="sha1 mismatch"):
        run(item, 0, [FakeBody(len(BODY), MD5)])


def test_a_partial_body_with_nothing_to_check_it_is_refused():
    with pytest.raises(FileException, match="may be incomplete"):
        run(listed(md5=None, size=None), 0, [FakeBody(5, "x", partial=True)])
    body, _ = run(listed(md5=None, size=None), 0, [FakeBody(5, "x")])
    assert body.size == 5


def test_a_stored_copy_is_stale_by_size_or_checksum():
    item = listed()
    assert stale(item, {"checksum": MD5, "size": len(BODY)}, "md5", MD5) is None
    assert stale(item, {"checksum": MD5, "size": 3}, "md5", MD5) == f"stored size 3 != {len(BODY)}"
    assert stale(item, {"checksum": "f" * 32}, "md5", MD5) == f"stored md5 {'f' * 32} != {MD5}"
    # Nothing listed to compare: only the size (when known on both sides) decides.
    assert stale(listed(md5=None), {"checksum": "f" * 32, "size": len(BODY)}, "md5", None) is None


def test_a_stored_copy_is_up_to_date_only_when_it_matches():
    item = listed()
    copy = {"checksum": MD5, "size": len(BODY)}

    def check(stored: object, target: AudioFile = item, expected: str | None = MD5):
        async def stat() -> dict:
            if isinstance(stored, Exception):
                raise stored
            return stored  # type: ignore[return-value]

        return asyncio.run(up_to_date(target, stat, "md5", expected))

    assert check(copy) == copy
    assert check({}) is None  # not stored yet
    assert check({**copy, "size": 1}) is None  # stale
    assert check(OSError("unreadable")) is None  # an unreadable copy is fetched again
    assert check(copy, listed(md5=None, size=None), None) is None  # nothing to compare
