"""The seed tutorial's downloader, written afresh: requests + a thread pool + random sleeps.

Faithful to the tutorial: each worker sleeps a random 1-3.5 s (unless ``--no-sleep``),
``requests.get``s the whole file into memory, and the main thread writes the results as
they complete (the futures keep every body referenced until the pool is done).

    python -m benchmarks.seed --workers 2 --out DIR URL_FILE
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import random
import sys
import time
from collections import namedtuple
from pathlib import Path
from urllib import parse

import requests

Music = namedtuple("Music", "file_name, file_content")
RANDOM_SLEEP_TIMES = [x * 0.1 for x in range(10, 40, 5)]  # 1.0, 1.5, ... 3.5 s

logging.basicConfig(
    level=logging.INFO,
    format="[%(levelname)s]\t%(asctime)s\t%(message)s",
    datefmt="%Y-%m-%d %H:%M:%S",
)
logger = logging.getLogger("seed")


def download(url: str, sleep: bool, timeout: float = 180) -> Music:
    """Sleep like the tutorial, then fetch the whole file into memory."""
    file_name = parse.unquote(Path(parse.urlparse(url).path).name)
    sleep_time = random.choice(RANDOM_SLEEP_TIMES) if sleep else 0.0
    logger.info("[download start] sleep : %s %s", sleep_time, file_name)
    time.sleep(sleep_time)
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    logger.info("[download finished] %s", file_name)
    return Music(file_name=file_name, file_content=response.content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed", description=__doc__)
    parser.add_argument("url_file", type=Path, help="one URL a line")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-sleep", action="store_true", help="no random pause")
    args = parser.parse_args(argv)
    urls = [u for u in args.url_file.read_text().split() if u]
    args.out.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as executor:
        logger.info("[main start]")
        futures = [executor.submit(download, url, not args.no_sleep) for url in urls]
        for future in concurrent.futures.as_completed(futures):
            music = future.result()
            (args.out / music.file_name).write_bytes(music.file_content)
        logger.info("[main finished]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
