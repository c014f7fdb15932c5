"""``python -m benchmarks``: scenarios A-F and the start-up profile, then RESULTS.md and plots.

    python -m benchmarks [--rounds 3] [--quick] [--scenarios A,B,C,D,E,F,S] [--out DIR]
    python -m benchmarks --scenarios E1,E2,E2R,E3,E4 [--full | --quick]

E1-E4 (the scale scenarios of issues 10 and 19, ``benchmarks/scale.py``; E2R: E2 with Redis
through a delay proxy; E4: coordination alone, ``benchmarks/coordination.py``) replace only
their own part of RESULTS.md (and write scale.json); a run of A-F keeps that part.

Competitors run in the same invocation, alternating (the order rotates every round), and
the report gives medians and ratios. Every server (the fake archive.org, nginx for B, E and
F when installed, Redis) is started here on loopback and stopped at the end; every download
lands in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.competitors import ensure_aria2, ensure_tool
from benchmarks.model import Plan, Results
from benchmarks.nginx import NginxArchive, nginx_binary
from benchmarks.report import write_report
from benchmarks.scale import SCALE_KEYS, ScalePlan, run_scale, scale_part, section, splice
from benchmarks.scenarios import (
    scenario_a,
    scenario_b,
    scenario_c,
    scenario_d,
    scenario_e,
    scenario_f,
    server_ceiling,
    startup_profile,
)
from tests.fakearchive import FakeArchive

HERE = Path(__file__).resolve().parent


def warm_up(fake: FakeArchive, plan: Plan, chosen: set[str]) -> None:
    """Let the fake compute (and cache) every checksum before anything is timed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for data in plan.datasets(chosen):
        with opener.open(fake.metadata_url(data.item), timeout=300) as response:
            response.read()


def environment(tools: dict[str, str | None]) -> dict[str, str]:
    import scrapy

    env = {
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}",
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "python": platform.python_version(),
        "scrapy": scrapy.__version__,
    }
    for name, path in tools.items():
        if path:
            flag = "-v" if name == "nginx" else "--version"
            done = subprocess.run([path, flag], capture_output=True, text=True)
            version = (done.stdout or done.stderr).strip()
            env[name] = version.splitlines()[0] if version else "?"
    return env


@contextlib.contextmanager
def fast_server(
    fake: FakeArchive, plan: Plan, chosen: set[str], nginx: str | None, results: Results
) -> Iterator[FakeArchive | NginxArchive]:
    """nginx serving B, E and F's datasets if it is installed and chosen, else the fake."""
    keys = chosen & {"B", "E", "F"}
    if not keys or not nginx:
        if keys:
            results.notes["server"] = "nginx not available: B, E and F ran on the fake"
        yield fake
        return
    with NginxArchive(fake, plan.datasets(keys), nginx) as server:
        yield server


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
        default="A,B,C,D,E,F,S",
        help="comma-separated subset of A,B,C,D,E,F,S,E1,E2,E2R,E3,E4 (S: start-up profile; "
        "E1-E4: the scale scenarios, run on their own)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="E2 at the issue's full size (100,000 files) instead of 10,000",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="with E1-E4: rewrite their part of RESULTS.md from scale.json, run nothing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="where RESULTS.md and the plots go (default: benchmarks/)",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get install aria2, rclone, nginx"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    chosen = {s.strip().upper() for s in args.scenarios.split(",") if s.strip()}
    unknown = chosen - {"A", "B", "C", "D", "E", "F", "S"} - SCALE_KEYS
    if unknown:
        raise SystemExit(f"ERROR: unknown scenarios {sorted(unknown)}")
    if chosen & SCALE_KEYS:
        if chosen - SCALE_KEYS:
            raise SystemExit("ERROR: run E1-E4 on their own (--scenarios E1,E2,E2R,E3,E4)")
        scale_main(args, chosen)
        return
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    plan = Plan.quick(rounds) if args.quick else Plan.full(rounds)
    install = not (args.quick or args.no_install)
    aria2 = rclone = nginx = None
    if chosen & {"B", "E", "F"}:
        aria2 = ensure_aria2(install=install)
        nginx = nginx_binary() or (ensure_tool("nginx", "nginx", install) and nginx_binary())
    if chosen & {"A", "B", "E", "F"}:
        rclone = ensure_tool("rclone", "rclone", install)
    tools = {"aria2c": aria2, "rclone": rclone, "nginx": nginx}
    results = Results(plan, environment=environment(tools))
    args.out.mkdir(parents=True, exist_ok=True)
    items = {d.item: {"count": d.count, "size": d.size} for d in plan.datasets(chosen)}
    begun = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="ravel-bench-") as tmp,
        FakeArchive({"items": items}, startup_timeout=30) as fake,
    ):
        work = Path(tmp)
        warm_up(fake, plan, chosen)
        with fast_server(fake, plan, chosen, nginx, results) as fast:
            results.environment["server for B, E, F"] = (
                "nginx" if isinstance(fast, NginxArchive) else "the fake"
            )
            steps: list[tuple[str, Callable[..., None], Any, tuple[Any, ...]]] = [
                ("A", scenario_a, fake, (rclone,)),
                ("B", server_ceiling, fast, ()),
                ("B", scenario_b, fast, (aria2, rclone)),
                ("C", scenario_c, fake, ()),
                ("D", scenario_d, fake, ()),
                ("E", scenario_e, fast, (aria2, rclone)),
                ("F", scenario_f, fast, (aria2, rclone)),
                ("S", startup_profile, fake, ()),
            ]
            for key, step, server, more in steps:
                if key in chosen:
                    print(f"[{key}] {(step.__doc__ or '').splitlines()[0]}", flush=True)
                    step(server, results, work, *more)
    results.environment["duration"] = f"{time.monotonic() - begun:.0f} s"
    results.environment["load after"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    previous = args.out / "RESULTS.md"
    kept = scale_part(previous.read_text(encoding="utf-8")) if previous.exists() else ""
    path = write_report(results, args.out, chosen)
    if kept:
        path.write_text(path.read_text(encoding="utf-8").rstrip() + "\n\n" + kept, "utf-8")
    (args.out / "results.json").write_text(json.dumps(results.to_json(), indent=1))
    print(f"wrote {path}", flush=True)


STANDARD = (
    "standard sizes: E1/E3 up to 10,000 items, E2 10,000 files (--full: 100,000), "
    "E2R 2,000 files, E4 1,000,000 files"
)


def scale_main(args: argparse.Namespace, chosen: set[str]) -> None:
    """E1-E4: their part of RESULTS.md replaced (the rest kept), their figures in scale.json."""
    if args.quick:
        plan, label = ScalePlan.quick(), "--quick"
    elif args.full:
        plan, label = ScalePlan.full(), "--full"
    else:
        plan, label = ScalePlan.standard(), STANDARD
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if not args.report_only:
        with tempfile.TemporaryDirectory(prefix="ravel-scale-") as tmp:
            results = run_scale(chosen, plan, Path(tmp), label)
    saved = args.out / "scale.json"
    if saved.exists():  # the scenarios not run this time keep their figures
        results = {**json.loads(saved.read_text()), **results}
    path = args.out / "RESULTS.md"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    path.write_text(splice(old, section(results)), encoding="utf-8")
    saved.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}", flush=True)
