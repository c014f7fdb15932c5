"""Self-tests of the fake archive.org (tests/fakearchive)."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote, urlencode, urlsplit

import pytest

from ravelscraper.archive.metadata import ItemLocation, Metadata, Selection, page_file_names
from tests.fakearchive import CATALOG, FakeArchive, file_bytes, get_item, max_simultaneous, md5_of
from tests.fakearchive.catalog import HOSTILE_NAMES, RAVEL_ID
from tests.fakearchive.save_fixtures import FIXTURES, ORIGIN, fixtures

RAVEL = "ThePianoMusicOfMauriceRavel"
ORIGINALS = [
    "01PavanePourUneInfanteDfuntePourPianoMr19.mp3",
    "02JeuxDeauPourPianoMr30.mp3",
    "03SonatinePourPianoMr40-Modr.mp3",
    "04MouvementDeMenuet.mp3",
    "05Anim.mp3",
]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeArchive]:
    with FakeArchive() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: FakeArchive) -> Iterator[None]:
    yield
    ranges = dict.fromkeys(["ignore_ranges", "validator_epoch", "ignore_if_range", "refuse_ranges"])
    fake.configure(faults=[], bandwidth=None, latency=0, **ranges)
    fake.reset()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with OPENER.open(
            urllib.request.Request(url, headers=headers or {}), timeout=10
        ) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:  # its response, and the connection under it
            return error.code, dict(error.headers), error.read()


def raw(origin: str, path: str, method: str = "GET") -> http.client.HTTPResponse:
    """A request sent exactly as written (no redirect following, no path normalisation)."""
    connection = http.client.HTTPConnection(urlsplit(origin).netloc, timeout=10)
    connection.request(method, path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_starts_and_prints_both_origins(fake: FakeArchive) -> None:
    assert fake.archive.startswith("http://127.0.0.1:")
    assert fake.storage.startswith("http://127.0.0.2:")
    status, _, body = get(fake.archive + "/robots.txt")
    assert status == 200 and b"Disallow: /" not in body


def test_ravel_metadata_lists_originals_with_matching_md5(fake: FakeArchive) -> None:
    status, headers, body = get(fake.metadata_url(RAVEL))
    doc = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    storage_host = urlsplit(fake.storage).netloc
    assert doc["server"] == doc["d1"] == storage_host and doc["dir"] == f"/28/items/{RAVEL}"
    originals = [f for f in doc["files"] if f["source"] == "original" and f["format"] == "VBR MP3"]
    assert [f["name"] for f in originals] == ORIGINALS
    for entry in originals:
        assert all(isinstance(value, str) for value in entry.values())
        assert entry["md5"] == hashlib.md5(file_bytes(RAVEL, entry["name"])).hexdigest()
        assert int(entry["size"]) == len(file_bytes(RAVEL, entry["name"]))
    assert any(f.get("private") == "true" for f in doc["files"])
    assert any(f["format"] == "64Kbps MP3" and f["original"] == ORIGINALS[0] for f in doc["files"])


def test_download_redirects_to_storage_node(fake: FakeArchive) -> None:
    name = ORIGINALS[1]
    response = raw(fake.archive, f"/download/{RAVEL}/{quote(name)}?cnt=0")
    location = response.getheader("Location") or ""
    assert response.status == 302 and location == f"{fake.storage}/28/items/{RAVEL}/{quote(name)}"
    status, headers, body = get(fake.download_url(RAVEL, name))
    assert status == 200 and body == file_bytes(RAVEL, name)
    assert headers["Accept-Ranges"] == "bytes" and "Last-Modified" in headers
    assert raw(fake.archive, f"/download/{RAVEL}/nope.mp3").status == 404
    assert raw(fake.archive, f"/download/{RAVEL}/{ORIGINALS[0][:-4]}.afpk").status == 403


def test_range_requests(fake: FakeArchive) -> None:
    name = ORIGINALS[4]
    whole = file_bytes(RAVEL, name)
    url = f"{fake.storage}/28/items/{RAVEL}/{name}"
    status, headers, body = get(url, {"Range": "bytes=100-199"})
    assert status == 206 and body == whole[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    status, _, body = get(url, {"Range": f"bytes={len(whole) - 10}-"})
    assert status == 206 and body == whole[-10:]


def test_ranges_as_storage_nodes_answer_them(fake: FakeArchive) -> None:
    name = ORIGINALS[4]
    whole = file_bytes(RAVEL, name)
    url = f"{fake.storage}/28/items/{RAVEL}/{name}"
    _, headers, _ = get(url)
    etag, modified = headers["ETag"], headers["Last-Modified"]
    for validator in (etag, modified):  # If-Range matching: the range
        status, _, body = get(url, {"Range": "bytes=10-", "If-Range": validator})
        assert status == 206 and body == whole[10:]
    status, _, body = get(url, {"Range": "bytes=10-", "If-Range": '"another"'})
    assert status == 200 and body == whole  # another version: the whole file
    status, headers, _ = get(url, {"Range": f"bytes={len(whole)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"
    assert fake.stats()["served"]["storage"] == 2 * (len(whole) - 10) + 2 * len(whole)

    fake.configure(validator_epoch=1)
    _, headers, _ = get(url)
    assert headers["ETag"] != etag and headers["Last-Modified"] != modified
    status, _, body = get(url, {"Range": "bytes=10-", "If-Range": etag})
    assert status == 200 and body == whole
    fake.configure(ignore_if_range=True)
    status, _, body = get(url, {"Range": "bytes=10-", "If-Range": etag})
    assert status == 206 and body == whole[10:]
    fake.configure(refuse_ranges=True)
    assert get(url, {"Range": "bytes=10-"})[0] == 416
    fake.configure(ignore_ranges=True)
    status, headers, body = get(url, {"Range": "bytes=10-"})
    assert status == 200 and body == whole and "Accept-Ranges" not in headers


def test_unknown_item(fake: FakeArchive) -> None:
    assert get(fake.metadata_url("no-such-item-xyz"))[::2] == (200, b"{}")
    assert get(fake.details_url("no-such-item-xyz"))[0] == 404


def test_hostile_names_download_in_both_encodings(fake: FakeArchive) -> None:
    for name in HOSTILE_NAMES:
        for safe in ("/", ""):
            response = raw(fake.archive, f"/download/hostile-names/{quote(name, safe=safe)}")
            assert response.status == 302, (name, safe)
            status, _, body = get(response.getheader("Location") or "")
            assert status == 200 and hashlib.md5(body).hexdigest() == md5_of("hostile-names", name)


def test_429_fault_fires_once_then_serves(fake: FakeArchive) -> None:
    fake.configure(faults=[{"match": "03*.mp3", "kind": "429", "retry_after": 1}])
    url = fake.download_url(RAVEL, ORIGINALS[2])
    status, headers, _ = get(url)
    assert status == 429 and headers["Retry-After"] == "1"
    status, _, body = get(url)
    assert status == 200 and body == file_bytes(RAVEL, ORIGINALS[2])
    fired = fake.stats()["faults_fired"]
    assert [f["kind"] for f in fired] == ["429"]


def test_max_active_counts_concurrent_slow_requests(fake: FakeArchive) -> None:
    fake.configure(bandwidth=400_000)  # ~0.5 s for a 200 kB file
    url = fake.download_url(RAVEL, ORIGINALS[0])
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(get(url)[2])) for _ in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started > 0.3
    assert bodies == [file_bytes(RAVEL, ORIGINALS[0])] * 3
    stats = fake.stats()
    assert stats["127.0.0.2"]["max_active"] == 3 and stats["127.0.0.2"]["active"] == 0
    assert stats["combined"]["max_active"] == 3
    assert max_simultaneous(stats["log"], "127.0.0.2") == 3


def test_sequential_requests_never_overlap(fake: FakeArchive) -> None:
    for name in ORIGINALS:
        assert get(fake.download_url(RAVEL, name))[0] == 200
    stats = fake.stats()
    assert stats["combined"]["max_active"] == 1 and stats["127.0.0.1"]["requests"] == 5
    assert max_simultaneous(stats["log"]) == 1


def test_synthetic_items_and_sizes() -> None:
    config = {"items": {"soak": {"count": 3, "size": 1000}}, "sizes": {"bulk-40": 5000}}
    with FakeArchive(config) as server:
        doc = json.loads(get(server.metadata_url("soak"))[2])
        mp3s = [f["name"] for f in doc["files"] if f["format"] == "VBR MP3"]
        assert mp3s == ["track01.mp3", "track02.mp3", "track03.mp3"]
        status, _, body = get(server.download_url("bulk-40", "track07.mp3"))
        assert (
            status == 200
            and len(body) == 5000
            and body == server.file_bytes("bulk-40", "track07.mp3")
        )
        assert server.process is not None
        process = server.process
        assert process.stdin is not None
        process.stdin.close()  # the parent going away stops the server
        assert process.wait(timeout=5) == 0


def test_fixtures_are_current() -> None:
    for name, text in fixtures().items():
        assert (FIXTURES / name).read_text(encoding="utf-8") == text, f"run save_fixtures: {name}"
    assert get_item("gd1977-like") is not None


@pytest.mark.parametrize("identifier", [RAVEL, "awkward-names"])
def test_saved_details_pages_link_the_files_their_metadata_lists(identifier: str) -> None:
    """The saved pages, read by the spider's own parser as archive.org would serve them."""
    page = (FIXTURES / f"details-{identifier}.html").read_text(encoding="utf-8")
    linked = page_file_names(page, ItemLocation.on(ORIGIN, identifier))
    body = (FIXTURES / f"metadata-{identifier}.json").read_bytes()
    metadata = Metadata.from_json(identifier, body)
    assert metadata is not None
    listed = {f.name for f in metadata.files}
    assert linked and set(linked) <= listed
    assert {f.name for f in Selection().choose(metadata.files)} <= set(linked)


# --- the scrape API and generated collections (collections.py) ---------------------------


def test_scrape_pages_a_generated_collection_by_its_cursor_lazily() -> None:
    from tests.fakearchive.collections import Catalog, decode_cursor, scrape

    catalog = Catalog(CATALOG, {"collections": {"g": {"items": 10_000}}})
    first = scrape(catalog, {"q": ["collection:g"], "count": ["1000"], "fields": ["item_size"]})
    assert first["count"] == 1000 and first["total"] == 10_000 and "previous" not in first
    assert first["items"][0] == {
        "identifier": "g-00001",
        "item_size": catalog.get("g-00001").item_size,
    }
    assert decode_cursor(first["cursor"]) == "g-01000"
    last = scrape(catalog, {"q": ["collection:g"], "count": ["10000"], "cursor": [first["cursor"]]})
    assert last["count"] == 9000 and "cursor" not in last and last["previous"] == first["cursor"]
    assert catalog.get("g-10001") is None and catalog.get("g-1") is None


def test_scrape_refuses_what_archive_org_would_with_an_error_envelope() -> None:
    from tests.fakearchive.collections import Catalog, scrape

    catalog = Catalog(CATALOG, {})
    for params in (
        {"q": ["collection:x"], "count": ["99"]},
        {"q": ["collection:x"], "count": ["10001"]},
        {"q": ["creator Ravel"], "count": ["100"]},
        {"q": ["a:1 OR b:2"], "count": ["100"]},
        {"q": ["collection:x"], "count": ["100"], "cursor": ["not-base64!"]},
    ):
        assert set(scrape(catalog, params)) == {"error"}, params
    assert scrape(catalog, {"q": ["collection:none"], "count": ["100"]}) == {
        "items": [],
        "count": 0,
        "total": None,
    }


def test_a_changed_item_has_new_bytes_checksums_and_search_fields() -> None:
    from tests.fakearchive.collections import Catalog
    from tests.fakearchive.render import metadata

    before = Catalog(CATALOG, {"collections": {"g": {"items": 200}}})
    after = Catalog(
        CATALOG, {"collections": {"g": {"items": 201, "change_every": 100, "revision": 1}}}
    )
    old, new = before.get("g-00100"), after.get("g-00100")
    assert old is not None and new is not None
    old_doc, new_doc = metadata(old, "s"), metadata(new, "s")
    assert new_doc["item_last_updated"] > old_doc["item_last_updated"]
    assert old_doc["files"] != new_doc["files"]  # the rewritten file's md5, sha1, mtime
    assert before.search_fields(old)["oai_updatedate"] != after.search_fields(new)["oai_updatedate"]
    assert before.search_fields(before.get("g-00099")) == after.search_fields(after.get("g-00099"))
    assert before.get("g-00201") is None and after.get("g-00201") is not None  # an item added


def test_search_terms_and_route_counters(fake: FakeArchive) -> None:
    fake.configure(collections={"mix": {"members": [RAVEL_ID, "bulk-40"]}})
    try:
        fake.reset()
        query = 'collection:mix AND creator:"ravel"'
        url = f"{fake.archive}/services/search/v1/scrape?" + urlencode({"q": query, "count": 100})
        answer = json.loads(OPENER.open(url, timeout=10).read())
        assert [i["identifier"] for i in answer["items"]] == [RAVEL_ID]
        OPENER.open(fake.metadata_url("bulk-40"), timeout=10).read()
        OPENER.open(fake.metadata_url("bulk-40") + "/item_last_updated", timeout=10).read()
        assert fake.routes() == {"scrape": 1, "metadata": 1, "metadata_subkey": 1}
    finally:
        fake.configure(collections=None)
