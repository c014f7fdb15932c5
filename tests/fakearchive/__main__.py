"""``python -m tests.fakearchive [--config FILE_OR_JSON]``: run the fake archive.org."""

from .server import main

main()
