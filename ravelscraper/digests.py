"""Sets and maps of 64-bit digests kept in arrays: memory that stays small in the number of
items a crawl lists (the dupefilter's fingerprints, the item folders claimed).

A Python set of strings costs ~130 bytes an entry, each entry a small object of its own;
these cost 8 bytes an entry (16 for a map), in arrays. Small objects kept for the whole
crawl also pin the allocator's pools around them, which an array's buffer does not.

The digests are spread by their top bits over :data:`BUCKETS` sorted ``array("Q")``, each
looked up by bisection and grown in place by an insertion: no array is ever copied whole
(merging into one large sorted array left the old copies as holes in the C heap, whose
free space then grew with the number of items).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable

BUCKET_BITS = 10
BUCKETS = 1 << BUCKET_BITS  # 400,000 digests: ~400 a bucket, 3 kB
SHIFT = 64 - BUCKET_BITS


def digest64(text: str) -> int:
    """A 64-bit digest of ``text``: two texts collide with probability 2**-64."""
    data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class DigestSet:
    """A set of 64-bit integers (digests, below 2**64), 8 bytes an entry."""

    def __init__(self) -> None:
        self.buckets: list[array[int] | None] = [None] * BUCKETS
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: int) -> bool:
        bucket = self.buckets[key >> SHIFT]
        if bucket is None:
            return False
        index = bisect_left(bucket, key)
        return index < len(bucket) and bucket[index] == key

    def add(self, key: int) -> None:
        bucket = self.buckets[key >> SHIFT]
        if bucket is None:
            bucket = self.buckets[key >> SHIFT] = array("Q")
        index = bisect_left(bucket, key)
        if index == len(bucket) or bucket[index] != key:
            bucket.insert(index, key)
            self.count += 1

    def update(self, keys: Iterable[int]) -> None:
        for key in keys:
            self.add(key)


class DigestMap:
    """A map of 64-bit integers (digests) to integers below 2**64, 16 bytes an entry. A key
    is set once: :meth:`setdefault` keeps the first value."""

    def __init__(self) -> None:
        self.keys: list[array[int] | None] = [None] * BUCKETS  # each sorted
        self.values: list[array[int] | None] = [None] * BUCKETS  # in step with keys
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def setdefault(self, key: int, value: int) -> int:
        """The value of ``key``, set to ``value`` if it had none."""
        at = key >> SHIFT
        keys, values = self.keys[at], self.values[at]
        if keys is None or values is None:
            keys, values = self.keys[at], self.values[at] = array("Q"), array("Q")
        index = bisect_left(keys, key)
        if index < len(keys) and keys[index] == key:
            return values[index]
        keys.insert(index, key)
        values.insert(index, value)
        self.count += 1
        return value
