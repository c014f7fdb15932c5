"""The name rules: whether archive.org's name for a file can be its path in the store.

Owns ``safe_relative_path`` (characters, components, length), :class:`NameClaims` (names of
one item that differ only in case) and ``shown`` (remote text in a log line). A name is
judged once, where it enters: the spider (or the fleet's scheduler, for a fleet's ledger)
judges every listed name; an item whose name is refused carries the reason in ``error``,
and the pipeline and the stores only ever see names that passed.
"""

from __future__ import annotations

import unicodedata

from ravelscraper.digests import DigestMap, digest64

# Characters that reorder or break a line when shown: refused in names like control characters.
INVISIBLE_LAYOUT = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)
MAX_COMPONENT_BYTES = 255  # the longest file or folder name most filesystems take


NAME_REFUSED = "refused the name: "  # the reason of a file whose name is refused
DIFFERS_IN_CASE = "it differs only in case from {other!r}"


class UnsafeName(ValueError):
    """A remote file name that would not stay inside the store."""


def refused_character(text: str) -> str | None:
    """Why ``text`` can't be a name: control (C0, C1, DEL), bidi or line-separator characters."""
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            return "it contains a control character"
        if char in INVISIBLE_LAYOUT:
            return f"it contains the invisible layout character U+{ord(char):04X}"
        if category == "Cs":
            return "it contains a lone surrogate (not valid text)"
    return None


def safe_relative_path(identifier: str, name: str) -> str:
    """``<identifier>/<name>``, refusing any name that could leave its folder or fool a reader."""
    for part in (identifier, name):
        reason = refused_character(part)
        if reason:
            raise UnsafeName(reason)
        if "\\" in part:
            raise UnsafeName("it contains a backslash")
    if name.startswith("/"):
        raise UnsafeName("it is an absolute path")
    for component in [identifier, *name.split("/")]:
        if component in ("", ".", ".."):
            raise UnsafeName(f"it has a {component or 'empty'!r} path component")
        if len(component.encode()) > MAX_COMPONENT_BYTES:
            raise UnsafeName(f"a path component is longer than {MAX_COMPONENT_BYTES} bytes")
    return f"{identifier}/{name}"


class NameClaims:
    """The paths taken so far in one crawl: a second spelling of a taken path (a name that
    differs only in case, which a case-insensitive store would write over) is refused.

    Held per item, so a crawl of many items keeps one entry per item folder (two identifiers
    that differ only in case are one folder there) and only the names of the item being
    listed: an item's files are claimed together, when it is listed. The item folders are
    kept compact (``ravelscraper.digests``): 16 bytes a folder, and the identifier itself
    only when it is not already in case-folded form (most are). Two folders are taken for
    one when their 64-bit digests are equal: about n**2 / 2**65 for n folders.
    """

    def __init__(self) -> None:
        # digest of a case-folded identifier -> 0 (the folder's identifier is that case-folded
        # form) or 1 + where in ``spellings`` its identifier is
        self.folders = DigestMap()
        self.spellings = bytearray()  # identifiers not in case-folded form, each NUL-ended
        self.item = ""  # the identifier whose names ``taken`` holds
        self.taken: dict[str, str] = {}  # case-folded path -> the name that took it

    def claim(self, identifier: str, name: str) -> str:
        """The file's path in the store; raises UnsafeName for a name that can't be one."""
        path = safe_relative_path(identifier, name)  # no NUL in identifier past this
        if identifier != self.item:  # the item's first file: its folder is claimed
            folder = self.folder(identifier)
            if folder != identifier:
                raise UnsafeName(f"its item {identifier!r} differs only in case from {folder!r}")
            self.item, self.taken = identifier, {}
        other = self.taken.setdefault(path.casefold(), name)
        if other != name:
            raise UnsafeName(DIFFERS_IN_CASE.format(other=other))
        return path

    def folder(self, identifier: str) -> str:
        """The identifier that first claimed the item folder ``identifier`` names (itself,
        the first time)."""
        folded = identifier.casefold()
        at = 0 if identifier == folded else len(self.spellings) + 1
        found = self.folders.setdefault(digest64(folded), at)
        if found == 0:
            return folded
        if found == at:  # a new folder: its spelling is kept
            self.spellings += identifier.encode("utf-8", "surrogatepass") + b"\0"
            return identifier
        end = self.spellings.index(b"\0", found - 1)
        return self.spellings[found - 1 : end].decode("utf-8", "surrogatepass")


def refused_name(claims: NameClaims, identifier: str, name: str) -> str:
    """ "" if the name can be stored, else the reason the file fails (its ``error``)."""
    try:
        claims.claim(identifier, name)
    except UnsafeName as exc:
        return f"{NAME_REFUSED}{exc}"
    return ""


def shown(text: str) -> str:
    """Remote text for a log line: as it is when plainly printable, else escaped (repr)."""
    return text if text.isprintable() else repr(text)
