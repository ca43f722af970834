"""Row-level admission: every row of a batch is either admitted or quarantined with the reasons why."""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipelines.core.identifiers import id_problem
from pipelines.core.rows import (
    KINDS,
    QUESTION_KINDS,
    ContractRow,
    RowError,
    as_row,
    contract_disagreements,
)
from pipelines.data.admission.config import AdmissionConfig
from pipelines.data.admission.io import plain
from pipelines.data.admission.suite import ROW_KEY, ROWS, SUBJECT_LINKS, Check, CheckOutcome, run_checks
from pipelines.state.tables import id_list

UNPARSEABLE = "unparseable"
# The data contract's row kinds: four that change the model or the index, four evaluation tables, and general text the
# update replays (policies/contract.json).
ROW_KINDS = KINDS
TOMBSTONED = "tombstoned"
DUPLICATE_ID = ("duplicate id: another row of the batch has this id; fix: give each row its own id (an evaluation "
                "row names a fact by fact_id, not by the fact's id)")


class TombstoneSet(Protocol):
    """What admission needs from the tombstone store: each kind of id (row, subject, fact, doc) as salted hashes,
    and the hash of a value. Admission compares hashes, so no forgotten id is ever needed in clear."""

    rows: frozenset[str]
    subjects: frozenset[str]
    facts: frozenset[str]
    docs: frozenset[str]

    def digest(self, kind: str, value: str) -> str: ...


@dataclass
class AdmissionResult:
    admitted: list[ContractRow]
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


# --- field types: computed in Python, validated by GX through `_type_ok__<field>` columns -------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _as_json_string(value: Any) -> str:
    """The value written as a JSON string, for fix hints: 42 -> "42", true -> "true"."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text, ensure_ascii=False)


def _text_problem(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    return f"{name} is not a string (got {_kind(value)})"


def _string_problem(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return f"{name} must be a string (got list); fix: write {_as_json_string(value[0])}"
    if isinstance(value, list | dict):
        return f"{name} must be a string (got {_kind(value)}); fix: write a single JSON string"
    return f"{name} must be a string (got {_kind(value)}); fix: write {_as_json_string(value)}"


def _id_problem(name: str, value: Any) -> str | None:
    if isinstance(value, str) and not value.strip():
        return f"{name} must be a non-empty string (got an empty string); fix: write a unique id or leave {name} out"
    return _string_problem(name, value)


def _list_problem(name: str, value: Any, non_empty: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        if isinstance(value, dict):
            return f'{name} must be a list of strings (got dict); fix: write a JSON array such as ["x-1"]'
        return f"{name} must be a list of strings (got {_kind(value)}); fix: write [{_as_json_string(value)}]"
    for index, item in enumerate(value):
        if not isinstance(item, str):
            fixed = ", ".join(_as_json_string(v) for v in value if v is not None and not isinstance(v, list | dict))
            return f"{name} must be a list of strings (got {_kind(item)} at index {index}); fix: write [{fixed}]"
        if non_empty and not item.strip():
            return f"{name} must not contain empty strings (index {index} is empty); fix: remove that entry"
    return None


def _subject_ids_problem(name: str, value: Any) -> str | None:
    return _list_problem(name, value, non_empty=True)


def _flag_problem(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dict):
        for key, flag in value.items():
            if not isinstance(flag, bool):
                return (
                    f"{name} must be a bool or a mapping of bools (got {_kind(flag)} for key '{key}'); "
                    "fix: write true or false for each key"
                )
        return None
    hint = "true" if str(value).strip().lower() in ("1", "true", "yes") else "false"
    return f"{name} must be a bool or a mapping of bools (got {_kind(value)}); fix: write {hint} (no quotes)"


@dataclass(frozen=True)
class FieldType:
    """What a field must hold; `problem` gives the reason for a bad value (None for a good or null one)."""

    expected: str
    problem: Callable[[str, Any], str | None]


TEXT_TYPE = FieldType("a string", _text_problem)
_STRING = FieldType("a string", _string_problem)
FIELD_TYPES: dict[str, FieldType] = {
    "id": FieldType("a non-empty string", _id_problem),
    "subject_ids": FieldType("a list of non-empty strings", _subject_ids_problem),
    "paraphrases": FieldType("a list of strings", _list_problem),
    "pii": FieldType("a bool or a mapping of bools", _flag_problem),
    **{
        name: _STRING
        for name in "source license fact_id doc_id subject_id relation subject previous_target kind".split()
    },
}


def _type_check(name: str, ftype: FieldType) -> Check:
    def reason(value: Any) -> str:
        return ftype.problem(name, plain(value)) or f"{name} must be {ftype.expected}"

    return Check(
        "expect_column_values_to_be_in_set",
        f"_type_ok__{name}",
        {"value_set": [True]},
        f"{name} is {ftype.expected}",
        reason,
        row_field=name,
        derive=lambda value: ftype.problem(name, value) is None,
    )


# --- payment cards: a Luhn test over digit runs, validated by GX through `_pii_card__<column>` columns -------------

_DIGIT_RUN = re.compile(r"(?<!\d)\d+(?:[ -]\d+)*")
_SEPARATOR = re.compile(r"[ -]")
_CARD_DIGITS = (13, 19)
_MIN_GROUP = 3  # card numbers are printed in groups of 3-6 digits; shorter groups are lists of small numbers


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _run_has_card(run: str) -> bool:
    """Any span of whole digit groups of a run that is 13-19 digits long and Luhn-valid."""
    groups = _SEPARATOR.split(run)
    lo, hi = _CARD_DIGITS
    if len(groups) == 1:
        return lo <= len(run) <= hi and _luhn_ok(run)
    for first in range(len(groups)):
        digits = ""
        for group in groups[first:]:
            if len(group) < _MIN_GROUP:
                break
            digits += group
            if len(digits) > hi:
                break
            if len(digits) >= lo and _luhn_ok(digits):
                return True
    return False


def contains_payment_card(text: str) -> bool:
    """True when `text` holds a Luhn-valid 13-19 digit number, written plain or grouped by single spaces/dashes."""
    return any(_run_has_card(m.group()) for m in _DIGIT_RUN.finditer(text) if len(m.group()) >= _CARD_DIGITS[0])


def _card_check(col: str) -> Check:
    return Check(
        "expect_column_values_to_be_in_set",
        f"_pii_card__{col}",
        {"value_set": [False]},
        f"{col} free of pii 'payment_card'",
        lambda _v, c=col: f"{c} matches pii pattern 'payment_card'",
        row_field=col,
        derive=lambda value: isinstance(value, str) and contains_payment_card(value),
    )


# --- forbidden characters: GX regex on text columns, `_chars_ok__<field>` columns for ids and sources ------------

CHARACTER_FIELDS = ("id", "source", "subject_ids", "subject_id")
_C0_NAMES = (
    "NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US"
).split()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _char_name(char: str) -> str:
    code = ord(char)
    if code < len(_C0_NAMES):
        return _C0_NAMES[code]
    if code == 0x7F:
        return "DEL"
    return f"U+{code:04X} {unicodedata.name(char, '')}".strip()


def forbidden_found(value: Any, pattern: str) -> list[str]:
    """Names of the forbidden characters in a string or list of strings, first occurrence first (at most 6)."""
    rx = re.compile(pattern)
    names: list[str] = []
    for text in _strings(value):
        for match in rx.finditer(text):
            found = match.group() or text[match.start() : match.start() + 1]
            label = _char_name(found) if len(found) == 1 else ascii(found)
            if label and label not in names:
                names.append(label)
            if len(names) >= 6:
                return names
    return names


def _chars_reason(name: str, pattern: str) -> Callable[[Any], str]:
    def reason(value: Any) -> str:
        found = ", ".join(forbidden_found(plain(value), pattern)) or "unprintable"
        return f"{name} contains forbidden control characters ({found}); fix: remove them"

    return reason


def _text_chars_check(col: str, pattern: str) -> Check:
    return Check(
        "expect_column_values_to_not_match_regex",
        col,
        {"regex": pattern},
        f"{col} free of forbidden characters",
        _chars_reason(col, pattern),
    )


def _field_chars_check(name: str, pattern: str) -> Check:
    rx = re.compile(pattern)
    return Check(
        "expect_column_values_to_be_in_set",
        f"_chars_ok__{name}",
        {"value_set": [True]},
        f"{name} free of forbidden characters",
        _chars_reason(name, pattern),
        row_field=name,
        derive=lambda value: not any(rx.search(text) for text in _strings(value)),
    )


# --- id shapes: paths, look-alikes and over-long ids, validated by GX through `_id_ok__<field>` columns ----------

ID_FIELDS = ("id", "subject_ids", "subject_id", "fact_id", "doc_id")


def _id_shape_problem(name: str, value: Any, forbidden: re.Pattern[str]) -> str | None:
    """The first id in the field that cannot be one; characters the forbidden-character check reports are skipped."""
    many = isinstance(value, list | tuple)
    for index, text in enumerate(value if many else [value]):
        if not isinstance(text, str) or not text.strip():
            continue  # the type check reports it
        problem = id_problem(forbidden.sub("", text))
        if problem:
            return f"{name}[{index}] {problem}" if many else f"{name} {problem}"
    return None


def _id_shape_check(name: str, pattern: str) -> Check:
    rx = re.compile(pattern)
    return Check(
        "expect_column_values_to_be_in_set",
        f"_id_ok__{name}",
        {"value_set": [True]},
        f"{name} is a plain id",
        lambda value: _id_shape_problem(name, plain(value), rx) or f"{name} is not a plain id",
        row_field=name,
        derive=lambda value: _id_shape_problem(name, value, rx) is None,
    )


# --- the suite -----------------------------------------------------------------------------------------------------


def _typed_fields(cfg: AdmissionConfig, columns: set[str]) -> list[tuple[str, FieldType]]:
    """Type rules for the fields this batch has: text columns are strings, the rest come from FIELD_TYPES."""
    present = columns | {"id"}
    typed = [(col, TEXT_TYPE) for col in cfg.text_columns if col in columns]
    typed += [(name, ft) for name, ft in FIELD_TYPES.items() if name in present and name not in cfg.text_columns]
    return typed


def _text_checks(cfg: AdmissionConfig, col: str) -> list[Check]:
    limit = cfg.max_text_chars
    checks = [
        Check(
            "expect_column_value_lengths_to_be_between",
            col,
            {"max_value": limit},
            f"{col} at most {limit} chars",
            lambda v, c=col, n=limit: f"{c} longer than {n} characters ({len(str(v))})",
        )
    ]
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
    if cfg.detect_payment_cards:
        checks.append(_card_check(col))
    checks.append(_text_chars_check(col, cfg.forbidden_characters))
    return checks


FACT_KINDS = QUESTION_KINDS


def derived_fact_id(prompt: str) -> str:
    """A fact's identity when its row names none: the question it answers. `prompt:` plus the first 16 hex digits of
    the SHA-256 of the prompt with Unicode compatibility forms folded, case folded and whitespace collapsed, so that
    replay, retention, locality, supersession (a later row asking the same question replaces the answer) and
    forgetting work on rows written without `fact_id`. A hash, never the prompt itself: ids appear in clear in
    tombstones and lineage."""
    normal = " ".join(unicodedata.normalize("NFKC", prompt).casefold().split())
    return "prompt:" + hashlib.sha256(normal.encode("utf-8")).hexdigest()[:16]


def _needs_fact_id(row: dict[str, Any]) -> bool:
    kind = row.get("kind") or ("fact" if row.get("prompt") and row.get("target") else None)
    prompt = row.get("prompt")
    return kind in FACT_KINDS and row.get("fact_id") in (None, "") and isinstance(prompt, str) and bool(prompt.strip())


def kind_requirements() -> dict[str, tuple[tuple[str, ...], ...]]:
    """The fields each row kind requires: per kind, alternatives of which one must be complete (a retention row is
    written out, prompt and target, or names an admitted fact by fact_id). Read from the typed records after checking
    that they say what the data contract's JSON Schema says (its `allOf` if/then rules), so admission enforces
    exactly what the documentation shows."""
    from importlib import resources  # the contract ships as data in the policies package; read, never imported

    from pipelines.core.rows import requirements

    contract = json.loads(resources.files("policies").joinpath("contract.json").read_text(encoding="utf-8"))
    if problems := contract_disagreements(contract):
        raise RuntimeError("policies/contract.json and pipelines/core/rows.py disagree; fix one to match the other:\n  "
                           + "\n  ".join(problems))
    return requirements()


def _kind_fields_check() -> Check:
    needed = kind_requirements()

    def absent(row: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
        return [f for f in fields if row.get(f) is None or (isinstance(row.get(f), str) and not row[f].strip())]

    def missing(row: dict[str, Any]) -> str:
        kind = row.get("kind")
        options = needed.get(kind, ()) if isinstance(kind, str) else ()
        gaps = [absent(row, option) for option in options]
        if not options or any(not gap for gap in gaps):
            return ""
        return " or ".join(", ".join(gap) for gap in gaps)

    def reason(row: dict[str, Any]) -> str:
        return (f"kind '{row.get('kind')}' requires {missing(row)} (policies/contract.json); fix: add "
                f"{missing(row)} to the row, or give it the kind it is")

    return Check("expect_column_values_to_be_in_set", "_kind_fields", {"value_set": [""]},
                 "fields each kind requires present", reason, row_field="kind", derive=missing, whole_row=True)


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
    checks.extend(_type_check(name, ftype) for name, ftype in _typed_fields(cfg, columns))
    if cfg.unique_ids:
        checks.append(Check("expect_column_values_to_be_unique", "id", {}, "id unique", lambda _v: DUPLICATE_ID))
    for col in cfg.text_columns:
        if col in columns:
            checks.extend(_text_checks(cfg, col))
    for name in CHARACTER_FIELDS:
        if (name in columns or name == "id") and name not in cfg.text_columns:
            checks.append(_field_chars_check(name, cfg.forbidden_characters))
    for name in ID_FIELDS:
        if (name in columns or name == "id") and name not in cfg.text_columns:
            checks.append(_id_shape_check(name, cfg.forbidden_characters))
    if "kind" in columns:
        checks.append(_kind_fields_check())
        shown_kinds = ", ".join(ROW_KINDS)
        checks.append(
            Check(
                "expect_column_values_to_be_in_set",
                "kind",
                {"value_set": list(ROW_KINDS)},
                "kind known",
                lambda v, s=shown_kinds: f"kind '{v}' is not part of the data contract; fix: use one of {s}",
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
        checks.extend(_tombstone_checks(columns, tombstones))
    return checks


def _tombstone_checks(columns: set[str], tombstones: TombstoneSet) -> list[Check]:
    """GX checks a derived column per kind: the value's salted hash, against the tombstones' hashes."""

    def hashed(kind: str):
        return lambda v: None if v is None else tombstones.digest(kind, str(v))

    def check(column: str, kind: str, hashes: frozenset[str], description: str, frame: str = ROWS) -> Check:
        return Check("expect_column_values_to_not_be_in_set", f"_tombstone_{kind}", {"value_set": sorted(hashes)},
                     description, lambda _v: TOMBSTONED, frame=frame, row_field=column, derive=hashed(kind))

    checks = [check("id", "row", tombstones.rows, "id not tombstoned")]
    if "fact_id" in columns:
        checks.append(check("fact_id", "fact", tombstones.facts, "fact not tombstoned"))
    if "doc_id" in columns:
        checks.append(check("doc_id", "doc", tombstones.docs, "document not tombstoned"))
    checks.append(check("subject_id", "subject", tombstones.subjects, "subjects not tombstoned", frame=SUBJECT_LINKS))
    return checks


def _frame_value(col: str, value: Any, cfg: AdmissionConfig) -> Any:
    """A row value as GX sees it: ids as strings, non-string text blanked (its type check reports it)."""
    if col in cfg.text_columns and value is not None and not isinstance(value, str):
        return ""
    if col in ("id", "fact_id", "doc_id", "license") and value is not None:
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)  # only nullness matters for other columns
    return value


def _frames(
    rows: list[dict[str, Any]], positions: list[int], cfg: AdmissionConfig, columns: set[str], checks: list[Check]
) -> dict[str, Any]:
    """Validation frames: rows (with the derived columns the checks need) and exploded subject links."""
    import pandas as pd

    wanted = list(dict.fromkeys([*cfg.required_columns, "id", "license", "kind", "fact_id", "doc_id", *cfg.text_columns]))
    data: dict[str, list[Any]] = {ROW_KEY: positions}
    for col in wanted:
        if col not in columns and col not in cfg.required_columns and col != "id":
            continue
        data[col] = [_frame_value(col, plain(rows[pos].get(col)), cfg) for pos in positions]
    for check in checks:
        if check.derive is not None and check.frame == ROWS and check.column not in data:
            derive, name = check.derive, check.field_name
            data[check.column] = [derive(plain(rows[pos] if check.whole_row else rows[pos].get(name)))
                                  for pos in positions]
    links: dict[str, list[Any]] = {ROW_KEY: [], "subject_id": []}
    for pos in positions:
        # Both the list column and a single `subject_id` column link a row to a subject.
        subjects = id_list(rows[pos].get("subject_ids")) + id_list(rows[pos].get("subject_id"))
        for sid in dict.fromkeys(subjects):
            links[ROW_KEY].append(pos)
            links["subject_id"].append(sid)
    for check in checks:  # a derived column over the links (a subject id's hash)
        if check.derive is not None and check.frame == SUBJECT_LINKS and check.column not in links:
            links[check.column] = [check.derive(sid) for sid in links["subject_id"]]
    return {
        ROWS: pd.DataFrame(data, dtype=object).astype({ROW_KEY: "int64"}),
        SUBJECT_LINKS: pd.DataFrame(links, dtype=object).astype({ROW_KEY: "int64"}),
    }


def _expectation_summary(outcome: CheckOutcome) -> dict[str, Any]:
    """Plain summary; `column` is the field a reviewer fixes, `gx_column` the derived column GX validated."""
    check = outcome.check
    summary = {
        "name": check.name,
        "column": check.field_name,
        "description": check.description,
        "success": bool(outcome.success),
        "unexpected_count": int(outcome.unexpected_count),
    }
    if check.derive is not None:
        summary["gx_column"] = check.column
    return summary


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
    rows = [r.to_json() if isinstance(r, ContractRow) else r for r in rows]
    for pos, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"batch '{batch_name}' row {pos} is a {type(row).__name__}; every row must be a dict")
    reasons: dict[int, list[str]] = {pos: [] for pos in range(len(rows))}
    parsed: list[int] = []
    for pos, row in enumerate(rows):
        if "_parse_error" in row:
            # The parser's own message says which line failed and why; "unparseable" stays first for counting.
            detail = str(row["_parse_error"] or "")
            reasons[pos].extend([UNPARSEABLE, detail] if detail else [UNPARSEABLE])
        else:
            parsed.append(pos)
    columns = {key for pos in parsed for key in rows[pos]}
    suite_name = f"admission-{cfg.fingerprint()[:12]}"
    checks = build_checks(cfg, columns, tombstones)
    outcomes = run_checks(_frames(rows, parsed, cfg, columns, checks), checks, suite_name)
    for outcome in outcomes:
        for pos in outcome.rows:
            value = rows[pos] if outcome.check.whole_row else rows[pos].get(outcome.check.field_name)
            reason = outcome.check.reason(value)
            if reason not in reasons[pos]:
                reasons[pos].append(reason)

    admitted: list[ContractRow] = []
    quarantined: list[dict[str, Any]] = []
    derived = 0
    for pos, row in enumerate(rows):
        out = dict(row)
        if out.get("id") is None:
            out["id"] = f"{batch_name}#row{pos}"
        if not reasons[pos]:
            if _needs_fact_id(out):
                out["fact_id"] = derived_fact_id(out["prompt"])
            try:  # the typed record is the last word: a shape the checks above do not cover (messages) is caught here
                typed = as_row(out)
            except RowError as exc:
                reasons[pos].append(str(exc))
            else:
                derived += "fact_id" in out and "fact_id" not in row
                admitted.append(typed)
                continue
        out["quarantine_reasons"] = reasons[pos]
        quarantined.append(out)
    counts = {"rows": len(rows), "admitted": len(admitted), "quarantined": len(quarantined),
              **({"fact_ids_derived": derived} if derived else {})}
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
