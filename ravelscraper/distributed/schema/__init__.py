"""The fleet's data model in Redis: every key of a job, every Lua script, every command on them.

A job's keys all live under one prefix (``RAVEL_REDIS_PREFIX``, ``ravel`` by default), listed
with their types in :class:`keys.JobKeys`. Each change that must look atomic to other nodes is
one Lua script (standalone Redis >= 5; scripts write after ``TIME``, which Redis 5 allows with
effects replication). Each module runs its scripts and the few plain commands, so the order of
``KEYS`` and ``ARGV`` stays next to the scripts that read them, one module per user:

* :mod:`.keys`: the keys and the prefix;
* :mod:`.queue`: the queue, leases and nodes (``JobData``), for the scheduler and the leases;
* :mod:`.ledger`: the run's ledger (``RunLedger``), for the leases and jobs; it is read for
  people by :mod:`ravelscraper.distributed.watch`;
* :mod:`.startlist`: the start-URL list (``StartUrls``), for the start-URL feed and
  ``scrapy fleet push``;
* :mod:`.places`: the fleet-wide transfer cap's semaphore (``TransferPlaces``);
* :mod:`.lua`: the Lua pieces they share, and the script runner.

Nothing here imports Scrapy: the scripts are tested against a real ``redis-server`` in
``tests/test_redis_schema.py``.
"""
