"""Offline tests of what archive.org serves: URLs, /metadata entries and file choice."""

import json
from pathlib import Path

import pytest

from ravelscraper.archive.metadata import (
    BadInput,
    ItemLocation,
    Metadata,
    RemoteFile,
    Selection,
    page_file_names,
    parse_length,
)

RAVEL = ItemLocation("https://archive.org", "ThePianoMusicOfMauriceRavel")


def entry(name, fmt="VBR MP3", source="original", **extra):
    return {"name": name, "format": fmt, "source": source, "size": "100", "md5": "ab" * 16, **extra}


def names(files):
    return sorted(f.name for f in files)


@pytest.mark.parametrize(
    ("url", "origin", "identifier"),
    [
        (
            "https://archive.org/details/ThePianoMusicOfMauriceRavel",
            "https://archive.org",
            "ThePianoMusicOfMauriceRavel",
        ),
        ("http://127.0.0.1:8080/details/gd1977-04-23/", "http://127.0.0.1:8080", "gd1977-04-23"),
        ("https://archive.org/details/x_y.z/01.mp3?q=1", "https://archive.org", "x_y.z"),
    ],
)
def test_details_url_gives_origin_and_identifier(url, origin, identifier):
    assert ItemLocation.from_details_url(url) == ItemLocation(origin, identifier)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://archive.org/details/x",
        "https://archive.org/download/x/a.mp3",
        "https://archive.org/details/",
        "https://archive.org/details/..",
        "https:///details/x",
    ],
)
def test_bad_urls_are_refused_with_a_reason(url):
    with pytest.raises(BadInput, match=r"not an? "):
        ItemLocation.from_details_url(url)


def test_urls_derive_from_the_origin_and_quote_names():
    item = ItemLocation("http://127.0.0.1:9", "id")
    assert item.metadata_url == "http://127.0.0.1:9/metadata/id"
    assert item.download_url("disc 2/Ondine #1 é%+.mp3") == (
        "http://127.0.0.1:9/download/id/disc%202/Ondine%20%231%20%C3%A9%25%2B.mp3"
    )
    assert item.name_from_url(item.download_url("disc 2/é #.mp3")) == "disc 2/é #.mp3"
    assert item.name_from_url("http://127.0.0.1:9/download/other/a.mp3") is None


def test_metadata_strings_become_types():
    verbatim = {  # one real entry, as archive.org sends it
        "name": "gd77-04-23d1t01.mp3",
        "source": "derivative",
        "creator": "Grateful Dead",
        "title": "Tuning",
        "track": "01",
        "album": "1977-04-23 - Springfield Civic Center Arena",
        "bitrate": "197",
        "length": "04:26",
        "format": "VBR MP3",
        "original": "gd77-04-23d1t01.flac",
        "mtime": "1430212164",
        "size": "6666752",
        "md5": "7818cd948ace4f4769f2e774b41d94a7",
    }
    file = RemoteFile.from_metadata(verbatim)
    assert (file.size, file.length, file.track, file.md5) == (6666752, 266.0, "01", verbatim["md5"])
    assert file.original == "gd77-04-23d1t01.flac"
    assert RemoteFile.from_metadata({"name": "x_files.xml", "format": "Metadata"}).size is None


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("351.4", 351.4), ("04:26", 266.0), ("1:02:03", 3723.0), ("", None), ("n/a", None)],
)
def test_lengths(raw, seconds):
    assert parse_length(raw) == seconds


def test_unknown_item_is_an_empty_object():
    assert Metadata.from_json("nope", b"{}") is None
    with pytest.raises(ValueError):
        Metadata.from_json("nope", b"<html>")


def test_default_choice_is_one_mp3_per_recording():
    files = [
        RemoteFile.from_metadata(e)
        for e in [
            entry("01Pavane.mp3"),
            entry("01Pavane_64kb.mp3", "64Kbps MP3", "derivative", original="01Pavane.mp3"),
            entry("01Pavane.ogg", "Ogg Vorbis", "derivative", original="01Pavane.mp3"),
            entry("02Jeux.MP3"),
            entry("03.flac", "Flac"),
            entry("03.mp3", "VBR MP3", "derivative", original="03.flac"),
            entry("03_64kb.mp3", "64Kbps MP3", "derivative", original="03.flac"),
            entry("secret.mp3", private="true"),
        ]
    ]
    assert names(Selection().choose(files)) == ["01Pavane.mp3", "02Jeux.MP3", "03.mp3"]


def test_vbr_wins_over_another_mp3_of_the_same_recording():
    files = [
        RemoteFile.from_metadata(entry("a.mp3", "128Kbps MP3")),
        RemoteFile.from_metadata(entry("a_vbr.mp3", "VBR MP3", "derivative", original="a.mp3")),
    ]
    assert names(Selection().choose(files)) == ["a_vbr.mp3"]


def test_formats_and_globs_choose_other_files():
    files = [
        RemoteFile.from_metadata(e)
        for e in [
            entry("a.flac", "Flac"),
            entry("b.FLAC", "Flac"),
            entry("a.ogg", "Ogg Vorbis"),
            entry("a.mp3"),
        ]
    ]
    assert names(Selection.from_args("flac, ogg vorbis", None).choose(files)) == [
        "a.flac",
        "a.ogg",
        "b.FLAC",
    ]
    assert names(Selection.from_args(None, "*.flac").choose(files)) == ["a.flac", "b.FLAC"]
    assert names(Selection.from_args("Flac,Ogg Vorbis", "a.*").choose(files)) == ["a.flac", "a.ogg"]
    assert Selection.from_args("Flac", "*.x").describe() == "formats Flac and names *.x"


def test_page_links_come_from_microdata_and_the_player():
    playlist = json.dumps(
        [
            {
                "title": "Jeux",
                "sources": [{"file": f"/download/{RAVEL.identifier}/02%20Jeux.mp3", "type": "mp3"}],
            }
        ]
    )
    html = f"""<html><body>
    <div itemprop="hasPart" itemscope itemtype="http://schema.org/AudioObject">
      <meta itemprop="name" content="Pavane">
      <link itemprop="associatedMedia" href="https://archive.org/download/{RAVEL.identifier}/01Pavane.mp3">
    </div>
    <play-av playlist='{playlist}'></play-av>
    <a href="/download/{RAVEL.identifier}/other.zip">zip</a>
    </body></html>"""
    assert page_file_names(html, RAVEL) == ["01Pavane.mp3", "02 Jeux.mp3"]
    assert page_file_names("<play-av playlist='not json'></play-av>", RAVEL) == []


def test_an_item_on_an_origin():
    assert ItemLocation.on("http://127.0.0.1:8/", "a-b") == ItemLocation(
        "http://127.0.0.1:8", "a-b"
    )
    with pytest.raises(BadInput, match="identifier"):
        ItemLocation.on("https://archive.org", "../etc")
    with pytest.raises(BadInput, match="http"):
        ItemLocation.on("http://127.0.0.1:port", "a")


def test_the_spider_accepts_scrapyd_job_argument():
    from ravelscraper.spiders.ravel import RavelSpider

    spider = RavelSpider(item="x", _job="0f1e2d")
    assert spider._job == "0f1e2d" and spider.item == "x"


# --- real-shaped /metadata answers, saved in tests/fixtures (issue 9) ----------------------

FIXTURES = Path(__file__).parent / "fixtures"


def saved(identifier: str) -> Metadata:
    body = (FIXTURES / f"metadata-{identifier}.json").read_bytes()
    metadata = Metadata.from_json(identifier, body)
    assert metadata is not None and not metadata.warnings
    return metadata


def test_an_audio_item_with_vbr_and_64kb_derivatives_takes_the_vbr_mp3s():
    for identifier, expected in [
        ("flac-vbr-64kb", ["ravel01.mp3", "ravel02.mp3", "ravel03.mp3"]),
        (
            "ThePianoMusicOfMauriceRavel",
            [
                "01PavanePourUneInfanteDfuntePourPianoMr19.mp3",
                "02JeuxDeauPourPianoMr30.mp3",
                "03SonatinePourPianoMr40-Modr.mp3",
                "04MouvementDeMenuet.mp3",
                "05Anim.mp3",
            ],
        ),
    ]:
        metadata = saved(identifier)
        chosen = Selection().choose(metadata.files)
        assert names(chosen) == expected
        assert all(f.md5 and f.size for f in chosen)
        assert Selection().restricted(metadata.files) == []
        assert not metadata.collection


def test_a_78rpm_item_takes_the_mp3_derived_from_its_wave_original():
    metadata = saved("rpm78-like")
    chosen = Selection().choose(metadata.files)
    assert [(f.format, f.original.endswith(".wav")) for f in chosen] == [("VBR MP3", True)]
    flac = Selection.from_args("Flac", None).choose(metadata.files)
    wave = Selection.from_args("WAVE", None).choose(metadata.files)
    assert len(flac) == len(wave) == 1 and wave[0].length == 158.01
    assert chosen[0].creator == "Orchestre Fictif" and chosen[0].length == 158.04


def test_a_samples_only_item_has_no_public_recording_and_public_samples():
    metadata = saved("samples-only-cd")
    assert Selection().choose(metadata.files) == []
    restricted = Selection().restricted(metadata.files)
    assert len(restricted) == 4 and all(f.format == "VBR MP3" and f.private for f in restricted)
    samples = Selection.from_args("MP3 Sample", None).choose(metadata.files)
    assert len(samples) == 4 and all(f.name.endswith("_sample.mp3") for f in samples)
    assert all(f.name.startswith("disc1/") and ";" in f.name for f in samples)
    assert Selection.from_args("Flac", None).choose(metadata.files) == []
    assert len(Selection.from_args("Flac", None).restricted(metadata.files)) == 4


def test_a_mixed_item_takes_the_public_recordings():
    metadata = saved("mixed-access")
    chosen = Selection().choose(metadata.files)
    assert len(chosen) == 2 and not any(f.private or f.is_sample for f in chosen)
    assert len(Selection().restricted(metadata.files)) == 2


def test_a_collection_is_recognised():
    metadata = saved("ravel-collection")
    assert metadata.collection and metadata.mediatype == "collection"


def test_files_archive_org_regenerates_are_flagged():
    metadata = saved("flac-vbr-64kb")
    by_name = {f.name: f for f in metadata.files}
    files_xml = by_name["flac-vbr-64kb_files.xml"]
    assert files_xml.regenerated and files_xml.md5 is None and files_xml.size is None
    assert files_xml.sha1 is None and not files_xml.error
    assert by_name["flac-vbr-64kb_meta.xml"].regenerated and by_name["flac-vbr-64kb_meta.xml"].md5
    assert not by_name["ravel01.mp3"].regenerated


# --- malformed values: skipped, ignored or flagged, never the whole item ------------------


def test_a_malformed_size_is_ignored_and_the_md5_kept():
    file = RemoteFile.from_metadata(entry("a.mp3", size="²"))
    assert file.size is None and file.md5 == "ab" * 16 and not file.error
    assert file.notes == ("'a.mp3': ignored its size '²' (not a number)",)


def test_a_malformed_md5_fails_that_file():
    file = RemoteFile.from_metadata(entry("a.mp3", md5="not-an-md5"))
    assert file.md5 is None and "malformed md5" in file.error


def test_the_sha1_is_read_and_a_malformed_one_fails_that_file():
    file = RemoteFile.from_metadata(entry("a.mp3", sha1="AB" * 20))
    assert file.sha1 == "ab" * 20 and file.md5 == "ab" * 16 and not file.error
    for bad in ("ab" * 16, "zz" * 20, 5, ["ab" * 20]):
        file = RemoteFile.from_metadata(entry("a.mp3", sha1=bad))
        assert file.sha1 is None and "malformed sha1" in file.error
    assert RemoteFile.from_metadata(entry("a.mp3", sha1="")).sha1 is None


def test_a_name_listed_twice_with_different_sha1s_fails_with_both():
    first, other = entry("a.mp3", sha1="ab" * 20), entry("a.mp3", sha1="cd" * 20)
    clash = Metadata.from_json("x", json.dumps({"files": [first, other]}))
    assert clash is not None and "ab" * 20 in clash.files[0].error
    assert "cd" * 20 in clash.files[0].error


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (None, "not an object"),
        ({"format": "VBR MP3"}, "has no 'name'"),
        ({"name": 5}, "has no 'name'"),
        ({"name": "\ud800.mp3"}, "not valid Unicode"),
    ],
)
def test_an_entry_that_must_be_skipped_raises_bad_input(bad, reason):
    with pytest.raises(BadInput, match=reason):
        RemoteFile.from_metadata(bad)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"files": {}, "metadata": {}}', '"files" is dict'),
        (b'{"files": [], "metadata": "oops"}', '"metadata" is str'),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b"<html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe\x00", "not JSON"),
    ],
)
def test_metadata_that_cant_be_read_raises_bad_input(body, reason):
    with pytest.raises(BadInput, match=reason):
        Metadata.from_json("x", body)


def test_a_name_listed_twice_is_one_file_or_fails_with_both_md5s():
    same = Metadata.from_json("x", json.dumps({"files": [entry("a.mp3"), entry("a.mp3")]}))
    assert same is not None and len(same.files) == 1 and not same.files[0].error
    other = entry("a.mp3", md5="cd" * 16)
    clash = Metadata.from_json("x", json.dumps({"files": [entry("a.mp3"), other]}))
    assert clash is not None and len(clash.files) == 1
    assert "ab" * 16 in clash.files[0].error and "cd" * 16 in clash.files[0].error


def test_samples_are_never_in_the_default_selection():
    files = [
        RemoteFile.from_metadata(entry("t.flac", "Flac", private="true")),
        RemoteFile.from_metadata(
            entry("t_sample.mp3", "MP3 Sample", "derivative", original="t.flac")
        ),
    ]
    assert Selection().choose(files) == []
    assert names(Selection.from_args("mp3 sample", None).choose(files)) == ["t_sample.mp3"]


@pytest.mark.parametrize("raw", ["-5", "nan", "inf", "1e400", [1], True])
def test_lengths_that_are_not_seconds_are_none(raw):
    assert parse_length(raw) is None


def test_a_size_too_large_for_a_signed_64_bit_counter_is_ignored():
    """19 digits pass the pattern; beyond 2**63 - 1 Redis's counters would fail in a fleet."""
    file = RemoteFile.from_metadata({"name": "a.mp3", "size": "9999999999999999999"})
    assert file.size is None
    assert RemoteFile.from_metadata({"name": "a.mp3", "size": str(2**63 - 1)}).size == 2**63 - 1
