"""Benchmarks of ravelscraper against the seed's thread pool, aria2c and the ideal.

Run ``python -m benchmarks`` from the repository root; it writes ``benchmarks/RESULTS.md``
and PNG plots next to it. Everything runs on loopback against the fake archive.org.
"""
