"""Settings of the ravelscraper project, grouped by concern.

Every value can be overridden on the command line: ``scrapy crawl ravel -s NAME=VALUE``.
Every ``RAVEL_*`` default lives here and only here: the code reads them without a fallback,
and the README's settings tables list each one (tests/test_settings.py checks both).
"""

from scrapy.settings import default_settings as scrapy_defaults

BOT_NAME = "ravelscraper"
SPIDER_MODULES = ["ravelscraper.spiders"]
NEWSPIDER_MODULE = "ravelscraper.spiders"
# `scrapy crawl` that exits non-zero when a file or the crawl failed.
COMMANDS_MODULE = "ravelscraper.commands"

# --- Source -------------------------------------------------------------------
# Where `-a item=<identifier>` (and the default item) is looked up; a mirror can stand in.
RAVEL_ORIGIN = "https://archive.org"
# Items per page of an archive.org search (-a collection=, -a search=): 100 to 10000.
RAVEL_SEARCH_PAGE_SIZE = 1000
# Without a fleet, each request is remembered in 8 bytes (dupefilter.py); a fleet's is in Redis.
DUPEFILTER_CLASS = "ravelscraper.dupefilter.CompactDupeFilter"

# --- Identity and politeness ------------------------------------------------
# archive.org asks bulk downloaders to identify themselves: add a contact.
USER_AGENT = "ravelscraper/0.1 (+https://github.com/ravelscraper/ravelscraper)"
ROBOTSTXT_OBEY = True
# Two files at a time, as in the tutorial; the cap holds at any delay (see downloader.py).
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOADER = "ravelscraper.downloader.PoliteDownloader"
# A pause of 2 s ± 50 % (1 to 3 s) before each file, like the tutorial's random sleep.
DOWNLOAD_DELAY = 2.0
DOWNLOAD_DELAY_JITTER = 0.5
# Listing an item (robots.txt, /metadata, details page) paces itself apart from the files.
RAVEL_LISTING_DELAY = 0.5  # seconds between those small requests (at most DOWNLOAD_DELAY)
# Retries of 429, 5xx and dropped connections, with exponential backoff and Retry-After.
RETRY_TIMES = 5
RAVEL_RETRY_BACKOFF_BASE = 1.0  # seconds before the first retry, doubled each time
RAVEL_RETRY_BACKOFF_MAX = 60.0  # the longest backoff, and the longest Retry-After obeyed
DOWNLOADER_MIDDLEWARES = {
    # Before robots.txt (100): a refused host is never contacted, not even for robots.txt.
    "ravelscraper.downloadermiddlewares.hosts.FileRedirectGuard": 50,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "ravelscraper.downloadermiddlewares.retry.BackoffRetryMiddleware": 550,
    # Nearer the downloader than redirects (600): sees a direct request's answer first.
    "ravelscraper.downloadermiddlewares.storage.StorageDirect": 650,
}
# Bytes per second for all of one node's file transfers together; 0: no limit (bandwidth.py).
RAVEL_BANDWIDTH_LIMIT = 0
# Opt-in: -s AUTOTHROTTLE_ENABLED=1 adapts the delay to archive.org's latency.
AUTOTHROTTLE_ENABLED = False

# --- Storage ------------------------------------------------------------------
# Files land in <FILES_STORE>/<identifier>/<name as archive.org names it>.
FILES_STORE = "downloads"
ITEM_PIPELINES = {"ravelscraper.pipelines.files.VerifiedFilesPipeline": 300}
RAVEL_VERIFY_RETRIES = 1  # downloads again of a file whose md5 or size is wrong
# Part files of cut-off downloads (<FILES_STORE>/.ravel/parts/) that no listing claimed are
# deleted once untouched for this many days (stores/parts.py).
RAVEL_PART_MAX_AGE = 7.0
# "quick": trust a stored file whose size and mtime match its verification record (records.py);
# "full": hash every stored file again (and ignore item records).
RAVEL_RECHECK = "quick"
RAVEL_DRY_RUN = False  # list what would be downloaded (plan.py), download nothing
# archive.org answers every download with a 302 to a storage node.
MEDIA_ALLOW_REDIRECTS = True
# Hosts a file's redirect may lead to, besides its origin: comma-separated, ".x.org" = x.org
# and its subdomains. A redirect elsewhere fails the file without connecting (hosts.py).
RAVEL_STORAGE_HOSTS = ".archive.org"
# Once a file's 302 showed its item's storage node, fetch the item's next files there directly.
RAVEL_STORAGE_DIRECT = True
# New part files are written with O_DIRECT where the filesystem takes it (no page-cache copy);
# 0: through the page cache (its written bytes dropped behind the writer).
RAVEL_DIRECT_WRITES = True
# Large FLACs are normal here: warn only past 256 MiB.
DOWNLOAD_WARNSIZE = 256 * 1024 * 1024
# File bodies go straight to a part file in the local store, not to memory (streaming.py).
DOWNLOAD_HANDLERS = {
    "http": "ravelscraper.downloader.streaming.StreamingDownloadHandler",
    "https": "ravelscraper.downloader.streaming.StreamingDownloadHandler",
}

# --- Progress and logging -----------------------------------------------------
EXTENSIONS = {
    "ravelscraper.extensions.redact.RedactSecrets": 0,
    "ravelscraper.extensions.progress.Progress": 500,
    "ravelscraper.extensions.plan.DryRunPlan": 510,  # on only with RAVEL_DRY_RUN
    "ravelscraper.extensions.startup.FreezeStartupObjects": 1000,  # gc.freeze() once started
    "ravelscraper.extensions.startup.PurgeCancelledTimers": 1010,  # cancelled timers dropped
}
RAVEL_PROGRESS_INTERVAL = 5.0  # seconds between progress lines
# Files a second (bursts of twice as many) given INFO start/finish lines; past it DEBUG; 0: all
RAVEL_FILE_LINES = 5.0
# Scrapy's downloader/* counters cost on every request and nothing here reads them (ravel/*).
DOWNLOADER_STATS = False
LOG_LEVEL = "INFO"
# Scrapy's "Versions" line at start, less "Platform", which runs `uname -p` (10 ms of each start).
LOG_VERSIONS = [name for name in scrapy_defaults.LOG_VERSIONS if name != "Platform"]
LOG_FORMAT = "[%(levelname)s]\t%(asctime)s\t%(message)s"
LOG_DATEFORMAT = "%Y-%m-%d %H:%M:%S"
FEED_EXPORT_ENCODING = "utf-8"

# --- Safety -------------------------------------------------------------------
# Credentials (URL userinfo, passwords) are masked in every log line (redact.py; the
# project's commands turn it on before the first line) and in text stats.
STATS_CLASS = "ravelscraper.extensions.redact.RedactingStatsCollector"
# Both run code sent to them, and are left out of EXTENSIONS_BASE (below): to turn one on,
# give it an order in EXTENSIONS as well.
REMOTE_CONTROL_ENABLED = False
TELNETCONSOLE_ENABLED = False
# archive.org downloads need no cookies: send none, keep none.
COOKIES_ENABLED = False

# --- Start-up -------------------------------------------------------------------
# Components this project never uses, left out of Scrapy's *_BASE settings: Scrapy imports
# every component there, and every key of EXTENSIONS even when set to None (0.2 s of each
# start: RemoteControl imports aiohttp, CookiesMiddleware tldextract). The bases are the
# installed Scrapy's own, less these, so a new Scrapy's new defaults are kept.
UNUSED_COMPONENTS = frozenset(
    {
        "scrapy.extensions.telnet.TelnetConsole",  # runs code sent to it
        "scrapy.extensions.remote_control.RemoteControl",  # runs code sent to it
        "scrapy.extensions.memdebug.MemoryDebugger",  # for Scrapy's developers
        "scrapy.downloadermiddlewares.cookies.CookiesMiddleware",  # archive.org needs none
        "scrapy.downloadermiddlewares.httpcache.HttpCacheMiddleware",  # a mirror never caches
        # The spider sets no allowed_domains (a no-op on every request): hosts.py decides.
        "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware",
    }
)
EXTENSIONS_BASE = {
    path: order
    for path, order in scrapy_defaults.EXTENSIONS_BASE.items()
    if path not in UNUSED_COMPONENTS
}
DOWNLOADER_MIDDLEWARES_BASE = {
    path: order
    for path, order in scrapy_defaults.DOWNLOADER_MIDDLEWARES_BASE.items()
    if path not in UNUSED_COMPONENTS
}

# --- Distribution ---------------------------------------------------------------
# With REDIS_URL (-s REDIS_URL=redis://host:6379/0 or the environment) the crawl is one node
# of a fleet sharing a Redis queue; without it, nothing changes. See README.
ADDONS = {"ravelscraper.distributed.addon.Distributed": 0}
RAVEL_REDIS_PREFIX = "%(spider)s"  # keys: ravel:requests, ravel:start_urls, ...
RAVEL_WAIT_FOR_WORK = 0  # seconds to wait for pushed start URLs (-1 forever); 0: own item
# Origins a pushed entry may name besides RAVEL_ORIGIN and -a url (always allowed).
RAVEL_ALLOWED_ORIGINS: list[str] = []
RAVEL_NODE_TTL = 20.0  # seconds without heartbeat before a node's entries go to others
RAVEL_HEARTBEAT = 2.0  # seconds between heartbeats (and reclaim passes)
RAVEL_IDLE_QUIET = 1.0  # seconds the whole fleet must be idle before the nodes exit
RAVEL_FLEET_TICK = 1.0  # seconds between a node's looks at the fleet: start URLs, idleness
RAVEL_MAX_ATTEMPTS = 5  # an entry held by this many stopped nodes is given up (failed)
RAVEL_NODE_MAX_LEASES = 0  # a node takes entries while it holds fewer files; 0: per-domain
RAVEL_REDIS_GRACE = 30.0  # seconds a node rides out a Redis down (a restart) or refusing writes
RAVEL_MAX_START_URL_BYTES = 65536  # larger start-URL entries are rejected unread
RAVEL_FLEET_MAX_TRANSFERS = 0  # simultaneous transfers to archive.org, all nodes; 0 = no cap
RAVEL_FLEET_LEASE_TTL = 60.0  # seconds before a killed node's fleet-cap places come back
RAVEL_FLEET_WAIT_TIMEOUT = 600.0  # seconds a transfer waits for a fleet-cap place, then fails
# Files listed and not yet settled, fleet-wide, above which no node lists more (0 = no bound)
RAVEL_FLEET_MAX_PENDING = 20000
