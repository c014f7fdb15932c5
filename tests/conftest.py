from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.fakearchive import FakeArchive
from tests.fakearchive.server import KNOBS

NO_KNOBS = dict.fromkeys(KNOBS)  # every knob back to its default

# CI runs the property tests on a fixed seed: an example found by chance is a finding to fix
# where it was found, never a red build on an unrelated change. Locally, seeds vary.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
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
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def crawl_command(*args: str, store: Path | str, **settings: object) -> list[str]:
    """``scrapy crawl ravel`` as a user types it, with fast settings by default."""
    options = {"DOWNLOAD_DELAY": 0, "RAVEL_RETRY_BACKOFF_BASE": 0.1, "FILES_STORE": store}
    options["RAVEL_STORAGE_HOSTS"] = "127.0.0.2"  # the fake archive.org's storage node
    options.update(settings)
    command = [sys.executable, "-m", "scrapy", "crawl", "ravel", *args]
    for name, value in options.items():
        command += ["-s", f"{name}={value}"]
    return command


def start_crawl(*args: str, store: Path | str, **settings: object) -> subprocess.Popen:
    """A crawl running in the background; its output is merged into ``stdout``."""
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


@pytest.fixture(scope="session")
def fake_archive():
    with FakeArchive() as server:
        yield server


@pytest.fixture
def archive(fake_archive):
    """The session's fake archive.org, with no faults and empty counters."""
    fake_archive.configure(NO_KNOBS)
    fake_archive.reset()
    return fake_archive


def stored_files(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
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
