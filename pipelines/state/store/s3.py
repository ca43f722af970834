"""Artifact store in an S3 bucket (or any S3-compatible endpoint) through boto3.

Compare-and-swap uses S3 conditional writes: `IfNoneMatch="*"` creates a key only if it is absent and
`IfMatch=<ETag>` replaces it only if it is still the object just read, so the check and the write are one
atomic step on the server; no lock object is needed. A blob deletion removes every version of the object,
because on a versioned bucket a plain delete only hides data behind a delete marker; a version under GOVERNANCE
retention (the artifact bucket's default, infra/s3/bucket.json) is deleted with BypassGovernanceRetention, and one
under COMPLIANCE retention or a legal hold is reported with the hold's name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipelines.core.digests import digest_of, digest_of_file

from .base import ArtifactStore, DeleteReport, StoreUnavailable, check_digest, check_key

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_LOCKED = {"AccessDenied", "403"}  # what S3 answers for a version under Object Lock retention or legal hold


ATTEMPTS = 5  # per request, with botocore's standard exponential backoff between them
CONNECT_TIMEOUT_S = 10


_ALREADY_THERE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}  # create-only put lost


def _checksum(digest: str) -> str:
    """S3's ChecksumSHA256 header for a blob digest: S3 refuses an upload whose bytes do not match it."""
    return base64.b64encode(bytes.fromhex(check_digest(digest))).decode()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _GuardedClient:
    """The boto3 client, with an endpoint that stays unreachable (or answers 5xx) after the bounded retries
    turned into one StoreUnavailable naming the store and the operation."""

    def __init__(self, client: Any, uri: str):
        self._client, self._uri = client, uri

    def _unavailable(self, operation: str, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"artifact store {self._uri} is unreachable ({operation} failed after {ATTEMPTS} "
                                f"attempts: {exc}); nothing half-written is referred to, retry once it is back")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = attr(*args, **kwargs)
            except BotoCoreError as exc:
                raise self._unavailable(name, exc) from exc
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if status >= 500:
                    raise self._unavailable(name, exc) from exc
                raise
            return _GuardedPaginator(result, self) if name == "get_paginator" else result
        return call


class _GuardedPaginator:
    def __init__(self, paginator: Any, guard: _GuardedClient):
        self._paginator, self._guard = paginator, guard

    def paginate(self, **kwargs: Any):
        try:
            yield from self._paginator.paginate(**kwargs)
        except BotoCoreError as exc:
            raise self._guard._unavailable("listing", exc) from exc


class S3Store(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        cache_dir: str | Path | None = None,
        client: Any = None,
        **client_kwargs: Any,
    ):
        if not bucket:
            raise ValueError("S3 bucket name is empty; use a URL like s3://my-bucket/memgov")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.client = _GuardedClient(client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=Config(retries={"max_attempts": ATTEMPTS, "mode": "standard"}, max_pool_connections=32,
                          connect_timeout=CONNECT_TIMEOUT_S),
            **client_kwargs,
        ), self.uri)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    # -- helpers -------------------------------------------------------------------
    def _full(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _blob_key(self, digest: str) -> str:
        hexd = check_digest(digest)
        return self._full(f"blobs/sha256/{hexd[:2]}/{hexd}")

    def _cache_path(self, digest: str) -> Path | None:
        return self.cache_dir / check_digest(digest) if self.cache_dir else None

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise
        return resp["Body"].read(), resp["ETag"]

    # -- blobs ---------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        data = bytes(data)
        digest = digest_of(data)
        try:  # create-only: an existing blob already holds these exact bytes
            self.client.put_object(Bucket=self.bucket, Key=self._blob_key(digest), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in _ALREADY_THERE:
                raise
        return digest

    def put_file(self, path: Path) -> str:
        digest = digest_of_file(path)
        checksum = _checksum(digest)
        try:  # the body streams from the file (botocore rewinds it on a retry); S3 checks it against the digest
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=self._blob_key(digest), Body=body, IfNoneMatch="*",
                                       ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
        except ClientError as exc:
            if _code(exc) not in _ALREADY_THERE:
                raise
        return digest

    def get_bytes(self, digest: str) -> bytes:
        cached = self._cache_path(digest)
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
            if digest_of(data) == digest:
                return data
        got = self._get(self._blob_key(digest))
        if got is None:
            raise KeyError(f"blob {digest} is not in {self.uri}")
        data = got[0]
        if digest_of(data) != digest:
            raise ValueError(f"blob {digest} in {self.uri} is corrupt (content hash differs)")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, cached)
        return data

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """Streamed to the read cache (or a temporary file without one) and hashed on the way, then read from there."""
        cached = self._cache_path(digest)
        if cached is not None and cached.is_file() and digest_of_file(cached) == digest:
            with open(cached, "rb") as fh:
                yield fh
            return
        folder = cached.parent if cached is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".blob-") as tmp:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._blob_key(digest))["Body"]
            except ClientError as exc:
                if _code(exc) in _NOT_FOUND:
                    raise KeyError(f"blob {digest} is not in {self.uri}") from None
                raise
            h = hashlib.sha256()
            for chunk in body.iter_chunks(1 << 20):
                h.update(chunk)
                tmp.write(chunk)
            tmp.flush()
            if "sha256:" + h.hexdigest() != digest:
                raise ValueError(f"blob {digest} in {self.uri} is corrupt (content hash differs)")
            if cached is not None:  # kept as the read cache: a hard link survives the temporary file's removal
                with contextlib.suppress(FileExistsError):
                    os.link(tmp.name, cached)
            tmp.seek(0)
            yield tmp

    def has(self, digest: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._blob_key(digest))
            return True
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise

    def _lock_of(self, key: str, version_id: str) -> tuple[str | None, str]:
        """(Object Lock mode, the hold's name) of one version: what keeps it, in words a request's evidence can carry."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        except ClientError:
            return None, "s3-access-denied"
        mode = head.get("ObjectLockMode")
        until = head.get("ObjectLockRetainUntilDate")
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return mode, "s3-object-lock-legal-hold"
        if mode:
            return mode, f"s3-object-lock-{mode.lower()}" + (f" until {until.isoformat()}" if until else "")
        return None, "s3-access-denied"

    def _delete_version(self, key: str, version_id: str) -> dict | None:
        """Delete one version; None when it went, else the named hold that keeps it. GOVERNANCE retention is
        bypassed (that needs the s3:BypassGovernanceRetention permission); COMPLIANCE retention and legal holds are
        not, by design of S3."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            return None
        except ClientError as exc:
            if _code(exc) not in _LOCKED:
                raise
            error = str(exc)
        mode, hold = self._lock_of(key, version_id)
        if mode == "GOVERNANCE" and hold.startswith("s3-object-lock-governance"):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version_id,
                                          BypassGovernanceRetention=True)
                return None
            except ClientError as exc:
                if _code(exc) not in _LOCKED:
                    raise
                error, hold = str(exc), hold + " (no s3:BypassGovernanceRetention permission)"
        return {"location": f"s3://{self.bucket}/{key}", "version_id": version_id, "hold": hold, "error": error}

    def delete_blob(self, digest: str) -> DeleteReport:
        """Delete every version and delete marker; versions that Object Lock protects are reported with the name of
        what holds them, not raised."""
        key = self._blob_key(digest)
        report = DeleteReport(digest)
        cached = self._cache_path(digest)
        if cached is not None and cached.exists():
            cached.unlink()
            report.deleted.append(str(cached))
        self._purge(key, report)
        return report

    def _purge(self, key: str, report: DeleteReport, keep: str | None = None) -> None:
        """Delete every version and delete marker of `key` but the version `keep`, into `report`."""
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                if item["Key"] != key or item["VersionId"] == keep:
                    continue
                vid = item["VersionId"]
                held = self._delete_version(key, vid)
                if held is None:
                    report.deleted.append(f"s3://{self.bucket}/{key}?versionId={vid}")
                else:
                    report.legal_hold.append(held)

    # -- named files: objects replaced or removed with every earlier version (a remote inbox) ---------------------
    def named_files(self, prefix: str = "") -> dict[str, str]:
        """Every object under the store's prefix (and `prefix` below it) but blobs, by its key below the store's
        prefix: its ETag."""
        base = self._full("") if self.prefix else ""
        out = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(base) :]
                if not rel.startswith("blobs/"):
                    out[rel] = item["ETag"]
        return out

    def get_named(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when absent."""
        return self._get(self._full(check_key(key)))

    def replace_named(self, key: str, path: Path) -> tuple[str, DeleteReport]:
        """Upload the file as the object `key`, then delete every earlier version of it: what the old bytes held
        (a row since forgotten) does not stay in the bucket's history. Returns the new ETag and what went."""
        full = self._full(check_key(key))
        checksum = _checksum(digest_of_file(path))  # also what a bucket under default Object Lock retention needs
        with open(path, "rb") as body:
            resp = self.client.put_object(Bucket=self.bucket, Key=full, Body=body, ChecksumAlgorithm="SHA256",
                                          ChecksumSHA256=checksum)
        report = DeleteReport(key)
        if resp.get("VersionId"):  # an unversioned bucket kept no earlier bytes: the put replaced them
            self._purge(full, report, keep=resp["VersionId"])
        return resp["ETag"], report

    def remove_named(self, key: str) -> DeleteReport:
        """The object `key` and every version of it deleted (Object Lock holds reported, not raised)."""
        report = DeleteReport(key)
        self._purge(self._full(check_key(key)), report)
        return report

    # -- documents -------------------------------------------------------------------
    def read_text(self, key: str) -> str | None:
        got = self._get(self._full(check_key(key)))
        return None if got is None else got[0].decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._full(check_key(key)), Body=text.encode("utf-8"))

    def list_keys(self, prefix: str = "") -> list[str]:
        return sorted(self.named_files(prefix))

    def delete_key(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(check_key(key)))

    def compare_and_swap(self, key: str, expected: str | None, new: str) -> bool:
        full = self._full(check_key(key))
        body = new.encode("utf-8")
        for _ in range(10):
            got = self._get(full)
            current = None if got is None else got[0].decode("utf-8")
            if current != expected:
                return False
            cond = {"IfNoneMatch": "*"} if got is None else {"IfMatch": got[1]}
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=body, **cond)
                return True
            except ClientError as exc:
                code = _code(exc)
                if code in {"PreconditionFailed", "412"} | _NOT_FOUND:
                    return False  # another writer moved or removed it between our read and our write
                if code not in {"ConditionalRequestConflict", "409"}:
                    raise
                # 409: a concurrent conditional write was in flight; S3 asks to re-read and retry
        raise RuntimeError(f"compare_and_swap on {self.uri}/{key} kept conflicting; retry later")
