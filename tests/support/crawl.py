"""``scrapy crawl ravel`` as a user runs it, from the project's folder: the command with its
``-s`` settings, its environment, its result, and what it stored."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ravelscraper.pipelines.records import ITEM_RECORDS

ROOT = Path(__file__).resolve().parents[2]
# The mission's item, as the fake archive.org serves it, and the files a default crawl takes.
RAVEL = "ThePianoMusicOfMauriceRavel"
RAVEL_MP3S = [
    "01PavanePourUneInfanteDfuntePourPianoMr19.mp3",
    "02JeuxDeauPourPianoMr30.mp3",
    "03SonatinePourPianoMr40-Modr.mp3",
    "04MouvementDeMenuet.mp3",
    "05Anim.mp3",
]
LOG_LINE = re.compile(r"^\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]\t\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\t")
# The fake archive.org's storage node, where its downloads redirect.
FAKE_STORAGE_HOST = "127.0.0.2"

# Settings for crawls of many items on the fake: no pause between listing requests, small
# search pages (so a few hundred items page), no progress lines.
FAST_LISTING = {
    "RAVEL_LISTING_DELAY": 0,
    "RAVEL_SEARCH_PAGE_SIZE": 100,
    "RAVEL_PROGRESS_INTERVAL": 0,
}


@dataclass
class Crawl:
    returncode: int
    log: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith("[ERROR]")]

    def stat(self, key: str) -> int:
        found = re.search(rf"'{re.escape(key)}': (\d+)", self.log)
        return int(found.group(1)) if found else 0


def crawl_env(**extra: str) -> dict[str, str]:
    """The environment without proxies (loopback only), with the repository importable and
    its bytecode cached, as Python does by default: under a PYTHONDONTWRITEBYTECODE each
    crawl compiled the project's modules again (0.06 s of CPU per start)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if "proxy" not in k.lower() and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def scrapy_command(*args: str, **settings: object) -> list[str]:
    """``scrapy crawl ravel <args> -s NAME=VALUE...`` with exactly the given settings."""
    command = [sys.executable, "-m", "scrapy", "crawl", "ravel", *args]
    for name, value in settings.items():
        command += ["-s", f"{name}={value}"]
    return command


def crawl_command(*args: str, store: Path | str, **settings: object) -> list[str]:
    """``scrapy crawl ravel`` as a user types it, with fast settings by default."""
    options = {"DOWNLOAD_DELAY": 0, "RAVEL_RETRY_BACKOFF_BASE": 0.1, "FILES_STORE": store}
    options["RAVEL_STORAGE_HOSTS"] = FAKE_STORAGE_HOST
    options.update(settings)
    return scrapy_command(*args, **options)


def start_crawl(*args: str, store: Path | str, **settings: object) -> subprocess.Popen[str]:
    """A crawl running in the background; its output is merged into ``stdout``.

    The caller reaps it: ``communicate()``, or ``with start_crawl(...) as crawl:`` which
    closes its pipe and waits for it.
    """
    return subprocess.Popen(
        crawl_command(*args, store=store, **settings),
        cwd=ROOT,
        env=crawl_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def scrapy_crawl(
    *args: str,
    store: Path | str,
    timeout: float = 120,
    wrapper: tuple[str, ...] = (),
    **settings: object,
) -> Crawl:
    """Run a crawl to its end and return its exit status and log; ``wrapper`` is a command
    the crawl runs under (``unshare -rn``, a shell that sets the umask...)."""
    done = subprocess.run(
        [*wrapper, *crawl_command(*args, store=store, **settings)],
        cwd=ROOT,
        env=crawl_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Crawl(done.returncode, done.stdout + done.stderr)


def storage_get_paths(archive: Any) -> list[str]:
    """The paths of the file downloads the fake archive's storage node served (robots.txt
    left out)."""
    return [
        e["path"]
        for e in archive.stats()["log"]
        if e["host"] == FAKE_STORAGE_HOST
        and e["method"] == "GET"
        and not e["path"].endswith("robots.txt")
    ]


def stored_files(store: Path) -> dict[str, bytes]:
    """The mirrored files under ``store`` (not the item records under ``.ravel/``)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.relative_to(store).parts[0] != ITEM_RECORDS[0]
    }


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "300k") mounted on ``folder``/small-disk: a disk that fills
    up. Skips the test where mounting is not allowed."""
    mountpoint = folder / "small-disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
