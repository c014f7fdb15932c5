"""The spider's ``-a`` arguments: which items to list, and which of their files to take.

One item (``url`` or ``item``), or many (``collection``, ``search`` or ``items``: one of
them); ``formats`` and ``glob`` choose the files of every item. They are checked when the
crawl starts, not when the spider is made, so that a bad argument is one ERROR line (the
spider's ``fail``), not a traceback from Scrapy's spider loader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ravelscraper.archive.metadata import DEFAULT_IDENTIFIER, BadInput, ItemLocation, Selection
from ravelscraper.archive.search import collection_query

ARGUMENTS = ("url", "item", "formats", "glob", "collection", "search", "items")
MANY = ("collection", "search", "items")  # the arguments that list many items
SCRAPYD_ARGUMENTS = frozenset({"_job"})  # scrapyd adds it to every job


def scrapyd_arguments(others: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments scrapyd adds, which the spider accepts and Scrapy's ``Spider`` keeps."""
    return {name: value for name, value in others.items() if name in SCRAPYD_ARGUMENTS}


@dataclass(frozen=True)
class SpiderArguments:
    """The ``-a`` arguments as given, with the unknown and the empty ones set aside."""

    url: str | None = None
    item: str | None = None
    selection: Selection = field(default_factory=Selection)
    unknown: tuple[str, ...] = ()  # names the spider does not know (scrapyd's left out)
    empty: tuple[str, ...] = ()  # known names given an empty value
    collection: str | None = None
    search: str | None = None
    items: str | None = None  # the path of an item list, "-" for standard input

    @classmethod
    def given(
        cls,
        url: str | None,
        item: str | None,
        formats: str | None,
        glob: str | None,
        others: Iterable[str] = (),
        collection: str | None = None,
        search: str | None = None,
        items: str | None = None,
    ) -> SpiderArguments:
        values = (url, item, formats, glob, collection, search, items)
        return cls(
            url=url,
            item=item,
            selection=Selection.from_args(formats, glob),
            unknown=tuple(sorted(set(others) - SCRAPYD_ARGUMENTS)),
            empty=tuple(
                name
                for name, value in zip(ARGUMENTS, values, strict=True)
                if value is not None and not value.strip()
            ),
            collection=collection,
            search=search,
            items=items,
        )

    def check(self) -> None:
        """Raises BadInput for an unknown, an empty argument, or arguments that conflict."""
        known = ", ".join(f"{name}=" for name in ARGUMENTS)
        if self.unknown:
            unknown = ", ".join(f"-a {name}=" for name in self.unknown)
            raise BadInput(f"unknown argument {unknown}; the known arguments are -a {known}")
        if self.empty:
            empty = ", ".join(f"-a {name}=" for name in self.empty)
            raise BadInput(f"empty argument {empty}: give it a value or leave it out")
        given = [name for name in MANY if getattr(self, name) is not None]
        if len(given) > 1:
            names = " and ".join(f"-a {name}=" for name in given)
            raise BadInput(
                f"{names} can't be combined: give one of -a collection=, -a search=, -a items= "
                "(-a url= or -a item=, -a formats= and -a glob= combine with each)"
            )

    @property
    def many(self) -> bool:
        """Whether the crawl lists many items (a collection, a search, an item list)."""
        return any(getattr(self, name) is not None for name in MANY)

    def query(self) -> str | None:
        """The archive.org search to page through (None for an item list or one item);
        raises BadInput for a bad collection identifier."""
        self.check()
        if self.collection is not None:
            return collection_query(self.collection.strip())
        return self.search.strip() if self.search is not None else None

    @property
    def one_item(self) -> bool:
        """Whether ``url`` or ``item`` names an item (besides a collection, say)."""
        return self.url is not None or self.item is not None

    def location(self, origin: str) -> ItemLocation:
        """The item to list (``item`` is looked up on ``origin``); raises BadInput."""
        self.check()
        if self.url and self.item:
            raise BadInput("give either -a url=<details page> or -a item=<identifier>, not both")
        if self.url:
            return ItemLocation.from_details_url(self.url)
        return ItemLocation.on(origin, self.item or DEFAULT_IDENTIFIER)
