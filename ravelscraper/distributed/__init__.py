"""Distributed crawling: many nodes, one Redis, each file downloaded once, nothing lost.

Activated by ``REDIS_URL`` through :mod:`~ravelscraper.distributed.addon`; without it no module
here that needs redis is imported. Modules: ``connection`` (REDIS_URL, one-line errors),
``keys`` (the job's Redis keys), ``serializer`` (checked JSON entries), ``queue`` (leases),
``scheduler`` (scrapy-redis scheduler for a fleet), ``entries`` (files as queue entries),
``extension`` (heartbeat, reclaim, start URLs, fleet-wide finish), ``fleetcap`` (fleet-wide
transfer cap), ``__main__`` (``python -m ravelscraper.distributed status|reset``).
"""
