"""One competitor's run, measured and checked: its files on disk, its requests in the fake
archive's log (start-up, transfer span, exit after the last byte), recorded as a ``Run``."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.competitors import bench_env
from benchmarks.model import MB, Dataset, Results, Run
from tests.fakearchive import FakeArchive
from tests.support.crawl import ROOT
from tests.support.measure import run_measured

Command = Callable[[Path], list[str]]  # the command line, given the folder to download into


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


def rotate(items: Sequence[Any], n: int) -> list[Any]:
    n %= len(items)
    return [*items[n:], *items[:n]]


def alternate(
    fake: FakeArchive,
    results: Results,
    work: Path,
    scenario: str,
    data: Dataset,
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
        env=bench_env(),
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
        print(f"  !! {scenario} {tool} failed: {note}\n{text[-2000:]}", flush=True)
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
