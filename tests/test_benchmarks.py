"""The benchmarks: a tiny run writes its table (figures are not asserted); the model and the
reading of the fake archive's log, plain."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.coordination import FILES_PER_ITEM, e4_coordination
from benchmarks.harness import exit_after_last_byte, rotate, timing_from_log
from benchmarks.model import MB, Dataset, Plan, Results, Run
from benchmarks.scale import BEGIN, END, Sampled, ScalePlan, scale_part, splice, stat
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
    assert plan.datasets() == [plan.a, *plan.b, plan.d, plan.e, plan.f_base, plan.f]
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


@pytest.mark.slow
def test_a_quick_scale_run_lists_stores_and_skips_unchanged_items(tmp_path):
    """E1-E4 at tiny sizes: their part of RESULTS.md is added, what was there is kept."""
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\n## A. kept\n")
    scenarios = "E1,E2,E2R,E3,E4"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--scenarios", scenarios]
    done = subprocess.run(
        [*command, "--out", str(tmp_path)],
        cwd=ROOT,
        env=crawl_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert "## A. kept" in text and text.count(BEGIN) == 1 and END in text
    assert "### E1. Listing" in text and "### E2. Coordination" in text and "### E3. Re-run" in text
    assert "### E2R. Redis on another machine" in text and "### E4. Coordination alone" in text
    figures = json.loads((tmp_path / "scale.json").read_text())
    plan = ScalePlan.quick()
    assert [row["items"] for row in figures["E1"]["figures"]] == list(plan.e1_items)
    for row in figures["E1"]["figures"]:  # a dry run: one scrape page and one /metadata per item
        assert row["ok"] and row["files"] == row["items"] * plan.files
        assert row["requests"] == {"scrape": 1, "metadata": row["items"], "all": row["items"] + 1}
    stored = [run for run in figures["E2"]["figures"]["runs"] if run["ok"]]
    assert stored and all(run["files"] == plan.e2_total for run in stored)
    assert all(run["redis_commands_per_file"] > 0 for run in stored)
    first, unchanged, changed = figures["E3"]["figures"]
    assert first["files_downloaded"] == plan.e3_items * plan.files
    assert unchanged["requests"] == {"scrape": 1, "all": 1}  # no /metadata, no file
    assert unchanged["items_unchanged"] == plan.e3_items
    changed_items = plan.e3_items // plan.change_every
    assert changed["requests"]["metadata"] == changed_items
    assert changed["files_downloaded"] == changed_items  # only the rewritten first file
    remote = figures["E2R"]["figures"]["runs"]  # Redis on loopback, then through the proxy
    assert [run["redis"] for run in remote] == ["loopback", "proxy"]
    assert all(run["ok"] and run["files"] == plan.e2r_items * plan.e2_files for run in remote)
    e4 = figures["E4"]["figures"]
    assert e4["ok"] and e4["files_verified"] == plan.e4_files and e4["commands_per_file"] > 0


@pytest.mark.slow  # a redis-server
def test_e4_pushes_every_file_through_the_fleets_code_and_honours_the_bound():
    """E4 at a tiny size, with a bound the collection reaches: every file is listed, leased
    and verified, the run closes, and listing stops at the bound (passed by less than one
    item's files), as on a fleet node."""
    figures = e4_coordination(files=410, bound=60, leases=8)
    assert figures["ok"] and figures["closed"] == [1, 0]
    assert figures["files_verified"] == 410 and figures["items"] == 21  # the last one: 10 files
    assert 60 <= figures["pending_max"] < 60 + FILES_PER_ITEM
    # a pop and a settle per entry; entries hold 1 or 2 files while so few are pending
    assert figures["round_trips_per_file"] >= 1
    assert figures["commands_per_file"] > figures["round_trips_per_file"]  # scripts count too
    assert figures["redis_peak"] > figures["redis_keys_end_total"] > 0


def test_the_scale_part_of_results_is_replaced_and_the_rest_kept() -> None:
    old = f"# Results\n\n## A\n\n{BEGIN}\nold figures\n{END}\n\n## On paper\n"
    new = splice(old, f"{BEGIN}\nnew figures\n{END}")
    assert new == f"# Results\n\n## A\n\n{BEGIN}\nnew figures\n{END}\n\n## On paper\n"
    assert splice("# Results\n", f"{BEGIN}\nx\n{END}") == f"# Results\n\n{BEGIN}\nx\n{END}\n"
    assert scale_part(new) == f"{BEGIN}\nnew figures\n{END}\n\n## On paper\n"
    assert scale_part("# Results\n") == ""


def test_rss_quarters_and_stats_come_from_the_samples_and_the_log() -> None:
    run = Sampled(0, 4.0, 1.0, 90 * MB, [(0.5, 50), (1.0, 60), (2.5, 70), (3.9, 80)])
    assert run.quarters() == [60, 60, 70, 80]
    log = "{'ravel/files_planned': 300,\n 'ravel/files_total': 301}"
    assert stat(log, "ravel/files_planned") == 300 and stat(log, "ravel/items_unchanged") == 0
    assert ScalePlan.full().e2_total == 100_000 and ScalePlan.standard().e2_total == 10_000
    assert ScalePlan.standard().e4_files == 1_000_000
