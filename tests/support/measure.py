"""Run a command and measure it: wall time, CPU time and peak RSS of its process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

POLL = 0.02  # seconds between RSS samples


@dataclass
class Measured:
    """One finished command."""

    returncode: int
    started: float  # time.time() just before the process was spawned
    wall: float  # seconds from spawn to exit
    cpu: float  # user + system seconds of the process and its reaped children
    peak_rss: int  # bytes: the polled peak of the tree (VmHWM of each process, summed)
    timed_out: bool = False


def high_water_rss(pid: int) -> int:
    """The kernel's high-water RSS of a process since its exec (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _tree_peak(proc: psutil.Process, hwm: dict[int, int]) -> int:
    """Record each process's high-water RSS in ``hwm``; return the tree's current RSS."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
        hwm[p.pid] = max(hwm.get(p.pid, 0), high_water_rss(p.pid))
    return total


def run_measured(
    command: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> Measured:
    """Spawn ``command`` (output to ``log``), poll its tree's RSS, reap it with ``wait4``."""
    with open(log, "wb") as out:
        started = time.time()
        t0 = time.monotonic()
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    watched = psutil.Process(process.pid)
    peak = 0
    hwm: dict[int, int] = {}
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_peak(watched, hwm))
        if time.monotonic() - t0 > timeout and not timed_out:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(POLL)
    wall = time.monotonic() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(ProcessLookupError):  # any straggler of its session
        os.killpg(process.pid, signal.SIGKILL)
    return Measured(
        returncode=process.returncode,
        started=started,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        # Not ru_maxrss: after a fork it counts the parent's pages copied before exec.
        peak_rss=max(peak, sum(hwm.values())),
        timed_out=timed_out,
    )


def run_many(
    commands: Sequence[Sequence[str]],
    *,
    logs: Sequence[Path],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> list[Measured]:
    """Run several commands at once (one per node) and measure each."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        futures = [
            pool.submit(run_measured, c, log=lg, cwd=cwd, env=env, timeout=timeout)
            for c, lg in zip(commands, logs, strict=True)
        ]
        return [f.result() for f in futures]
