"""Mirror archive.org items with Scrapy: politely, in parallel, verified."""
