"""Artifact store: content-addressed blobs, folders as manifests of blobs, named documents with compare-and-swap.

`open_store(url)` picks the backend: a plain path or file:// URL gives a LocalStore, s3://bucket/prefix an S3Store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pipelines.core.digests import canonical_json, dir_digest

from .base import ArtifactStore, DeleteReport
from .local import LocalStore
from .s3 import S3Store

__all__ = ["ArtifactStore", "DeleteReport", "LocalStore", "S3Store", "canonical_json", "dir_digest", "open_store"]


def open_store(url: str | Path, **s3_options: Any) -> ArtifactStore:
    """Open a store from a URL. S3 options (endpoint_url, region_name, cache_dir, keys) go to S3Store; credentials
    otherwise come from boto3's usual sources (environment, profile, instance role), and AWS_ENDPOINT_URL_S3 works."""
    text = str(url)
    if not text:
        raise ValueError("store URL is empty; give a folder path, file:///abs/path or s3://bucket/prefix")
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, unquote(parsed.path).lstrip("/"), **s3_options)
    if s3_options:
        raise ValueError(f"S3 options {sorted(s3_options)} were given for non-S3 store URL {text!r}")
    if parsed.scheme == "file":
        return LocalStore(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ValueError(f"store URL scheme {parsed.scheme!r} is not supported; use a path, file:// or s3://")
    return LocalStore(text)
