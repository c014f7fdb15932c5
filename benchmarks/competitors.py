"""The competitors' command lines: the project (``scrapy crawl ravel``), the tutorial's seed
(``benchmarks.seed``), aria2c, with the URL lists the last two are given, and rclone's
internetarchive backend, which reads ``/metadata`` and ``/download`` as on archive.org."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from benchmarks.model import Dataset
from tests.fakearchive import FakeArchive
from tests.support.crawl import FAKE_STORAGE_HOST, crawl_env, scrapy_command


def bench_env() -> dict[str, str]:
    """The crawl's environment (loopback only), with Python's warnings silenced."""
    return crawl_env(PYTHONWARNINGS="ignore")


def project_command(url: str, store: Path, settings: dict[str, object] | None = None) -> list[str]:
    """``scrapy crawl ravel -a url=...`` with the project's defaults unless ``settings``."""
    options = {"FILES_STORE": store, "RAVEL_STORAGE_HOSTS": FAKE_STORAGE_HOST, **(settings or {})}
    return scrapy_command("-a", f"url={url}", **options)


def seed_command(url_file: Path, out: Path, workers: int, sleep: bool) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.seed", str(url_file), "--out", str(out)]
    command += ["--workers", str(workers)]
    return command if sleep else [*command, "--no-sleep"]


def aria2_command(url_file: Path, out: Path, jobs: int) -> list[str]:
    """aria2c with an input file; one written by :func:`write_urls` with ``checksums`` makes
    it verify each file's md5 once downloaded (``checksum=md5=...``), as the project does."""
    return ["aria2c", "-j", str(jobs), "-q", "-d", str(out), "-i", str(url_file)]


def rclone_command(archive: str, item: str, out: Path, jobs: int) -> list[str]:
    """``rclone copy`` of an item's audio files from the archive at ``archive`` (its origin,
    ``http://127.0.0.1:PORT``): the front end gives ``/metadata`` and ``/download``; the
    IAS3 endpoint (uploads only) points there too, so nothing leaves loopback. rclone checks
    each file's md5 against the metadata by default, and sets its mtime."""
    return [
        "rclone",
        "copy",
        "-q",
        "--config",
        "/dev/null",
        "--transfers",
        str(jobs),
        "--checkers",
        str(jobs),
        "--internetarchive-front-endpoint",
        archive,
        "--internetarchive-endpoint",
        archive,
        "--include",
        "*.mp3",
        f":internetarchive:{item}",
        str(out),
    ]


def ensure_tool(binary: str, package: str, install: bool) -> str | None:
    """The path of ``binary``, installing Debian's ``package`` when missing (if allowed)."""
    found = shutil.which(binary)
    if found or not install:
        return found
    print(f"{binary} is missing: apt-get install -y {package} ...", flush=True)
    try:
        subprocess.run(
            ["apt-get", "install", "-y", package], check=True, capture_output=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as error:
        print(
            f"could not install {package} ({error}); {binary} is left out. "
            f"Install it with `apt-get install -y {package}` (as root) and run again.",
            flush=True,
        )
    return shutil.which(binary)


def ensure_aria2(install: bool) -> str | None:
    """The aria2c path, installing Debian's ``aria2`` when missing (if allowed)."""
    return ensure_tool("aria2c", "aria2", install)


def file_urls(fake: FakeArchive, data: Dataset) -> list[str]:
    """The /download URLs of a dataset's audio files (what the seed hard-codes)."""
    item = fake.item(data.item)
    assert item is not None, data.item
    return [fake.download_url(data.item, f.name) for f in item.files if f.is_audio]


def write_urls(fake: FakeArchive, data: Dataset, work: Path, checksums: bool = False) -> Path:
    """The dataset's URLs, one a line; with ``checksums``, an aria2c input file that gives
    each URL its md5 (an indented ``checksum=md5=<hex>`` line)."""
    path = work / f"{data.item}{'.md5' if checksums else ''}.urls"
    item = fake.item(data.item)
    assert item is not None, data.item
    md5s: dict[str, str] = {}
    if checksums:  # as the fake lists them (it computed them once, in warm_up)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(fake.metadata_url(data.item), timeout=300) as response:
            md5s = {f["name"]: f.get("md5", "") for f in json.load(response)["files"]}
    lines = []
    for entry in (f for f in item.files if f.is_audio):
        lines.append(fake.download_url(data.item, entry.name))
        if checksums:
            lines.append(f"  checksum=md5={md5s[entry.name]}")
    path.write_text("\n".join(lines) + "\n")
    return path
