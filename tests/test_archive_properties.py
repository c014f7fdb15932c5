"""Property-based tests: whatever archive.org (or anything posing as it) answers, the parsers
either return files the rest of the project can handle, or raise BadInput. Nothing else."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ravelscraper.archive.metadata import (
    MD5,
    BadInput,
    ItemLocation,
    Metadata,
    RemoteFile,
    Selection,
    page_file_names,
    parse_length,
    playlist_sources,
)
from ravelscraper.archive.names import UnsafeName, safe_relative_path
from ravelscraper.items import AudioFile

ITEM = ItemLocation("https://archive.org", "some-item")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON as json.loads produces it, lone surrogates and odd numbers included.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["²", "12", "-5", "nan", "1e400", "04:26", "true", "\ud800x", "ab" * 16])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
FIELDS = ["name", "size", "md5", "length", "format", "private", "original", "title", "source"]
entries = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=9) | json_values
names = st.text(min_size=1, max_size=40) | st.sampled_from(
    ["../x.mp3", "a/./b.mp3", "\ud800.mp3", "x\n[INFO]\ty.mp3", "some-item_files.xml"]
)
file_entries = st.fixed_dictionaries({"name": names}, optional={k: json_values for k in FIELDS[1:]})
documents = st.fixed_dictionaries(
    {},
    optional={
        "files": st.lists(file_entries | entries, max_size=8) | json_values,
        "metadata": st.dictionaries(st.sampled_from(["title", "creator", "mediatype"]), json_values)
        | json_values,
        "is_collection": json_values,
    },
)


def check_file(file: RemoteFile) -> None:
    """What the spider, the pipeline and the fleet's records rely on."""
    file.name.encode("utf-8")  # no lone surrogate
    for value in (file.format, file.title, file.album, file.creator, file.track, file.original):
        value.encode("utf-8")
    with contextlib.suppress(UnsafeName):  # flagged: the spider fails it in one line
        safe_relative_path(ITEM.identifier, file.name)
    assert file.md5 is None or MD5.fullmatch(file.md5)
    assert file.size is None or (isinstance(file.size, int) and file.size >= 0)
    assert file.length is None or (math.isfinite(file.length) and file.length >= 0)
    record = AudioFile.listed(ITEM, file)
    json.dumps(record.__dict__, allow_nan=False).encode("utf-8")  # a manifest line, an entry


@pytest.mark.slow
@FAST
@given(entries)
@example({"name": "\ud800bad.mp3"})
@example({"name": "a.mp3", "size": "²", "md5": "zz"})
@example(None)
def test_a_metadata_entry_is_a_file_or_bad_input(entry):
    try:
        file = RemoteFile.from_metadata(entry, "some-item")
    except BadInput:
        return
    check_file(file)


@pytest.mark.slow
@FAST
@given(documents)
@example({"files": [None], "metadata": {}})
@example({"files": [], "metadata": "oops"})
def test_a_metadata_document_is_files_or_bad_input(doc):
    body = json.dumps(doc)  # lone surrogates travel as \\ud800 escapes, as on the wire
    try:
        metadata = Metadata.from_json("some-item", body)
    except BadInput:
        return
    if metadata is None:
        return
    assert len({f.name for f in metadata.files}) == len(metadata.files)  # one file per name
    for file in metadata.files:
        check_file(file)
    for selection in (Selection(), Selection.from_args("VBR MP3,Flac", "*")):
        selection.choose(metadata.files)
        selection.restricted(metadata.files)
    assert all(isinstance(w, str) and "\n" not in w for w in metadata.warnings)


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@example(b"[" * 200_000 + b"]" * 200_000)
@example(b"\xff\xfe{")
def test_any_bytes_as_metadata_are_files_or_bad_input(body):
    try:
        metadata = Metadata.from_json("some-item", body)
    except BadInput:
        return
    for file in metadata.files if metadata else ():
        check_file(file)


link = st.sampled_from(
    [
        "/download/some-item/a.mp3",
        "https://archive.org/download/some-item/disc%202/%C3%A9.mp3",
        "/download/some-item/%ED%A0%80.mp3",  # an encoded lone surrogate
        "/download/some-item/..%2F..%2Fx.mp3",
        "http://[::1/download/some-item/x.mp3",
        "/download/other/x.mp3",
    ]
) | st.text(max_size=30)
playlists = st.recursive(
    scalars | link,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["sources", "file", "title"]), children, max_size=3)
    ),
    max_leaves=15,
).map(json.dumps) | st.text(max_size=60)


@FAST
@given(playlists)
@example('[{"sources": 5}]')
@example("[" * 100_000)
def test_a_playlist_yields_strings_only(raw):
    assert all(isinstance(source, str) for source in playlist_sources(raw))


@FAST
@given(
    st.lists(link, max_size=4),
    playlists,
    st.text(max_size=80),
)
@example([], "", '{"files": []}')
def test_a_details_page_gives_names_or_bad_input(links, playlist, noise):
    quoted = playlist.replace("'", "&#39;")
    html = (
        "<html><body>"
        + "".join(f'<link itemprop="associatedMedia" href="{link}">' for link in links)
        + f"<play-av playlist='{quoted}'></play-av>{noise}</body></html>"
    )
    for page in (html, noise):
        try:
            found = page_file_names(page, ITEM)
        except BadInput:
            continue
        assert len(set(found)) == len(found)
        for name in found:
            check_file(RemoteFile(name=name))


@given(scalars)
def test_lengths_are_finite_seconds_or_none(value):
    seconds = parse_length(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
