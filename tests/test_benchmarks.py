"""Smoke test of the benchmarks: a tiny run writes its table (figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
