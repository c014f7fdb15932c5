"""Named part files (ravelscraper.stores.parts), in-process: what a next run resumes, what it
discards, what the max age removes, and symbolic links never followed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from ravelscraper.stores.local import AtomicFSFilesStore
from ravelscraper.stores.parts import (
    UnsafePartPlace,
    claim_part,
    create_part,
    create_part_once,
    nothing_to_claim,
    part_place,
    remove_old_parts,
    remove_place,
)

BODY = bytes(range(256)) * 40  # 10,240 bytes
LISTING = {"size": len(BODY), "mtime": 1650000001, "md5": hashlib.md5(BODY).hexdigest()}


def left_part(root: Path, data: bytes, **listing: object):
    """A part holding ``data`` as a killed run leaves it."""
    place = part_place(root, "item", "disc1/a.flac", **{**LISTING, **listing})
    assert place is not None
    fd = create_part(place, '"etag-1"', 0o644)
    assert fd is not None
    os.write(fd, data)
    os.close(fd)
    return place


def test_a_part_of_the_same_listing_is_resumed_with_its_digest(tmp_path):
    left_part(tmp_path, BODY[:4000])
    place = part_place(tmp_path, "item", "disc1/a.flac", **LISTING)

    claimed = claim_part(place, "md5")

    assert claimed is not None and claimed.size == 4000 and claimed.validator == '"etag-1"'
    assert claimed.digest.hexdigest() == hashlib.md5(BODY[:4000]).hexdigest()
    assert os.lseek(claimed.fd, 0, os.SEEK_CUR) == 4000
    os.close(claimed.fd)
    assert place.path == tmp_path / ".ravel/parts/item/disc1/a.flac.part"


@pytest.mark.parametrize(
    "changed", [{"size": len(BODY) + 1}, {"mtime": 1650000002}, {"md5": "0" * 32}]
)
def test_a_part_started_for_another_listing_is_deleted(tmp_path, changed):
    left_part(tmp_path, BODY[:4000])
    place = part_place(tmp_path, "item", "disc1/a.flac", **{**LISTING, **changed})

    assert claim_part(place, "md5") is None
    assert not place.path.exists() and not place.path.with_suffix(".part.json").exists()


def test_a_part_longer_than_listed_is_deleted_and_a_complete_one_loses_its_last_byte(tmp_path):
    place = left_part(tmp_path, BODY + b"x")
    assert claim_part(place, "md5") is None and not place.path.exists()

    place = left_part(tmp_path, BODY)
    claimed = claim_part(place, "md5")
    assert claimed is not None and claimed.size == len(BODY) - 1
    assert os.fstat(claimed.fd).st_size == len(BODY) - 1
    os.close(claimed.fd)


def test_a_part_locked_by_another_writer_is_left_alone(tmp_path):
    place = left_part(tmp_path, BODY[:100])
    holder = os.open(place.path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert claim_part(place, "md5") is None
        assert create_part(place, '"etag-2"', 0o644) is None
        assert place.path.stat().st_size == 100
    finally:
        os.close(holder)


def test_no_part_place_without_anything_to_check_a_part_against(tmp_path):
    assert part_place(tmp_path, "item", "a.flac", size=None, md5=None, sha1=None) is None
    assert part_place(tmp_path, "item", "../a.flac", **LISTING) is None


def test_symlinks_are_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    (store / ".ravel").symlink_to(elsewhere)
    place = part_place(store, "item", "a.flac", **LISTING)

    with pytest.raises(UnsafePartPlace):
        create_part(place, '"e"', 0o644)
    with pytest.raises(UnsafePartPlace):
        remove_old_parts(store, 0)
    assert claim_part(place, "md5") is None
    assert list(elsewhere.iterdir()) == []

    # A symlink in place of a part is neither opened nor deleted by the sweep.
    (store / ".ravel").unlink()
    folder = store / ".ravel" / "parts" / "item"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (folder / "a.flac.part").symlink_to(victim)
    assert claim_part(place, "md5") is None
    remove_old_parts(store, 0)
    assert victim.read_bytes() == b"keep me"


def test_old_leftovers_go_and_recent_ones_stay(tmp_path):
    old = left_part(tmp_path, BODY[:10])
    recent = part_place(tmp_path, "other", "b.flac", **LISTING)
    os.close(create_part(recent, '"e"', 0o644))
    long_ago = time.time() - 10 * 86400
    for path in old.path.parent.iterdir():
        os.utime(path, (long_ago, long_ago))

    assert remove_old_parts(tmp_path, 7) == 2

    assert not (tmp_path / ".ravel/parts/item").exists()  # empty folders go too
    assert recent.path.exists()


def test_removing_a_part_removes_the_folders_it_leaves_empty(tmp_path):
    first = left_part(tmp_path, BODY[:10])
    second = part_place(tmp_path, "item", "b.flac", **LISTING)
    os.close(create_part(second, '"e"', 0o644))

    remove_place(first)
    assert not (tmp_path / ".ravel/parts/item/disc1").exists()
    assert second.path.exists()  # its folder is not empty
    remove_place(second)
    assert list((tmp_path / ".ravel/parts").iterdir()) == []


def test_a_part_is_never_created_in_a_folder_another_part_of_its_item_just_emptied(tmp_path):
    """Threads finishing and starting parts of one item (as 8 downloads at a time do): the
    folder a part is being created in is never removed under it (a single try, no retry)."""
    places = [part_place(tmp_path, "item", f"t{n:02d}.mp3", **LISTING) for n in range(4)]
    failures: list[OSError] = []

    def churn(place) -> None:
        for _ in range(300):
            try:
                fd = create_part_once(place, '"e"', 0o644)
            except OSError as exc:
                failures.append(exc)
                continue
            assert fd is not None
            os.close(fd)
            remove_place(place)

    threads = [threading.Thread(target=churn, args=(place,)) for place in places]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert list((tmp_path / ".ravel/parts").iterdir()) == []


def test_no_part_to_claim_leaves_the_item_folder_to_the_parts_being_written(tmp_path):
    writing = part_place(tmp_path, "item", "b.flac", **LISTING)
    fd = create_part(writing, '"e"', 0o644)
    place = part_place(tmp_path, "item", "a.flac", **LISTING)

    assert claim_part(place, "md5") is None
    assert sorted(p.name for p in writing.path.parent.iterdir()) == [
        "b.flac.part",
        "b.flac.part.json",
    ]
    os.close(fd)


def test_a_committed_part_leaves_no_sidecar_and_no_emptied_folder(tmp_path):
    other = part_place(tmp_path, "item", "b.flac", **LISTING)
    os.close(create_part(other, '"e"', 0o644))
    place = part_place(tmp_path, "item", "disc1/a.flac", **LISTING)
    fd = create_part(place, '"e"', 0o644)
    os.write(fd, BODY)
    store = AtomicFSFilesStore(tmp_path)

    store.commit_part(fd, place.path, "item/disc1/a.flac")
    os.close(fd)

    assert (tmp_path / "item/disc1/a.flac").read_bytes() == BODY
    assert not (tmp_path / ".ravel/parts/item/disc1").exists()
    assert sorted(p.name for p in other.path.parent.iterdir()) == [
        "b.flac.part",
        "b.flac.part.json",
    ]
    remove_place(other)
    assert list((tmp_path / ".ravel/parts").iterdir()) == []


def test_lacks_says_whether_anything_is_at_a_path(tmp_path):
    store = AtomicFSFilesStore(tmp_path)
    (tmp_path / "item").mkdir()
    (tmp_path / "item/a.mp3").write_bytes(b"x")
    (tmp_path / "item/link.mp3").symlink_to(tmp_path / "nowhere")

    assert store.lacks("item/b.mp3") and store.lacks("other/a.mp3")
    assert not store.lacks("item/a.mp3") and not store.lacks("item/link.mp3")


def test_nothing_to_claim_unless_a_part_or_its_sidecar_is_there(tmp_path):
    place = left_part(tmp_path, BODY[:10])
    assert not nothing_to_claim(place)
    os.unlink(place.path)
    assert not nothing_to_claim(place)  # its sidecar alone: claim_part deletes it
    remove_place(place)
    assert nothing_to_claim(place)
