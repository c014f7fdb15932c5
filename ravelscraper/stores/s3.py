"""The S3 store: Scrapy's, with keys that keep their slashes, checked at start."""

from __future__ import annotations

import asyncio
import secrets
from io import BytesIO
from typing import Any

from scrapy.pipelines.files import S3FilesStore
from scrapy.pipelines.media import MediaPipeline
from scrapy.utils.defer import deferred_from_coro
from twisted.internet.defer import Deferred

from ravelscraper.extensions.redact import redact_url
from ravelscraper.stores.base import (
    ITEM_RECORD_FOLDER,
    MAX_ITEM_RECORD_BYTES,
    PARTIAL_PREFIX,
    STORE_CHECK_TIMEOUT,
    StoreProblem,
)

MAX_LISTING_PAGES = 1000  # of an item's folder: 1,000,000 objects

MTIME_METADATA = "mtime"  # rclone's name for it: x-amz-meta-mtime


def s3_bucket_and_prefix(uri: str) -> tuple[str, str]:
    """(bucket, ``"prefix/"``) from ``s3://bucket/prefix`` or ``s3://bucket/prefix/``;
    (bucket, ``""``) from ``s3://bucket``."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store(S3FilesStore):
    """Scrapy's S3 store with ``[prefix/]<identifier>/<name>`` keys whatever the slashes.

    ``s3://bucket``, ``s3://bucket/prefix`` and ``s3://bucket/prefix/`` all work (Scrapy's
    own store wrote ``prefix<identifier>`` without a slash). A missing object is simply not
    stored yet, and :meth:`check` proves at start that the bucket exists and is writable.
    """

    blocking = False
    streams_parts = False
    checksums = frozenset({"md5"})  # its ETag
    keeps_records = False
    restamps = False  # an object's metadata can't change in place (it would be a copy)
    keeps_item_records = True  # objects under the prefix: <prefix>.ravel/items/<id>.json

    def __init__(self, uri: str):
        import botocore.session
        from botocore.config import Config

        self.bucket, self.prefix = s3_bucket_and_prefix(uri)
        pool = (
            {"max_pool_connections": self.AWS_MAX_POOL_CONNECTIONS}
            if self.AWS_MAX_POOL_CONNECTIONS is not None
            else {}
        )
        # Scrapy's client, with a short connect timeout: an unreachable endpoint is reported
        # at start in seconds, not minutes.
        self.s3_client = botocore.session.get_session().create_client(
            "s3",
            aws_access_key_id=self.AWS_ACCESS_KEY_ID,
            aws_secret_access_key=self.AWS_SECRET_ACCESS_KEY,
            aws_session_token=self.AWS_SESSION_TOKEN,
            endpoint_url=self.AWS_ENDPOINT_URL,
            region_name=self.AWS_REGION_NAME,
            use_ssl=self.AWS_USE_SSL,
            verify=self.AWS_VERIFY,
            config=Config(
                connect_timeout=STORE_CHECK_TIMEOUT,
                retries={"max_attempts": 3, "mode": "standard"},
                **pool,
            ),
        )

    def stat_file(
        self,
        path: str,
        info: MediaPipeline.SpiderInfo,
        algorithm: str = "md5",
        expected: str | None = None,
        size: int | None = None,
    ) -> Deferred[dict]:
        return deferred_from_coro(self.stat_object(path))

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        *,
        record: tuple[str, str] | None = None,
        mtime: int | None = None,
    ) -> Deferred[Any]:
        """Upload ``buf``; archive.org's ``mtime`` becomes the object's metadata ``mtime``
        (``x-amz-meta-mtime``, seconds since the epoch, as rclone stores it)."""
        if mtime is not None:
            meta = {**(meta or {}), MTIME_METADATA: str(mtime)}
        return super().persist_file(path, buf, info, meta, headers)

    async def stat_object(self, path: str) -> dict:
        """The object's ETag (its md5, for a single-part upload), mtime and size; {} if none."""
        from botocore.exceptions import ClientError

        key = f"{self.prefix}{path}"
        try:
            found = await asyncio.to_thread(self.s3_client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return {}  # not stored yet: the normal case on a first run
            raise
        return {
            "checksum": found["ETag"].strip('"'),
            "last_modified": found["LastModified"].timestamp(),
            "size": found.get("ContentLength"),
        }

    # --- item records (ravelscraper.pipelines.records.ItemRecords): blocking calls ---------

    def item_record_key(self, identifier: str) -> str:
        return f"{self.prefix}{ITEM_RECORD_FOLDER}/{identifier}.json"

    def read_item_record(self, identifier: str) -> bytes | None:
        """The item's record object, or None if there is none (one GET)."""
        from botocore.exceptions import ClientError

        try:
            found = self.s3_client.get_object(
                Bucket=self.bucket, Key=self.item_record_key(identifier)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        with found["Body"] as body:
            return body.read(MAX_ITEM_RECORD_BYTES + 1)

    def write_item_record(self, identifier: str, data: bytes) -> None:
        """Store the item's record (one PUT: S3 replaces an object whole)."""
        self.s3_client.put_object(
            Bucket=self.bucket, Key=self.item_record_key(identifier), Body=data, ACL=self.POLICY
        )

    def item_files(self, identifier: str) -> dict[str, tuple[int, str]]:
        """Every stored object of the item: name -> (size, ETag), from the bucket's listing
        (1,000 objects per request; nothing is downloaded)."""
        folder = f"{self.prefix}{identifier}/"
        found: dict[str, tuple[int, str]] = {}
        pages = self.s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder
        )
        for number, page in enumerate(pages):
            if number >= MAX_LISTING_PAGES:
                break
            for entry in page.get("Contents", []):
                name = entry["Key"][len(folder) :]
                found[name] = (int(entry["Size"]), str(entry["ETag"]).strip('"'))
        return found

    def check(self, write: bool = True) -> None:
        """Raises StoreProblem unless the bucket exists and a probe object can be written
        (without ``write``, a dry run: only that the bucket exists and can be reached)."""
        import botocore.exceptions as boto

        where = f"s3://{self.bucket}/{self.prefix}"
        client = self.s3_client
        probe = f"{self.prefix}{PARTIAL_PREFIX}write-probe-{secrets.token_hex(8)}"
        try:
            client.head_bucket(Bucket=self.bucket)
            if not write:
                return
            # The same ACL as every upload: a bucket that refuses it fails here, not later.
            client.put_object(Bucket=self.bucket, Key=probe, Body=b"", ACL=self.POLICY)
            client.delete_object(Bucket=self.bucket, Key=probe)
        except boto.NoCredentialsError:
            raise StoreProblem(
                f"FILES_STORE {where}: no AWS credentials found (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, ~/.aws or an instance role)"
            ) from None
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                why = f"the bucket {self.bucket!r} does not exist"
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                why = f"access denied ({code}): check the credentials and the bucket's policy"
            elif code == "AccessControlListNotSupported":
                why = f"the bucket refuses the ACL {self.POLICY!r} (set FILES_STORE_S3_ACL)"
            else:
                why = f"{code} {error.get('Message', '')}".strip()
            raise StoreProblem(f"FILES_STORE {where} is not writable: {why}") from None
        except boto.BotoCoreError as exc:
            why = redact_url(str(exc))
            raise StoreProblem(f"FILES_STORE {where} can't be reached: {why}") from None
