"""End to end: ``scrapy crawl ravel`` in a subprocess against the fake archive.org."""

from __future__ import annotations

import json
import re

import pytest

from tests.fakearchive import file_bytes, get_item, md5_of, sha1_of
from tests.support.crawl import (
    LOG_LINE,
    RAVEL,
    RAVEL_MP3S,
    scrapy_crawl,
    storage_get_paths,
    stored_files,
)


def test_mirrors_the_original_mp3s_byte_exact_with_a_manifest(archive, tmp_path):
    store, manifest = tmp_path / "store", tmp_path / "files.jsonl"
    crawl = scrapy_crawl(
        "-a", f"url={archive.details_url(RAVEL)}", "-O", str(manifest), store=store
    )

    assert crawl.returncode == 0, crawl.log
    assert stored_files(store) == {f"{RAVEL}/{n}": file_bytes(RAVEL, n) for n in RAVEL_MP3S}
    items = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(i["name"] for i in items) == RAVEL_MP3S
    for item in items:
        assert item["md5"] == md5_of(RAVEL, item["name"])
        assert item["sha1"] == sha1_of(RAVEL, item["name"])
        # Checked against the sha1 archive.org lists (the manifest says which hash).
        assert item["files"][0]["checksum"] == item["sha1"]
        assert item["files"][0]["checksum_type"] == "sha1"
        assert item["files"][0]["status"] == "downloaded"
        assert item["creator"] and item["title"] and item["track"] and item["length"] > 0
    assert crawl.stat("ravel/files_downloaded") == 5
    assert not crawl.errors
    assert "[main finished] 5 downloaded" in crawl.log
    for name in RAVEL_MP3S:
        assert f"[download start] {name}" in crawl.log
        assert f"[download finished] {name} (" in crawl.log
    # The seed's log shape, on every line Scrapy writes.
    records = [line for line in crawl.log.splitlines() if re.match(r"\[[A-Z]+\]", line)]
    assert len(records) > 10 and all(LOG_LINE.match(line) for line in records)
    # Every file went through the 302 to the storage host.
    assert sorted(p.rsplit("/", 1)[-1] for p in storage_get_paths(archive)) == RAVEL_MP3S


@pytest.mark.slow
def test_a_second_run_downloads_nothing_and_a_damaged_copy_is_replaced(archive, tmp_path):
    store = tmp_path / "store"
    url = f"url={archive.details_url(RAVEL)}"
    assert scrapy_crawl("-a", url, store=store).returncode == 0
    archive.reset()

    again = scrapy_crawl("-a", url, store=store)
    assert again.returncode == 0, again.log
    assert storage_get_paths(archive) == []
    assert "[main finished] 0 downloaded" in again.log and "5 already up to date" in again.log

    damaged = store / RAVEL / RAVEL_MP3S[2]
    damaged.write_bytes(b"not the recording")
    archive.reset()
    repaired = scrapy_crawl("-a", url, store=store)
    assert repaired.returncode == 0, repaired.log
    assert len(storage_get_paths(archive)) == 1
    assert damaged.read_bytes() == file_bytes(RAVEL, RAVEL_MP3S[2])


@pytest.mark.slow
def test_the_default_item_on_a_mirror_origin(archive, tmp_path):
    crawl = scrapy_crawl(store=tmp_path, RAVEL_ORIGIN=archive.archive)
    assert crawl.returncode == 0, crawl.log
    assert sorted(stored_files(tmp_path)) == [f"{RAVEL}/{n}" for n in RAVEL_MP3S]


@pytest.mark.slow
def test_awkward_names_are_kept_as_archive_org_names_them(archive, tmp_path):
    crawl = scrapy_crawl("-a", "item=awkward-names", store=tmp_path, RAVEL_ORIGIN=archive.archive)
    assert crawl.returncode == 0, crawl.log
    expected = {
        f"awkward-names/{f['name']}": file_bytes("awkward-names", f["name"])
        for f in get_item_files("awkward-names")
        if f["format"] == "VBR MP3"
    }
    assert len(expected) >= 5
    assert stored_files(tmp_path) == expected


def get_item_files(identifier: str) -> list[dict]:
    item = get_item(identifier)
    return [{"name": f.name, "format": f.format} for f in item.files]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["429", "503"])
def test_retry_after_is_honoured(archive, tmp_path, fault):
    name = RAVEL_MP3S[0]
    archive.configure({"faults": [{"match": name, "kind": fault, "times": 1, "retry_after": 1}]})
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=tmp_path)

    assert crawl.returncode == 0, crawl.log
    assert (tmp_path / RAVEL / name).read_bytes() == file_bytes(RAVEL, name)
    attempts = [e for e in archive.stats()["log"] if e["path"].endswith(name)]
    refused = [e for e in attempts if e["status"] == int(fault)]
    assert len(refused) == 1
    after = [e for e in attempts if e["start"] > refused[0]["start"]]
    # 1 s, not the 0.1 s backoff the crawl is given
    assert after and after[0]["start"] - refused[0]["end"] >= 1.0


@pytest.mark.slow
def test_a_file_whose_checksum_never_matches_fails_loudly_and_is_not_stored(archive, tmp_path):
    name = RAVEL_MP3S[1]
    archive.configure({"faults": [{"match": name, "kind": "corrupt", "times": 10}]})
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=tmp_path)

    assert crawl.returncode == 1
    failed = [line for line in crawl.errors if name in line]
    assert len(failed) == 1 and sha1_of(RAVEL, name) in failed[0] and "sha1 mismatch" in failed[0]
    assert "Traceback" not in crawl.log
    assert sorted(stored_files(tmp_path)) == [f"{RAVEL}/{n}" for n in RAVEL_MP3S if n != name]
    corrupt_gets = [p for p in storage_get_paths(archive) if p.endswith(name)]
    assert len(corrupt_gets) == 2  # one retry, then reported
    assert "4 downloaded" in crawl.log and "1 failed" in crawl.log


@pytest.mark.slow
def test_a_corrupt_transfer_is_fetched_again(archive, tmp_path):
    name = RAVEL_MP3S[1]
    archive.configure({"faults": [{"match": name, "kind": "corrupt", "times": 1}]})
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=tmp_path)
    assert crawl.returncode == 0, crawl.log
    assert (tmp_path / RAVEL / name).read_bytes() == file_bytes(RAVEL, name)


@pytest.mark.slow
def test_hostile_names_never_leave_the_store(archive, tmp_path):
    store = tmp_path / "deep" / "store"
    crawl = scrapy_crawl("-a", "item=hostile-names", store=store, RAVEL_ORIGIN=archive.archive)

    assert crawl.returncode == 1
    assert "Traceback" not in crawl.log
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and store not in p.parents]
    assert outside == []
    refused = [line for line in crawl.errors if "refused the name" in line]
    reasons = ["'..'", "'..'", "absolute", "backslash", "control character", "255 bytes", "case"]
    assert len(refused) == len(reasons)
    for reason in reasons:
        assert any(reason in line for line in refused), reason
    # What remains is ordinary, stored under its own name: safe.mp3 and one of Case/case.
    stored = stored_files(store)
    assert sorted(p.casefold() for p in stored) == [
        "hostile-names/case.mp3",
        "hostile-names/safe.mp3",
    ]
    for path, body in stored.items():
        assert body == file_bytes("hostile-names", path.split("/", 1)[1])


@pytest.mark.slow
def test_falls_back_to_the_page_links_when_metadata_fails(archive, tmp_path):
    archive.configure({"metadata_fail": [RAVEL]})
    crawl = scrapy_crawl("-a", f"url={archive.details_url(RAVEL)}", store=tmp_path, RETRY_TIMES=1)
    assert crawl.returncode == 0, crawl.log
    assert "checksums can't be verified" in crawl.log
    assert stored_files(tmp_path) == {f"{RAVEL}/{n}": file_bytes(RAVEL, n) for n in RAVEL_MP3S}


@pytest.mark.slow
def test_formats_and_globs_choose_other_files(archive, tmp_path):
    crawl = scrapy_crawl(
        "-a", "item=no-mp3", "-a", "formats=Flac", store=tmp_path, RAVEL_ORIGIN=archive.archive
    )
    assert crawl.returncode == 0, crawl.log
    flacs = [f["name"] for f in get_item_files("no-mp3") if f["format"] == "Flac"]
    assert flacs and sorted(stored_files(tmp_path)) == sorted(f"no-mp3/{n}" for n in flacs)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-a", "url=definitely not a url"], "not an http(s) URL"),
        (["-a", "url={origin}/download/{ravel}/05Anim.mp3"], "not a details page"),
        (["-a", "item=no-such-item-here"], "unknown item 'no-such-item-here'"),
        (["-a", "item=no-mp3"], "its formats are: "),
        (["-a", "item=../etc"], "not an archive.org identifier"),
        (["-a", "url="], "empty argument -a url=: give it a value or leave it out"),
        (["-a", "formts=Flac"], "unknown argument -a formts=; the known arguments are -a url="),
        (["-a", "colour=X"], "unknown argument -a colour=; the known arguments are"),
    ],
)
def test_bad_input_gives_one_clear_line_and_a_failing_status(archive, tmp_path, args, message):
    args = [a.format(origin=archive.archive, ravel=RAVEL) for a in args]
    crawl = scrapy_crawl(*args, store=tmp_path, RAVEL_ORIGIN=archive.archive)
    assert crawl.returncode == 1
    assert len(crawl.errors) == 1, crawl.errors
    assert message in crawl.errors[0]
    assert "Traceback" not in crawl.log
    assert storage_get_paths(archive) == []


@pytest.mark.slow
def test_an_unwritable_store_is_reported_before_any_download(archive, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    crawl = scrapy_crawl(store=blocker / "store", RAVEL_ORIGIN=archive.archive)
    assert crawl.returncode == 1
    assert len(crawl.errors) == 1 and "is not writable" in crawl.errors[0]
    assert "Traceback" not in crawl.log
    assert archive.stats()["log"] == []
    assert blocker.read_text() == "keep me"


@pytest.mark.slow
def test_scrapyd_job_argument_is_accepted(archive, tmp_path):
    crawl = scrapy_crawl(
        "-a",
        "_job=0f1e2d",
        "-a",
        "item=regenerated-metadata",
        store=tmp_path,
        RAVEL_ORIGIN=archive.archive,
    )
    assert crawl.returncode == 0, crawl.log
    assert len(stored_files(tmp_path)) == 2 and not crawl.errors
