"""The benchmarks: a tiny run writes its table (figures are not asserted); the model and the
reading of the fake archive's log, plain."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.harness import exit_after_last_byte, rotate, timing_from_log
from benchmarks.model import MB, Dataset, Plan, Results, Run
from tests.support.crawl import ROOT, crawl_env


@pytest.mark.slow
def test_a_quick_benchmark_writes_its_table(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--scenarios",
            "A,E",
            "--no-install",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=crawl_env(MPLBACKEND="Agg"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "## A. Bandwidth-bound" in results
    assert "| project |" in results
    assert (tmp_path / "bench_a.png").is_file()
    assert "## E. Multi-GB" in results and "CPU s/GB" in results
    assert (tmp_path / "bench_e.png").is_file()


def test_a_plan_lists_each_dataset_of_the_chosen_scenarios_once() -> None:
    plan = Plan.quick(rounds=1)
    assert plan.datasets({"A", "C"}) == [plan.a]  # C runs on A's files
    assert plan.datasets({"E"}) == [plan.e]
    assert plan.datasets() == [plan.a, *plan.b, plan.d, plan.e]
    assert (
        Dataset("x", 40, 8 * MB).label == "40 x 8 MB" and Dataset("y", 4, 64_000).total == 256_000
    )


def test_timings_come_from_the_fake_archives_request_log() -> None:
    log = [
        {"method": "GET", "path": "/details/x", "start": 10.5, "end": 10.6},
        {"method": "GET", "path": "/download/x/a.mp3", "start": 11.0, "end": 12.0},
        {"method": "GET", "path": "/download/x/b.mp3", "start": 11.5, "end": 13.0},
        {"method": "HEAD", "path": "/download/x/c.mp3", "start": 14.0, "end": 14.5},
    ]
    assert timing_from_log(log, started=10.0) == (0.5, 2.0)  # start-up, then the file span
    assert timing_from_log([], started=10.0) == (None, None)
    assert exit_after_last_byte(log, exited=13.25) == 0.25
    assert rotate(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_results_are_saved_without_their_plan_or_timelines() -> None:
    results = Results(Plan.quick(rounds=1), notes={"B": "aria2c not available: left out"})
    results.runs.append(Run("A", "4 x 64 kB", "project", 0, 1.5, 0.8, 80 * MB, 0.4, 1.0, True))
    saved = results.to_json()
    assert saved["runs"][0]["tool"] == "project" and saved["notes"] == results.notes
    assert set(saved) == {"environment", "runs", "notes", "server_ceiling_mb_s", "startup_profile"}
