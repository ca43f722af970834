"""Admission: validate each incoming batch with Great Expectations and quarantine failing rows with reasons.

Great Expectations is imported only inside `admit_batch`, so importing this package stays cheap.
"""

from pipelines.admission.admit import (
    DUPLICATE_ID,
    TOMBSTONED,
    UNPARSEABLE,
    AdmissionResult,
    TombstoneSet,
    admit_batch,
    batch_hash,
    build_checks,
)
from pipelines.admission.config import DEFAULT_PII_PATTERNS, AdmissionConfig
from pipelines.admission.io import SUPPORTED_SUFFIXES, read_batch

__all__ = [
    "DEFAULT_PII_PATTERNS",
    "DUPLICATE_ID",
    "SUPPORTED_SUFFIXES",
    "TOMBSTONED",
    "UNPARSEABLE",
    "AdmissionConfig",
    "AdmissionResult",
    "TombstoneSet",
    "admit_batch",
    "batch_hash",
    "build_checks",
    "read_batch",
]
