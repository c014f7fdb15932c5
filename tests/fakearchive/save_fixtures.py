"""Regenerate tests/fixtures/ from the catalogue: ``python -m tests.fakearchive.save_fixtures``.

The pages are rendered as archive.org would serve them (origin https://archive.org, storage
node ia800300.us.archive.org), for offline parse tests: the ``/metadata`` answers are read by
tests/test_archive.py, the details pages by tests/test_fakearchive.py, both through
ravelscraper.archive.metadata's parsers.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import render
from .catalog import CATALOG

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ORIGIN = "https://archive.org"
STORAGE_HOST = "ia800300.us.archive.org"


def fixtures() -> dict[str, str]:
    """File name -> content of every saved fixture."""
    out = {}
    for identifier in ("ThePianoMusicOfMauriceRavel", "awkward-names"):
        item = CATALOG[identifier]
        out[f"details-{identifier}.html"] = render.details_html(item, ORIGIN)
        out[f"metadata-{identifier}.json"] = _json(render.metadata(item, STORAGE_HOST))
    gd_like = render.metadata(CATALOG["gd1977-like"], "ia800201.us.archive.org")
    gd_like["d1"] = "ia600201.us.archive.org"
    gd_like["workable_servers"] = ["ia800201.us.archive.org", "ia600201.us.archive.org"]
    out["metadata-gd1977-like.json"] = _json(gd_like)
    # Real-shaped items of issue 9, for offline parse tests.
    for identifier in (
        "samples-only-cd",
        "mixed-access",
        "rpm78-like",
        "flac-vbr-64kb",
        "ravel-collection",
    ):
        out[f"metadata-{identifier}.json"] = _json(
            render.metadata(CATALOG[identifier], STORAGE_HOST)
        )
    return out


def _json(doc: object) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    for name, text in fixtures().items():
        (FIXTURES / name).write_text(text, encoding="utf-8")
        print(FIXTURES / name)


if __name__ == "__main__":
    main()
