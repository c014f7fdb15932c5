"""Distributed crawling: many nodes, one Redis, each file downloaded once, nothing lost.

Activated by ``REDIS_URL`` through :mod:`~ravelscraper.distributed.addon`; without it no module
here that needs redis is imported. Modules: ``addon`` (turns a crawl into a node),
``connection`` (REDIS_URL, one-line errors), ``schema`` (every Redis key and Lua script of a
job: ``keys``, ``queue``, ``ledger``, ``startlist``, ``places``, ``lua``), ``origins`` (the
hosts an entry may name), ``serializer`` (checked JSON entries), ``queue`` (scrapy-redis's
queue, with leases), ``scheduler`` (the node's Scrapy scheduler), ``leases`` (the entries a node
holds, settled in Redis), ``jobs`` (a job's files and failure in the ledger), ``entries`` (files
as queue entries), ``fleet`` (what a node's components share, and its one policy when Redis
fails), ``extension`` (heartbeat, reclaim, closing the run), ``starturls`` (start URLs from
Redis), ``fleetspider`` (what the fleet needs of its spider), ``fleetcap`` (fleet-wide transfer
cap), ``watch`` (the one reader of a job for people: ``fleet status``, and ``fleet serve``'s
page, ``/status.json`` and ``/metrics``), ``web`` (the server of ``fleet serve``), ``page`` (its
page). The ``scrapy fleet status|push|reset|serve`` command is
:mod:`ravelscraper.commands.fleet`.
"""
