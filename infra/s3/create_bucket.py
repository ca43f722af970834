"""Create the artifact bucket and the change-log mirror bucket, as infra/s3/bucket.json describes.

Usage: python infra/s3/create_bucket.py [--endpoint-url URL] [--spec infra/s3/bucket.json]
The artifact bucket gets versioning and Object Lock with GOVERNANCE default retention, so that a forget request
can still delete artifacts with the right permission. The mirror bucket (`log_mirror`, by default
`<artifact-bucket>-log`, which is where memgov looks when MEMGOV_LOG_MIRROR is unset) is separate, has no
lifecycle rule, and its default retention is COMPLIANCE: the ledger writes each event object with COMPLIANCE
retention itself (MEMGOV_LOG_RETENTION_DAYS); the default covers any other version put there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import boto3


def create_artifact_bucket(s3, spec: dict) -> None:
    """Versioned, Object Lock enabled, GOVERNANCE by default: deletable by a forget request with the permission."""
    s3.create_bucket(Bucket=spec["bucket"], ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=spec["bucket"], VersioningConfiguration={"Status": spec["versioning"]})
    s3.put_object_lock_configuration(Bucket=spec["bucket"], ObjectLockConfiguration=spec["object_lock"])
    s3.put_bucket_lifecycle_configuration(Bucket=spec["bucket"], LifecycleConfiguration=spec["lifecycle"])


def mirror_spec(spec: dict) -> dict:
    """The mirror bucket's settings; COMPLIANCE is required, so a spec that weakens it is refused."""
    mirror = {"bucket": f"{spec['bucket']}-log", "versioning": "Enabled",
              "object_lock": {"ObjectLockEnabled": "Enabled",
                              "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 3650}}},
              **spec.get("log_mirror", {})}
    if mirror["bucket"] == spec["bucket"]:
        raise ValueError("log_mirror.bucket must differ from the artifact bucket")
    if mirror["object_lock"].get("Rule", {}).get("DefaultRetention", {}).get("Mode") != "COMPLIANCE":
        raise ValueError("log_mirror.object_lock must set a COMPLIANCE default retention")
    return mirror


def create_mirror_bucket(s3, spec: dict) -> None:
    """Its own bucket, so the pipeline's artifact permissions and lifecycle rules never reach the log."""
    mirror = mirror_spec(spec)
    s3.create_bucket(Bucket=mirror["bucket"], ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=mirror["bucket"], VersioningConfiguration={"Status": mirror["versioning"]})
    s3.put_object_lock_configuration(Bucket=mirror["bucket"], ObjectLockConfiguration=mirror["object_lock"])


def create_bucket(spec: dict, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    create_artifact_bucket(s3, spec)
    create_mirror_bucket(s3, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--spec", default=str(Path(__file__).with_name("bucket.json")))
    args = parser.parse_args()
    create_bucket(json.loads(Path(args.spec).read_text()), args.endpoint_url)


if __name__ == "__main__":
    main()
