"""The change log's mirror: one write-once object per event, kept apart from the artifacts.

On S3 every object is created under COMPLIANCE Object Lock, so no one (the bucket owner and root included) can
delete or overwrite that version before its retention ends. A writer can still add a newer version or a delete
marker on top; `versions` returns every one of them, so verification sees that too. Any ArtifactStore (a local
folder in tests) can stand in for the mirror, without that protection.

Configuration (deployment environment, never launch config):
- `MEMGOV_LOG_MIRROR=s3://bucket/prefix`: where the mirror lives. Unset with an S3 artifact store, it is the bucket
  `<artifact-bucket>-log` under the store's prefix; unset with a local store, there is no mirror.
- `MEMGOV_LOG_RETENTION_DAYS`: COMPLIANCE retention of each event object (default 3650).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.state.store import ArtifactStore, S3Store

DEFAULT_RETENTION_DAYS = 3650
LOCK_MODE = "COMPLIANCE"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_EXISTS = {"PreconditionFailed", "412"}
_CONFLICT = {"ConditionalRequestConflict", "409"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


class MirrorUnavailable(RuntimeError):
    """The mirror could not be read or written (network, credentials, missing or unlocked bucket)."""


@dataclass(frozen=True)
class MirrorVersion:
    """One stored version of a mirror key; `body` is None for a delete marker, `locked` None where no lock exists."""

    key: str
    version_id: str
    body: str | None
    locked: bool | None = None


class LogMirror(ABC):
    """What the change log needs from its mirror: create-only writes, and every version back for verification."""

    uri: str

    @abstractmethod
    def create(self, key: str, text: str) -> bool:
        """Store `text` under `key` only if the key is absent; False when it already exists."""

    @abstractmethod
    def read(self, key: str) -> str | None:
        """The current version's text, None when absent."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Keys whose current version exists."""

    @abstractmethod
    def versions(self, prefix: str) -> dict[str, list[MirrorVersion]]:
        """Every version and delete marker under `prefix`, by key."""

    def keys_after(self, prefix: str, after: str) -> list[str]:
        """Keys under `prefix` sorting after `after`: what a writer lacks, without listing the whole log."""
        return [k for k in self.keys(prefix) if k > after]


class StoreMirror(LogMirror):
    """An ArtifactStore as mirror: write-once by compare-and-swap, one (current) version per key, no lock."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.uri = store.uri

    def create(self, key: str, text: str) -> bool:
        return self.store.compare_and_swap(key, None, text)

    def read(self, key: str) -> str | None:
        return self.store.read_text(key)

    def keys(self, prefix: str) -> list[str]:
        return self.store.list_keys(prefix)

    def versions(self, prefix: str) -> dict[str, list[MirrorVersion]]:
        return {k: [MirrorVersion(k, "current", self.store.read_text(k))] for k in self.store.list_keys(prefix)}


class S3LockedMirror(LogMirror):
    """Event objects on S3, each created with IfNoneMatch and COMPLIANCE retention for `retention_days`."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", retention_days: int = DEFAULT_RETENTION_DAYS):
        if not bucket:
            raise ValueError("log mirror bucket is empty; use a URL like s3://memgov-log/prod")
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.retention_days = check_retention_days(retention_days)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    @classmethod
    def open(cls, url: str, retention_days: int = DEFAULT_RETENTION_DAYS, endpoint_url: str | None = None,
             **client_kwargs: Any) -> S3LockedMirror:
        """Its own client with short timeouts and few retries, so an unreachable mirror is reported quickly."""
        bucket, prefix = split_s3_url(url)
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                        max_pool_connections=16)
        client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config, **client_kwargs)
        return cls(client, bucket, prefix, retention_days)

    def __repr__(self) -> str:
        return f"S3LockedMirror({self.uri!r}, retention_days={self.retention_days})"

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unavailable(self, what: str, exc: Exception) -> MirrorUnavailable:
        hint = ""
        if isinstance(exc, ClientError) and _code(exc) in {"NoSuchBucket", "InvalidRequest"}:
            hint = " (create the mirror bucket with Object Lock enabled: python infra/s3/create_bucket.py)"
        return MirrorUnavailable(f"change-log mirror {self.uri} is unreachable ({what}): {exc}{hint}")

    def create(self, key: str, text: str) -> bool:
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        for attempt in range(5):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=text.encode("utf-8"),
                                       IfNoneMatch="*", ObjectLockMode=LOCK_MODE, ObjectLockRetainUntilDate=until,
                                       ChecksumAlgorithm="SHA256", ContentType="application/json")
                return True
            except ClientError as exc:
                if _code(exc) in _EXISTS:
                    return False
                if _code(exc) not in _CONFLICT:
                    raise self._unavailable(f"writing {key}", exc) from exc
                time.sleep(0.1 * (attempt + 1))  # a concurrent conditional write is in flight: re-check
            except BotoCoreError as exc:
                raise self._unavailable(f"writing {key}", exc) from exc
        return False

    def read(self, key: str) -> str | None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            return resp["Body"].read().decode("utf-8")
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise self._unavailable(f"reading {key}", exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(f"reading {key}", exc) from exc

    def keys(self, prefix: str) -> list[str]:
        base = self._full("") if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            return sorted(item["Key"][len(base):] for page in pages for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("listing keys", exc) from exc

    def keys_after(self, prefix: str, after: str) -> list[str]:
        base = self._full("") if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix,
                                                                           StartAfter=base + after)
            return sorted(item["Key"][len(base):] for page in pages for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("listing keys", exc) from exc

    def versions(self, prefix: str) -> dict[str, list[MirrorVersion]]:
        """Lists every version and delete marker, then reads each version's body and lock in parallel."""
        base = self._full("") if self.prefix else ""
        try:
            listed, markers = self._list_versions(base + prefix)
            with ThreadPoolExecutor(max_workers=16) as pool:
                read = list(pool.map(lambda item: self._read_version(item, base), listed))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable("reading object versions", exc) from exc
        out: dict[str, list[MirrorVersion]] = {}
        for version in read + [MirrorVersion(m["Key"][len(base):], m["VersionId"], None) for m in markers]:
            out.setdefault(version.key, []).append(version)
        return out

    def _list_versions(self, prefix: str) -> tuple[list[dict], list[dict]]:
        versions, markers = [], []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
            versions += page.get("Versions", [])
            markers += page.get("DeleteMarkers", [])
        return versions, markers

    def _read_version(self, item: dict, base: str) -> MirrorVersion:
        resp = self.client.get_object(Bucket=self.bucket, Key=item["Key"], VersionId=item["VersionId"])
        until = resp.get("ObjectLockRetainUntilDate")
        locked = resp.get("ObjectLockMode") == LOCK_MODE and until is not None and until > dt.datetime.now(dt.UTC)
        return MirrorVersion(item["Key"][len(base):], item["VersionId"], resp["Body"].read().decode("utf-8"), locked)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def as_mirror(mirror: ArtifactStore | LogMirror | None) -> LogMirror | None:
    """An S3 store always becomes a locked mirror: an S3 mirror without Object Lock proves nothing."""
    if mirror is None or isinstance(mirror, LogMirror):
        return mirror
    if isinstance(mirror, S3Store):
        return S3LockedMirror(mirror.client, mirror.bucket, mirror.prefix)
    return StoreMirror(mirror)


def split_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"log mirror URL {url!r} is not an S3 URL; use s3://bucket/prefix (a bucket with Object Lock)")
    return parsed.netloc, unquote(parsed.path).strip("/")


def check_retention_days(days: Any) -> int:
    try:
        value = int(days)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ValueError(f"log mirror retention {days!r} is not a whole number of days >= 1 "
                         f"(MEMGOV_LOG_RETENTION_DAYS; default {DEFAULT_RETENTION_DAYS})")
    return value


def _overlaps(a: str, b: str) -> bool:
    """Whether one key prefix contains the other, compared by path segments ('' contains everything)."""
    pa, pb = [p for p in a.split("/") if p], [p for p in b.split("/") if p]
    return pa[: len(pb)] == pb or pb[: len(pa)] == pa


def mirror_url(store_url: str, configured: str = "") -> str | None:
    """The mirror this deployment must use; refuses one that shares the artifacts' bucket and prefix."""
    store_is_s3 = store_url.startswith("s3://")
    if not configured:
        if not store_is_s3:
            return None
        bucket, prefix = split_s3_url(store_url)
        if not _BUCKET.match(f"{bucket}-log"):
            raise ValueError(f"cannot derive a log mirror bucket from {bucket!r} ({bucket}-log is not a valid "
                             "bucket name); set MEMGOV_LOG_MIRROR=s3://<bucket>/<prefix>")
        return f"s3://{bucket}-log/{prefix}" if prefix else f"s3://{bucket}-log"
    bucket, prefix = split_s3_url(configured)
    if store_is_s3:
        store_bucket, store_prefix = split_s3_url(store_url)
        if bucket == store_bucket and _overlaps(prefix, store_prefix):
            raise ValueError(f"MEMGOV_LOG_MIRROR {configured} overlaps the artifact store {store_url}; the mirror "
                             "must live in its own bucket (recommended) or a prefix outside the store's")
    return configured


def open_log_mirror(store_url: str, environ: Mapping[str, str] | None = None) -> S3LockedMirror | None:
    """The deployment's mirror from its environment (MEMGOV_LOG_MIRROR, MEMGOV_LOG_RETENTION_DAYS, MEMGOV_S3_ENDPOINT)."""
    env = os.environ if environ is None else environ
    url = mirror_url(store_url, env.get("MEMGOV_LOG_MIRROR", "").strip())
    if url is None:
        return None
    days = check_retention_days(env.get("MEMGOV_LOG_RETENTION_DAYS", "").strip() or DEFAULT_RETENTION_DAYS)
    return S3LockedMirror.open(url, days, endpoint_url=env.get("MEMGOV_S3_ENDPOINT") or None)
