"""Sets and maps of 64-bit digests kept in arrays: memory that stays small in the number of
items a crawl lists (the dupefilter's fingerprints, the item folders claimed).

A Python set of strings costs ~130 bytes an entry, each entry a small object of its own;
these cost 8 bytes an entry (16 for a map), held in a few large buffers. Small objects kept
for the whole crawl also pin the allocator's pools around them, which a large buffer does not.

Each is a sorted ``array("Q")`` (looked up by bisection) and a small set or dict of the
newest entries, merged into the array when it reaches an eighth of it: a merge costs one
pass over the array, and the array grows by an eighth at least each time.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from itertools import chain

MIN_RECENT = 1024  # newest entries kept in a set or dict before a merge, at least


def digest64(text: str) -> int:
    """A 64-bit digest of ``text``: two texts collide with probability 2**-64."""
    data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class DigestSet:
    """A set of 64-bit integers (digests), 8 bytes an entry once merged."""

    def __init__(self) -> None:
        self.keys = array("Q")  # sorted
        self.recent: set[int] = set()

    def __len__(self) -> int:
        return len(self.keys) + len(self.recent)

    def __contains__(self, key: object) -> bool:
        return key in self.recent or self.position(key) is not None

    def position(self, key: object) -> int | None:
        """Where ``key`` is in the sorted array, or None."""
        keys = self.keys
        if not isinstance(key, int) or not 0 <= key < 1 << 64:
            return None
        index = bisect_left(keys, key)
        return index if index < len(keys) and keys[index] == key else None

    def add(self, key: int) -> None:
        if key not in self:
            self.recent.add(key)
            if len(self.recent) >= max(MIN_RECENT, len(self.keys) >> 3):
                self.merge()

    def update(self, keys: object) -> None:
        for key in keys:  # type: ignore[attr-defined]
            self.add(key)

    def merge(self) -> None:
        self.keys = array("Q", sorted(chain(self.keys, self.recent)))
        self.recent = set()


class DigestMap:
    """A map of 64-bit integers (digests) to integers below 2**64, 16 bytes an entry once
    merged. A key is set once: :meth:`setdefault` keeps the first value."""

    def __init__(self) -> None:
        self.keys = array("Q")  # sorted
        self.values = array("Q")  # in step with keys
        self.recent: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys) + len(self.recent)

    def get(self, key: int) -> int | None:
        value = self.recent.get(key)
        if value is not None:
            return value
        keys = self.keys
        index = bisect_left(keys, key)
        return self.values[index] if index < len(keys) and keys[index] == key else None

    def setdefault(self, key: int, value: int) -> int:
        """The value of ``key``, set to ``value`` if it had none."""
        found = self.get(key)
        if found is not None:
            return found
        self.recent[key] = value
        if len(self.recent) >= max(MIN_RECENT, len(self.keys) >> 3):
            self.merge()
        return value

    def merge(self) -> None:
        pairs = sorted(chain(zip(self.keys, self.values, strict=True), self.recent.items()))
        self.keys = array("Q", (key for key, _ in pairs))
        self.values = array("Q", (value for _, value in pairs))
        self.recent = {}
