"""Benchmarks of ravelscraper against the seed's thread pool, aria2c and the ideal.

Run ``python -m benchmarks`` from the repository root; it writes ``benchmarks/RESULTS.md``
and PNG plots next to it. Everything runs on loopback against the fake archive.org.

``model`` (plan and results) <- ``competitors`` (command lines) <- ``harness`` (one measured
run) <- ``scenarios`` (A-E, S) <- ``cli`` (``python -m benchmarks``); ``report`` (RESULTS.md,
plots) reads the model. The fake archive.org, Redis and the measuring come from
``tests.fakearchive`` and ``tests.support``; ``seed`` is the tutorial's downloader.
"""
