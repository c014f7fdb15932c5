"""The start-URL list (``<prefix>:start_urls``), taken and dropped by one node at a time."""

from __future__ import annotations

from typing import Any

from ravelscraper.distributed.schema.keys import JobKeys, text
from ravelscraper.distributed.schema.lua import Scripts

# The head of the start-URL list; one larger than ARGV[1] bytes is removed and rejected
# without being sent. KEYS start_urls rejected -> false | {'ok', raw} | {'big', size}
TAKE_START_URL = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return false end
if #head <= tonumber(ARGV[1]) then return {'ok', head} end
redis.call('LREM', KEYS[1], 1, head)
redis.call('HSET', KEYS[2], 'start_url:' .. string.sub(redis.sha1hex(head), 1, 12),
           'entry of ' .. #head .. ' bytes is larger than ' .. ARGV[1])
return {'big', tostring(#head)}
"""


# The start URL ARGV[1] (raw) is refused: removed, and recorded in rejected with ARGV[2] as the
# reason, by whichever node removes it first. KEYS start_urls rejected -> 1 if removed here
REJECT_START_URL = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'start_url:' .. string.sub(redis.sha1hex(ARGV[1]), 1, 12), ARGV[2])
return 1
"""


class StartUrls:
    """``<prefix>:start_urls``: pushed by users, taken by nodes, refused ones recorded."""

    def __init__(self, client: Any, keys: JobKeys) -> None:
        self.client = client
        self.keys = keys
        self.scripts = Scripts(client, {"take": TAKE_START_URL, "reject": REJECT_START_URL})

    def push(self, entry: str) -> int:
        """Append a start-URL entry (JSON); how many now wait."""
        return int(self.client.rpush(self.keys.start_urls, entry))

    def take(self, max_bytes: int) -> tuple[str, bytes | int] | None:
        """The first start URL (``("ok", raw)``), or ``("big", size)`` for one that was too
        large and has been removed and rejected; None if there is none. ``ok`` entries stay
        in the list until :meth:`drop`: a node that dies meanwhile loses nothing."""
        k = self.keys
        found = self.scripts("take", [k.start_urls, k.rejected], [max_bytes])
        if not found:
            return None
        kind = text(found[0])
        return (kind, found[1]) if kind == "ok" else (kind, int(found[1]))

    def drop(self, raw: bytes) -> bool:
        """Remove a start URL once its requests are queued; False if another node did."""
        return bool(self.client.lrem(self.keys.start_urls, 1, raw))

    def reject(self, raw: bytes, reason: str) -> bool:
        """Remove a refused start URL and record why; True for the node that removed it."""
        k = self.keys
        return bool(self.scripts("reject", [k.start_urls, k.rejected], [raw, reason[:500]]))
