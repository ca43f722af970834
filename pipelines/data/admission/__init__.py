"""Admission: validate each incoming batch with Great Expectations and quarantine failing rows with reasons.

Great Expectations is imported only inside `admit_batch`, so importing this package stays cheap.
"""

from pipelines.data.admission.admit import (
    DUPLICATE_ID,
    FIELD_TYPES,
    TOMBSTONED,
    UNPARSEABLE,
    AdmissionResult,
    FieldType,
    TombstoneSet,
    admit_batch,
    batch_hash,
    build_checks,
    contains_payment_card,
)
from pipelines.data.admission.config import DEFAULT_FORBIDDEN_CHARACTERS, DEFAULT_PII_PATTERNS, AdmissionConfig
from pipelines.data.admission.io import (
    MAX_DEPTH,
    MAX_LINE_BYTES,
    SUPPORTED_SUFFIXES,
    iter_jsonl_lines,
    parse_jsonl_line,
    read_batch,
)

__all__ = [
    "DEFAULT_FORBIDDEN_CHARACTERS",
    "DEFAULT_PII_PATTERNS",
    "DUPLICATE_ID",
    "FIELD_TYPES",
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "SUPPORTED_SUFFIXES",
    "TOMBSTONED",
    "UNPARSEABLE",
    "AdmissionConfig",
    "AdmissionResult",
    "FieldType",
    "TombstoneSet",
    "admit_batch",
    "batch_hash",
    "build_checks",
    "contains_payment_card",
    "iter_jsonl_lines",
    "parse_jsonl_line",
    "read_batch",
]
