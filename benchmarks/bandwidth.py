"""``python -m benchmarks.bandwidth``: the rate RAVEL_BANDWIDTH_LIMIT achieves.

A real crawl of a synthetic item of ``--files`` files of ``--size`` bytes each, downloaded
together (``CONCURRENT_REQUESTS_PER_DOMAIN`` = the number of files, no delay) from the fake
archive.org (no throttling of its own) under ``RAVEL_BANDWIDTH_LIMIT=--limit``. Prints the
achieved rate: the bytes of all files over the longest transfer (the crawl's own
``[download finished]`` durations, timed from a body's headers to its verification; the
files start together), and its deviation from the limit. The default is 4 MB at 1 MB/s
with 2 files.

The storage node's own timing is no measure here: on loopback the kernel's socket buffers
take megabytes, so the fake finishes writing long before the crawl has read.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from tests.fakearchive import FakeArchive
from tests.support.crawl import scrapy_crawl

ITEM = "bandwidth-bench"
FINISHED = re.compile(r"\[download finished\] (\S+) \(.*?, ([\d.]+) s\)")


def measure(limit: int, size: int, files: int) -> dict[str, float]:
    with FakeArchive() as archive, tempfile.TemporaryDirectory() as store:
        archive.configure({"items": {ITEM: {"count": files, "size": size}}})
        crawl = scrapy_crawl(
            "-a",
            f"item={ITEM}",
            store=Path(store),
            RAVEL_ORIGIN=archive.archive,
            RAVEL_BANDWIDTH_LIMIT=limit,
            CONCURRENT_REQUESTS_PER_DOMAIN=files,
            RAVEL_PROGRESS_INTERVAL=0,
            timeout=600,
        )
        if crawl.returncode != 0:
            raise SystemExit(f"the crawl failed:\n{crawl.log}")
        durations = [float(seconds) for _, seconds in FINISHED.findall(crawl.log)]
    if len(durations) != files:
        raise SystemExit(f"expected {files} finished files:\n{crawl.log}")
    total = size * files
    return {
        "bytes": total,
        "rate": total / max(durations),
        "ideal_seconds": total / limit,
        "longest_transfer": max(durations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bandwidth", description=__doc__)
    parser.add_argument("--limit", type=int, default=1_000_000, help="bytes per second")
    parser.add_argument("--size", type=int, default=2_000_000, help="bytes per file")
    parser.add_argument("--files", type=int, default=2, help="files downloaded together")
    args = parser.parse_args()
    found = measure(args.limit, args.size, args.files)
    print(
        f"{args.files} files x {args.size:,} bytes under RAVEL_BANDWIDTH_LIMIT={args.limit:,}: "
        f"ideal {found['ideal_seconds']:.2f} s, longest transfer {found['longest_transfer']:.2f} s"
    )
    rate = found["rate"]
    print(f"  achieved: {rate:,.0f} B/s ({(rate / args.limit - 1) * 100:+.1f} % of the limit)")


if __name__ == "__main__":
    main()
