"""Distributed crawling: many nodes, one Redis, each file downloaded once, nothing lost.

Activated by ``REDIS_URL`` through :mod:`~ravelscraper.distributed.addon`; without it no module
here that needs redis is imported. Modules: ``connection`` (REDIS_URL, one-line errors),
``keys`` (the job's Redis keys), ``serializer`` (checked JSON entries), ``queue`` (leases and
each run's ledger, in Lua), ``scheduler`` (scrapy-redis scheduler for a fleet: what became of
each lease), ``entries`` (files as queue entries), ``extension`` (heartbeat, reclaim, start
URLs, closing the run), ``fleetcap`` (fleet-wide transfer cap). The ``scrapy fleet
status|push|reset`` command is :mod:`ravelscraper.commands.fleet`.
"""
