"""Create the artifact bucket with versioning and Object Lock, as infra/s3/bucket.json describes.

Usage: python infra/s3/create_bucket.py [--endpoint-url URL] [--spec infra/s3/bucket.json]
The change-log mirror objects are written with COMPLIANCE retention by the ledger; artifacts get the default
GOVERNANCE retention so that a forget request can still delete them with the right permission.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import boto3


def create_bucket(spec: dict, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    s3.create_bucket(Bucket=spec["bucket"], ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=spec["bucket"], VersioningConfiguration={"Status": spec["versioning"]})
    s3.put_object_lock_configuration(Bucket=spec["bucket"], ObjectLockConfiguration=spec["object_lock"])
    s3.put_bucket_lifecycle_configuration(Bucket=spec["bucket"], LifecycleConfiguration=spec["lifecycle"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--spec", default=str(Path(__file__).with_name("bucket.json")))
    args = parser.parse_args()
    create_bucket(json.loads(Path(args.spec).read_text()), args.endpoint_url)


if __name__ == "__main__":
    main()
