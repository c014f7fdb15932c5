"""The benchmarks' data: what to run (``Plan`` of ``Dataset``s) and what was measured
(``Run``s gathered in ``Results``, saved as results.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MB = 1_000_000


@dataclass(frozen=True)
class Dataset:
    """A synthetic item of the fake archive: ``count`` files of ``size`` bytes."""

    item: str
    count: int
    size: int

    @property
    def total(self) -> int:
        return self.count * self.size

    @property
    def label(self) -> str:
        return f"{self.count} x {_size_label(self.size)}"


def _size_label(size: int) -> str:
    return f"{size // MB} MB" if size >= MB else f"{size // 1000} kB"


@dataclass(frozen=True)
class Plan:
    """What to run: sizes, rates and bounds for one invocation."""

    rounds: int
    a: Dataset
    a_rate: int  # bytes/s per connection
    a_concurrency: int
    b: tuple[Dataset, ...]
    b_concurrency: int
    c_nodes: tuple[int, ...]
    d: Dataset
    d_rate: int
    e: Dataset  # the multi-GB job: unthrottled, b_concurrency at a time, every file verified
    timeout: float
    # many small files, b_concurrency at a time; the small twin gives the per-file slope
    f: Dataset = Dataset("bench-f-2000x8k", 2000, 8000)
    f_base: Dataset = Dataset("bench-f-20x8k", 20, 8000)

    @classmethod
    def full(cls, rounds: int) -> Plan:
        return cls(
            rounds=rounds,
            a=Dataset("bench-a-40x1m", 40, MB),
            a_rate=2 * MB,
            a_concurrency=2,
            b=(Dataset("bench-b-40x8m", 40, 8 * MB), Dataset("bench-b-1x512m", 1, 512 * MB)),
            b_concurrency=8,
            c_nodes=(1, 2, 3),
            d=Dataset("bench-d-10x500k", 10, 500_000),
            d_rate=MB,
            e=Dataset("bench-e-40x128m", 40, 128 * MB),
            timeout=300,
        )

    @classmethod
    def quick(cls, rounds: int) -> Plan:
        return cls(
            rounds=rounds,
            a=Dataset("bench-a-4x64k", 4, 64_000),
            a_rate=1 * MB,
            a_concurrency=2,
            b=(Dataset("bench-b-4x256k", 4, 256_000),),
            b_concurrency=4,
            c_nodes=(1, 2),
            d=Dataset("bench-d-2x50k", 2, 50_000),
            d_rate=MB,
            e=Dataset("bench-e-4x1m", 4, MB),
            timeout=60,
            f=Dataset("bench-f-40x8k", 40, 8000),
            f_base=Dataset("bench-f-4x8k", 4, 8000),
        )

    def datasets(self, chosen: set[str] | None = None) -> list[Dataset]:
        """The datasets the chosen scenarios use (all by default)."""
        wanted = {
            "A": [self.a],
            "B": list(self.b),
            "C": [self.a],
            "D": [self.d],
            "E": [self.e],
            "F": [self.f_base, self.f],
        }
        keys = wanted if chosen is None else [k for k in wanted if k in chosen]
        found: dict[str, Dataset] = {}
        for key in keys:
            for data in wanted[key]:
                found[data.item] = data
        return list(found.values())


@dataclass
class Run:
    """One measured run of one competitor."""

    scenario: str
    dataset: str
    tool: str
    round: int
    wall: float
    cpu: float
    peak_rss: int
    startup: float | None  # command start -> first request at the server
    span: float | None  # first file request -> last byte of the last transfer
    ok: bool
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    plan: Plan
    runs: list[Run] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    server_ceiling: dict[str, float] = field(default_factory=dict)
    timelines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    startup_profile: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What results.json holds."""
        return {
            "environment": self.environment,
            "runs": [asdict(r) for r in self.runs],
            "notes": self.notes,
            "server_ceiling_mb_s": self.server_ceiling,
            "startup_profile": self.startup_profile,
        }
