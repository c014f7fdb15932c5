"""Code the tests and the benchmarks share; neither imports the other's modules.

- ``crawl``: ``scrapy crawl ravel`` as a user runs it (commands, environment, results).
- ``fleet``: fleet nodes on one Redis (``NodeGroup``) and ``scrapy fleet`` as a user runs it.
- ``catalog``: the ``fake`` and ``routes`` fixtures of a module with its own catalog.
- ``tinyarchive``: an in-process archive.org serving hand-written metadata.
- ``redisserver``: a real ``redis-server`` on loopback.
- ``stores``: moto's S3 server and pyftpdlib's FTP server on loopback.
- ``measure``: run a command, measure its wall time, CPU time and peak memory.
- ``loopback``: free ports on 127.0.0.1.

The fake archive.org, a program in its own right, is the ``tests.fakearchive`` package.
"""
