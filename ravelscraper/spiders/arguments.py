"""The spider's ``-a`` arguments: which items to list, and which of their files to take.

One item (``url`` or ``item``), or many (``collection``, ``search`` or ``items``: one of
them); ``formats`` and ``glob`` choose the files of every item, ``exclude`` leaves some
out. They are checked when the crawl starts, not when the spider is made, so that a bad
argument is one ERROR line (the spider's ``fail``), not a traceback from Scrapy's spider
loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from ravelscraper.archive.metadata import DEFAULT_IDENTIFIER, BadInput, ItemLocation, Selection
from ravelscraper.archive.search import check_since, collection_query, since_query

SCRAPYD_ARGUMENTS = frozenset({"_job"})  # scrapyd adds it to every job


def argument(*, many: bool = False) -> Any:
    """A ``-a`` argument of the spider: a field of ``SpiderArguments``, None when not given.
    ``many``: it lists many items (at most one of those per crawl)."""
    return field(default=None, metadata={"argument": True, "many": many})


def scrapyd_arguments(others: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments scrapyd adds, which the spider accepts and Scrapy's ``Spider`` keeps."""
    return {name: value for name, value in others.items() if name in SCRAPYD_ARGUMENTS}


@dataclass(frozen=True)
class SpiderArguments:
    """The ``-a`` arguments: each declared once, here, as a field made by ``argument``.

    ``given`` sets the unknown and the empty ones aside; ``check`` refuses them.
    """

    url: str | None = argument()  # an item's details page
    item: str | None = argument()  # an item's identifier
    formats: str | None = argument()  # archive.org formats to take, comma-separated
    glob: str | None = argument()  # name patterns to take, comma-separated
    exclude: str | None = argument()  # name patterns to leave out, after formats and glob
    collection: str | None = argument(many=True)  # a collection's identifier
    search: str | None = argument(many=True)  # an archive.org search
    items: str | None = argument(many=True)  # a file of items, "-" for standard input
    since: str | None = argument()  # YYYY-MM-DD: a collection's or search's items changed since
    # Not arguments: what ``given`` found.
    unknown: tuple[str, ...] = ()  # names the spider does not know (scrapyd's left out)
    empty: tuple[str, ...] = ()  # known names given an empty value

    @classmethod
    def given(cls, values: Mapping[str, Any]) -> SpiderArguments:
        """The arguments as the spider got them (``-a name=value``, scrapyd's among them)."""
        known = {name: values[name] for name in ARGUMENTS if name in values}
        return cls(
            **known,
            unknown=tuple(sorted(set(values) - set(ARGUMENTS) - SCRAPYD_ARGUMENTS)),
            empty=tuple(
                name
                for name, value in known.items()
                if value is not None and not str(value).strip()
            ),
        )

    @cached_property
    def selection(self) -> Selection:
        """Which files of every item to take."""
        return Selection.from_args(self.formats, self.glob, self.exclude)

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
                "(-a url= or -a item=, -a formats=, -a glob= and -a exclude= combine with each)"
            )
        if self.since is not None:
            if self.collection is None and self.search is None:
                raise BadInput(
                    "-a since= narrows a collection or a search: give it with -a collection= "
                    "or -a search="
                )
            check_since(self.since)

    @property
    def many(self) -> bool:
        """Whether the crawl lists many items (a collection, a search, an item list)."""
        return any(getattr(self, name) is not None for name in MANY)

    def query(self) -> str | None:
        """The archive.org search to page through (None for an item list or one item),
        narrowed by ``since``; raises BadInput for a bad collection identifier or date."""
        self.check()
        if self.collection is not None:
            query = collection_query(self.collection.strip())
        elif self.search is not None:
            query = self.search.strip()
        else:
            return None
        return query if self.since is None else since_query(query, self.since)

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


ARGUMENTS = tuple(f.name for f in fields(SpiderArguments) if "argument" in f.metadata)
MANY = tuple(f.name for f in fields(SpiderArguments) if f.metadata.get("many"))
