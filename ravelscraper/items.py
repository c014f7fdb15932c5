from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AudioFile:
    """One file of an archive.org item; ``files`` is FilesPipeline's result."""

    identifier: str
    name: str
    url: str
    format: str = ""
    title: str = ""
    track: str = ""
    album: str = ""
    creator: str = ""
    length: float | None = None  # seconds
    size: int | None = None  # bytes, from /metadata
    md5: str | None = None  # from /metadata; None when only the details page was read
    file_urls: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
