"""Row-level admission: every row of a batch is either admitted or quarantined with the reasons why."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelines.admission.config import AdmissionConfig
from pipelines.admission.io import plain
from pipelines.admission.suite import ROW_KEY, ROWS, SUBJECT_LINKS, Check, CheckOutcome, run_checks

UNPARSEABLE = "unparseable"
TOMBSTONED = "tombstoned"
DUPLICATE_ID = "duplicate id"


class TombstoneSet(Protocol):
    """What admission needs from the tombstone store: frozensets of ids that must never return.

    An optional `doc_ids` frozenset is honoured too (against a row's `doc_id` column) when the object has one.
    """

    row_ids: frozenset[str]
    subject_ids: frozenset[str]
    fact_ids: frozenset[str]


@dataclass
class AdmissionResult:
    admitted: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    expectations: list[dict[str, Any]]
    suite_name: str
    batch_hash: str
    seconds: float
    batch_name: str = "batch"
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (rows excluded) for run metadata and the change log."""
        return {
            "batch_name": self.batch_name,
            "suite_name": self.suite_name,
            "batch_hash": self.batch_hash,
            "admitted": len(self.admitted),
            "quarantined": len(self.quarantined),
            "reasons": self.reason_counts(),
            "expectations": self.expectations,
            "seconds": round(self.seconds, 4),
        }

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.quarantined:
            for reason in row["quarantine_reasons"]:
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_markdown(self) -> str:
        """Short table of expectation results for the UI."""
        total = len(self.admitted) + len(self.quarantined)
        lines = [
            f"**{self.batch_name}**: {len(self.admitted)}/{total} rows admitted, "
            f"{len(self.quarantined)} quarantined (suite `{self.suite_name}`, batch `{self.batch_hash[:12]}`)",
            "",
            "| expectation | column | result | unexpected |",
            "|---|---|---|---:|",
        ]
        for exp in self.expectations:
            verdict = "pass" if exp["success"] else "FAIL"
            lines.append(f"| {exp['description']} | `{exp['column']}` | {verdict} | {exp['unexpected_count']} |")
        return "\n".join(lines) + "\n"


def batch_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 over canonical JSON lines, so the same rows always give the same hash whatever their key order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(plain(row), sort_keys=True, separators=(",", ":"), default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _subject_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def build_checks(cfg: AdmissionConfig, columns: set[str], tombstones: TombstoneSet | None) -> list[Check]:
    """The suite for a batch with the given columns: config checks first, then tombstone checks."""
    checks: list[Check] = []
    for col in cfg.required_columns:
        checks.append(
            Check(
                "expect_column_values_to_not_be_null",
                col,
                {},
                f"{col} present",
                lambda _v, c=col: f"missing required field '{c}'",
            )
        )
    if cfg.unique_ids:
        checks.append(Check("expect_column_values_to_be_unique", "id", {}, "id unique", lambda _v: DUPLICATE_ID))
    for col in cfg.text_columns:
        if col not in columns:
            continue
        limit = cfg.max_text_chars
        checks.append(
            Check(
                "expect_column_value_lengths_to_be_between",
                col,
                {"max_value": limit},
                f"{col} at most {limit} chars",
                lambda v, c=col, n=limit: f"{c} longer than {n} characters ({len(str(v))})",
            )
        )
        for name, pattern in cfg.pii_patterns.items():
            checks.append(
                Check(
                    "expect_column_values_to_not_match_regex",
                    col,
                    {"regex": pattern},
                    f"{col} free of pii '{name}'",
                    lambda _v, c=col, p=name: f"{c} matches pii pattern '{p}'",
                )
            )
    if "license" in columns or "license" in cfg.required_columns:
        allowed = list(cfg.allowed_licenses)
        shown = ", ".join(allowed)
        checks.append(
            Check(
                "expect_column_values_to_be_in_set",
                "license",
                {"value_set": allowed},
                "licence allowed",
                lambda v, s=shown: f"licence '{v}' not allowed (allowed: {s})",
            )
        )
    if tombstones is not None:
        checks.append(
            Check(
                "expect_column_values_to_not_be_in_set",
                "id",
                {"value_set": sorted(map(str, tombstones.row_ids))},
                "id not tombstoned",
                lambda _v: TOMBSTONED,
            )
        )
        if "fact_id" in columns:
            checks.append(
                Check(
                    "expect_column_values_to_not_be_in_set",
                    "fact_id",
                    {"value_set": sorted(map(str, tombstones.fact_ids))},
                    "fact not tombstoned",
                    lambda _v: TOMBSTONED,
                )
            )
        if "doc_id" in columns:
            checks.append(
                Check(
                    "expect_column_values_to_not_be_in_set",
                    "doc_id",
                    {"value_set": sorted(map(str, getattr(tombstones, "doc_ids", None) or ()))},
                    "document not tombstoned",
                    lambda _v: TOMBSTONED,
                )
            )
        checks.append(
            Check(
                "expect_column_values_to_not_be_in_set",
                "subject_id",
                {"value_set": sorted(map(str, tombstones.subject_ids))},
                "subjects not tombstoned",
                lambda _v: TOMBSTONED,
                frame=SUBJECT_LINKS,
            )
        )
    return checks


def _frames(
    rows: list[dict[str, Any]], positions: list[int], cfg: AdmissionConfig, columns: set[str]
) -> tuple[dict[str, Any], dict[int, list[str]]]:
    """Validation frames (rows + exploded subject links) and reasons found before GX (non-string text)."""
    import pandas as pd

    pre: dict[int, list[str]] = {}
    wanted = list(dict.fromkeys([*cfg.required_columns, "id", "license", "fact_id", "doc_id", *cfg.text_columns]))
    data: dict[str, list[Any]] = {ROW_KEY: positions}
    for col in wanted:
        if col not in columns and col not in cfg.required_columns and col != "id":
            continue
        values: list[Any] = []
        for pos in positions:
            value = plain(rows[pos].get(col))
            if col in cfg.text_columns and value is not None and not isinstance(value, str):
                pre.setdefault(pos, []).append(f"{col} is not a string (got {type(value).__name__})")
                value = ""
            elif col in ("id", "fact_id", "doc_id", "license") and value is not None:
                value = str(value)
            elif isinstance(value, list | dict):
                value = json.dumps(value, sort_keys=True, default=str)  # only nullness matters for other columns
            values.append(value)
        data[col] = values
    links: dict[str, list[Any]] = {ROW_KEY: [], "subject_id": []}
    for pos in positions:
        # Both the list column and a single `subject_id` column link a row to a subject.
        subjects = _subject_list(rows[pos].get("subject_ids")) + _subject_list(rows[pos].get("subject_id"))
        for sid in dict.fromkeys(subjects):
            links[ROW_KEY].append(pos)
            links["subject_id"].append(sid)
    frames = {
        ROWS: pd.DataFrame(data, dtype=object).astype({ROW_KEY: "int64"}),
        SUBJECT_LINKS: pd.DataFrame(links, dtype=object).astype({ROW_KEY: "int64"}),
    }
    return frames, pre


def _expectation_summary(outcome: CheckOutcome) -> dict[str, Any]:
    check = outcome.check
    return {
        "name": check.name,
        "column": check.column,
        "description": check.description,
        "success": bool(outcome.success),
        "unexpected_count": int(outcome.unexpected_count),
    }


def admit_batch(
    rows: list[dict[str, Any]],
    cfg: AdmissionConfig,
    tombstones: TombstoneSet | None = None,
    batch_name: str = "batch",
) -> AdmissionResult:
    """Validate a batch with a GX suite built from the config and split it row by row.

    Every input row comes back exactly once, in input order within each list. Quarantined rows keep all their
    fields and gain `quarantine_reasons`; rows without an id get `<batch_name>#row<n>` so they can be addressed.
    """
    start = time.perf_counter()
    rows = list(rows)
    for pos, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"batch '{batch_name}' row {pos} is a {type(row).__name__}; every row must be a dict")
    reasons: dict[int, list[str]] = {pos: [] for pos in range(len(rows))}
    parsed: list[int] = []
    for pos, row in enumerate(rows):
        if "_parse_error" in row:
            reasons[pos].append(UNPARSEABLE)
        else:
            parsed.append(pos)
    columns = {key for pos in parsed for key in rows[pos]}
    suite_name = f"admission-{cfg.fingerprint()[:12]}"
    checks = build_checks(cfg, columns, tombstones)
    frames, pre = _frames(rows, parsed, cfg, columns)
    for pos, found in pre.items():
        reasons[pos].extend(found)
    outcomes = run_checks(frames, checks, suite_name)
    for outcome in outcomes:
        for pos in outcome.rows:
            value = rows[pos].get(outcome.check.column)
            reason = outcome.check.reason(value)
            if reason not in reasons[pos]:
                reasons[pos].append(reason)

    admitted: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    for pos, row in enumerate(rows):
        out = dict(row)
        if out.get("id") is None:
            out["id"] = f"{batch_name}#row{pos}"
        if reasons[pos]:
            out["quarantine_reasons"] = reasons[pos]
            quarantined.append(out)
        else:
            admitted.append(out)
    counts = {"rows": len(rows), "admitted": len(admitted), "quarantined": len(quarantined)}
    return AdmissionResult(
        admitted=admitted,
        quarantined=quarantined,
        expectations=[_expectation_summary(o) for o in outcomes],
        suite_name=suite_name,
        batch_hash=batch_hash(rows),
        seconds=time.perf_counter() - start,
        batch_name=batch_name,
        counts=counts,
    )
