"""Packaging for scrapyd-deploy (scrapyd-client): the egg holds the ravelscraper package only.

Without this file scrapyd-deploy writes its own, whose ``find_packages()`` also ships
``tests/`` and ``benchmarks/``. The name and version come from pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ravelscraper", "ravelscraper.*"]),
    entry_points={"scrapy": ["settings = ravelscraper.settings"]},
)
