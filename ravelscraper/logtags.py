"""The tags that open the project's log lines, named once.

People and scripts find lines by them (``grep -F '[item failed]'``), the README shows them,
and the tests wait for them: a tag is part of the output's format, so it is written here and
only used elsewhere.
"""

# one file
DOWNLOAD_START = "[download start]"
DOWNLOAD_FINISHED = "[download finished]"
DOWNLOAD_FAILED = "[download failed]"
UNVERIFIED = "[unverified]"  # stored without a checksum match
STALE = "[stale]"  # a stored file that no longer matches: downloaded again
VERIFY = "[verify]"  # a download whose checksum or size is wrong: downloaded again
RESUME = "[resume]"  # a cut-off transfer resumed, or started again
RETRY = "[retry]"
# one item, many items
METADATA = "[metadata]"  # what /metadata says that is odd
ITEM = "[item]"
ITEM_FAILED = "[item failed]"
ITEM_SKIPPED = "[item skipped]"
ITEM_UNCHANGED = "[item unchanged]"
ITEM_NOT_RECORDED = "[item not recorded]"
ITEMS = "[items]"  # an item list
SEARCH = "[search]"
# the crawl
MAIN_START = "[main start]"
PROGRESS = "[progress]"
MAIN_FINISHED = "[main finished]"
FAILED_ITEMS = "[failed items]"
FAILED_FILES = "[failed files]"
SPIDER_ERROR = "[spider error]"
DRY_RUN = "[dry run]"
FLEET = "[fleet]"
