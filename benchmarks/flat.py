"""Is a single node flat in memory? A dry run (``-s RAVEL_DRY_RUN=1``, no Redis) of one
generated collection, its RSS sampled against the items listed so far (the ``[item]`` lines of
its log): the RSS after the first 1,000 items, at the end, and the growth in between, per item.

    python -m benchmarks.flat --items 20000 [--files 3] [--work /tmp/flat]

Issue 19's target: at most 20 MB of growth after the first 1,000 items of 50,000.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.model import MB
from benchmarks.scale import crawl, run_nodes, stat
from tests.fakearchive import FakeArchive

WARM = 1000  # items listed before the baseline is taken


class ItemCounter:
    """Counts the ``[item]`` lines of a growing log, reading only what was appended."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0
        self.items = 0
        self.rest = b""

    def __call__(self) -> int:
        if self.log.exists():
            with self.log.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            self.offset += len(chunk)
            lines = (self.rest + chunk).split(b"\n")
            self.rest = lines.pop()
            self.items += sum(1 for line in lines if b"[item] " in line)
        return self.items


def measure(items: int, files: int, work: Path, concurrency: int = 8) -> dict[str, object]:
    name = f"flat-{items}"
    with FakeArchive({}, startup_timeout=30) as fake:
        fake.configure(collections={name: {"items": items, "files": files, "size": 1024}})
        store = work / name
        store.mkdir(parents=True, exist_ok=True)
        log = work / f"{name}.log"
        counter = ItemCounter(log)
        progress: list[int] = []  # items listed at each RSS sample, in step with the samples
        command = crawl(
            fake, name, store, RAVEL_DRY_RUN=1, CONCURRENT_REQUESTS_PER_DOMAIN=concurrency
        )
        (node,) = run_nodes([command], [log], timeout=3600, tick=lambda: progress.append(counter()))
    samples = [rss for _, rss in node.samples]
    # run_nodes samples then ticks: sample i was taken with about progress[i] items listed.
    paired = list(zip(progress, samples, strict=False))
    warm = next((rss for done, rss in paired if done >= WARM and rss), 0)
    tail = [rss for done, rss in paired if rss]
    listed = stat(node.text, "ravel/items_listed")
    # The RSS as a quarter, half, three quarters and all of the items were listed: the
    # growth's shape (a plateau, or a slope that goes on with the items).
    quarters = [
        next((rss for done, rss in paired if done >= items * q // 4 and rss), 0) for q in (1, 2, 3)
    ]
    end = tail[-1] if tail else 0
    growth = max(0, node.peak_rss - warm)
    return {
        "items": items,
        "files_per_item": files,
        "items_listed": listed,
        "rc": node.returncode,
        "wall_s": round(node.wall, 1),
        "rss_after_1000_items_mb": round(warm / MB, 1),
        "rss_last_sample_mb": round(end / MB, 1),
        "peak_rss_mb": round(node.peak_rss / MB, 1),
        "growth_after_1000_items_mb": round(growth / MB, 1),
        "growth_per_item_b": round(growth / max(1, listed - WARM)),
        "rss_at_25_50_75_100_pct_of_items_mb": [round(rss / MB, 1) for rss in [*quarters, end]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ravel-flat-") as tmp:
        print(json.dumps(measure(args.items, args.files, args.work or Path(tmp)), indent=1))


if __name__ == "__main__":
    main()
