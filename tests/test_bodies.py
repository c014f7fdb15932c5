"""received_body: a response turned into the body the files pipeline verifies, in-process.

Small in-memory bodies, and a stand-in for a streamed part file (``result`` and ``discard``
are all received_body uses of it); the verdicts come from ``verify.verified_body``.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from scrapy.http import Response
from scrapy.pipelines.media import FileException

from ravelscraper.downloader.streaming import STREAMED, StoreWriteError
from ravelscraper.items import AudioFile
from ravelscraper.pipelines.bodies import ReceivedBody, received_body
from ravelscraper.pipelines.verify import verified_body

URL = "http://127.0.0.1:1/download/item/a.mp3"
BODY = b"pavane pour une infante defunte" * 10
MD5 = hashlib.md5(BODY).hexdigest()
SHA1 = hashlib.sha1(BODY).hexdigest()


class FakeStreamed:
    """What the part file of a streamed body answers: (size, digest), or a write's OSError."""

    def __init__(self, size: int = 0, checksum: str = "", error: OSError | None = None):
        self.size, self.checksum, self.error = size, checksum, error
        self.discards = 0

    async def result(self) -> tuple[int, str]:
        await asyncio.sleep(0)  # the last write lands later
        if self.error is not None:
            raise self.error
        return self.size, self.checksum

    def discard(self) -> None:
        self.discards += 1


def response(body: bytes = BODY, status: int = 200, flags: tuple[str, ...] = ()) -> Response:
    return Response(URL, status=status, body=body, flags=list(flags))


def receive(
    answer: Response,
    streamed: FakeStreamed | None = None,
    write_error: OSError | None = None,
    algorithm: str = "md5",
) -> ReceivedBody:
    return asyncio.run(received_body(answer, streamed, write_error, algorithm))  # type: ignore[arg-type]


# --- in memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "digest"), [("md5", MD5), ("sha1", SHA1)])
def test_an_in_memory_body_is_measured_with_the_listed_algorithm(algorithm, digest):
    body = receive(response(), algorithm=algorithm)
    assert (body.size, body.checksum, body.partial) == (len(BODY), digest, False)
    assert body.data == BODY and body.streamed is None


def test_a_partial_body_says_so():
    short = BODY[:-5]
    body = receive(response(short, flags=("partial",)))
    assert body.partial and body.size == len(BODY) - 5
    assert body.checksum == hashlib.md5(short).hexdigest()


def test_an_empty_body_is_a_body_of_zero_bytes():
    body = receive(response(b""))
    assert (body.size, body.checksum) == (0, hashlib.md5(b"").hexdigest())


def test_a_streamed_body_of_another_response_is_discarded():
    stale = FakeStreamed(99, "0" * 32)
    body = receive(response(), stale)  # the answer was not streamed: its body is in memory
    assert stale.discards == 1 and body.streamed is None and body.checksum == MD5


# --- streamed -------------------------------------------------------------------------------


def test_a_streamed_body_is_what_its_part_file_measured():
    streamed = FakeStreamed(len(BODY), MD5)
    body = receive(response(b"", flags=(STREAMED,)), streamed)
    assert (body.size, body.checksum, body.partial) == (len(BODY), MD5, False)
    assert body.streamed is streamed and body.data is None and streamed.discards == 0
    body.discard()
    assert streamed.discards == 1


def test_a_streamed_partial_body_says_so():
    streamed = FakeStreamed(10, MD5)
    body = receive(response(b"", flags=(STREAMED, "partial")), streamed)
    assert body.partial and body.size == 10


def test_a_streamed_body_without_its_part_file_is_an_error():
    with pytest.raises(FileException, match="the streamed body was lost"):
        receive(response(b"", flags=(STREAMED,)), None)


def test_a_failed_write_of_the_part_file_is_a_store_error_and_the_file_is_deleted():
    streamed = FakeStreamed(error=OSError(28, "No space left on device"))
    with pytest.raises(StoreWriteError, match="No space left on device") as raised:
        receive(response(b"", flags=(STREAMED,)), streamed)
    assert raised.value.error.errno == 28 and streamed.discards == 1


def test_a_write_error_reported_by_the_target_comes_first():
    streamed = FakeStreamed(len(BODY), MD5)
    with pytest.raises(StoreWriteError, match="Read-only file system"):
        receive(response(b"", flags=(STREAMED,)), streamed, OSError(30, "Read-only file system"))
    assert streamed.discards == 1


@pytest.mark.parametrize("status", [301, 404, 503])
def test_only_a_200_is_a_body(status):
    streamed = FakeStreamed(len(BODY), MD5)
    with pytest.raises(FileException, match=f"HTTP {status} from {URL}"):
        receive(response(status=status, flags=(STREAMED,)), streamed)
    assert streamed.discards == 1  # never left behind


def test_a_206_is_a_body_only_when_it_was_streamed_onto_its_part_file():
    # A resumed transfer appends the range to the part file, which then holds the whole file.
    streamed = FakeStreamed(len(BODY), MD5)
    body = receive(response(b"", status=206, flags=(STREAMED,)), streamed)
    assert (body.size, body.checksum) == (len(BODY), MD5) and body.streamed is streamed
    with pytest.raises(FileException, match=f"HTTP 206 from {URL}"):
        receive(response(BODY[5:], status=206))  # a range in memory is never a whole file


# --- the verdicts on what was received --------------------------------------------------------


def listed(**fields: object) -> AudioFile:
    return AudioFile(identifier="item", name="a.mp3", url=URL, **fields)  # type: ignore[arg-type]


def verdict(item: AudioFile, answer: Response) -> ReceivedBody:
    async def fetch(attempt: int) -> ReceivedBody:
        return await received_body(answer, None, None, "sha1" if item.sha1 else "md5")

    return asyncio.run(verified_body(item, 0, fetch))


def test_a_short_body_fails_on_its_size():
    with pytest.raises(FileException, match=rf"got {len(BODY) - 1} bytes, archive\.org lists"):
        verdict(listed(size=len(BODY), md5=MD5), response(BODY[:-1], flags=("partial",)))


def test_a_partial_body_with_nothing_to_check_it_against_fails():
    with pytest.raises(FileException, match="may be incomplete"):
        verdict(listed(), response(BODY, flags=("partial",)))
    assert verdict(listed(), response(BODY)).data == BODY  # complete: taken unchecked


def test_a_partial_body_that_matches_its_checksum_is_taken():
    body = verdict(listed(sha1=SHA1), response(BODY, flags=("partial",)))
    assert body.partial and body.checksum == SHA1
