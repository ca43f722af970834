"""Forget requests as submitted by ops: validated up front so a bad request fails at the door, not mid-pipeline.

Every problem is reported at once, each with the field's name and how to fix it, because these requests are
often typed by hand under a legal deadline.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.core.identifiers import DEFAULT_FORBIDDEN_CHARACTERS, MAX_ID_CHARS, char_label, id_problem, name_problem

LEGAL_BASES = ("gdpr_art17", "ccpa_delete", "copyright", "contract_end", "safety", "other")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # never '..', never an option such as '-rf'
SELECTOR_FIELDS = ("row_ids", "subject_ids", "subject", "text_regex")

FIXES = {
    "request_id": "use 1-64 characters from letters, digits, '.', '_' and '-', starting with a letter or digit, "
                  "e.g. 'req-2025-0001'",
    "requester": "name who asked for the deletion (person or team id, at most 256 characters)",
    "reason": "say in words why the data must be forgotten (at most 4000 characters)",
    "legal_basis": f"use one of {', '.join(LEGAL_BASES)}",
    "deadline": "give a timezone-aware ISO time in the future, e.g. '2031-01-31T00:00:00+00:00'",
    "urgent": "use true or false",
    "selector": f"give a mapping with at least one of {', '.join(SELECTOR_FIELDS)}",
    "row_ids": "give a list of row id strings",
    "subject_ids": "give a list of subject id strings",
    "subject": "give the subject's name as a non-empty string",
    "text_regex": "give a regular expression in RE2 syntax (no backreferences or lookaround)",
}
MAX_REQUESTER = 256
MAX_REASON = 4000
MAX_IDS = 10_000
MAX_REGEX = 1000
MAX_DEADLINE_DAYS = 3660  # ten years: a longer deadline is a typo, not a plan
_FORBIDDEN = re.compile(DEFAULT_FORBIDDEN_CHARACTERS)  # what admission keeps out of every text column


def _no_forbidden(v: str, fix: str = "remove them") -> str:
    """Text fields refuse the characters admission refuses (NUL, ANSI escapes, C1, bidi overrides)."""
    found = list(dict.fromkeys(m.group() for m in _FORBIDDEN.finditer(v)))
    if found:
        raise ValueError(f"contains control characters ({', '.join(char_label(c) for c in found[:3])}); fix: {fix}")
    return v


def deadline_after(days: Any, name: str = "deadline_days") -> dt.datetime:
    """The deadline `days` from now. NaN, infinities and absurd spans are refused here, naming the field (`name`),
    because datetime arithmetic would raise on them without saying which input was wrong."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= MAX_DEADLINE_DAYS:
        raise ValueError(f"{name} must be a positive number of days (at most {MAX_DEADLINE_DAYS}), got {days!r}; "
                         "fix: give the days until the deadline, e.g. 30")
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


def compile_selector_regex(pattern: str):
    """A selector regex runs over every row of every store, so it runs in linear time (RE2) or not at all:
    a pattern like `(a+)+$` must not be able to stall a deletion that has a legal deadline."""
    import re2

    options = re2.Options()
    options.log_errors = False
    options.max_mem = 64 << 20
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(f"is not a linear-time (RE2) regular expression ({detail}); fix: drop backreferences "
                         "and lookaround, or select by subject or row ids instead") from None


def format_errors(what: str, exc: ValidationError, fields: dict[str, tuple[str, ...]], prefix: str = "") -> str:
    """One line per bad field: 'field: problem; fix: ...'. `fields` maps a model path to its allowed field names;
    `prefix` is the path of the model that failed inside the request (e.g. 'selector')."""
    lines = []
    for err in exc.errors():
        loc = [*([prefix] if prefix else []), *(str(p) for p in err["loc"])]
        name = ".".join(loc) or "(request)"
        parent = ".".join(loc[:-1])
        if err["type"] == "extra_forbidden":
            lines.append(f"{name}: unknown field; fields are {', '.join(fields.get(parent, ()))}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        fix = FIXES.get(loc[-1] if loc and not loc[-1].isdigit() else (loc[-2] if len(loc) > 1 else ""), "")
        lines.append(f"{name}: {msg}" + (f"; fix: {fix}" if fix and "fix:" not in msg else ""))
    return f"invalid {what}:\n  - " + "\n  - ".join(lines)


class Selector(BaseModel):
    """What to forget: explicit ids, a subject's name, or a regular expression over row text.

    Constructed alone it raises pydantic's ValidationError (a ValueError naming the field); inside a
    ForgetRequest its problems are listed with the request's."""

    model_config = ConfigDict(extra="forbid")
    row_ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    subject_ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    subject: str | None = Field(None, max_length=512)
    text_regex: str | None = Field(None, max_length=MAX_REGEX)

    @field_validator("row_ids", "subject_ids", mode="before")
    @classmethod
    def _not_a_string(cls, v: Any) -> Any:
        if isinstance(v, str):  # iterating it would tombstone its characters
            raise ValueError(f"is a string, not a list; fix: write [{v!r}]")
        return v

    @field_validator("row_ids", "subject_ids")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("contains an empty id; fix: remove empty strings from the list")
        for index, item in enumerate(v):  # the ids admission lets in; anything else would select nothing
            controls = [c for c in item[: MAX_ID_CHARS + 1] if unicodedata.category(c) == "Cc"]
            problem = (f"contains control characters ({char_label(controls[0])}); fix: remove them"
                       if controls and len(item) <= MAX_ID_CHARS else id_problem(item))
            if problem:
                raise ValueError(f"item {index} {problem}")
        return v

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty; fix: give the subject's name or leave the field out")
        return v if v is None else _no_forbidden(v)

    @field_validator("text_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            _no_forbidden(v, fix="write them as escapes such as \\x1b")
            compile_selector_regex(v)
        return v

    @classmethod
    def parse(cls, **fields: Any) -> Selector:
        """A selector on its own (the CLI's dry run), its problems listed like a request's: field, problem, fix."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise ValueError(format_errors("forget request", exc, _FIELD_SETS, prefix="selector")) from None

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if not (self.row_ids or self.subject_ids or self.subject or self.text_regex):
            raise ValueError(f"selects nothing; fix: set at least one of {', '.join(SELECTOR_FIELDS)}")
        return self


class ForgetRequest(BaseModel):
    """A request to forget data; `deadline` must lie in the future when it is submitted."""

    model_config = ConfigDict(extra="forbid")
    request_id: str
    requester: str = Field(max_length=MAX_REQUESTER)
    selector: Selector
    reason: str = Field(max_length=MAX_REASON)
    legal_basis: str
    deadline: dt.datetime
    urgent: bool = False

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ValueError(format_errors("forget request", exc, _FIELD_SETS)) from None

    @field_validator("request_id")
    @classmethod
    def _request_id(cls, v: str) -> str:
        if not _REQUEST_ID.fullmatch(v):  # `$` in match() would let a trailing newline through
            raise ValueError(f"{v!r} is not a valid request id")
        return v

    @field_validator("requester", "reason")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty")
        return v

    @field_validator("requester")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        problem = name_problem(v)  # the requester may not confirm or approve their own request: names must compare
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("reason")
    @classmethod
    def _readable(cls, v: str) -> str:
        return _no_forbidden(v)

    @field_validator("legal_basis")
    @classmethod
    def _basis(cls, v: str) -> str:
        if v not in LEGAL_BASES:
            raise ValueError(f"{v!r} is not a known legal basis")
        return v

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None or v.utcoffset() is None:
            raise ValueError("has no timezone")
        v = v.astimezone(dt.UTC)
        if v <= dt.datetime.now(dt.UTC):
            raise ValueError(f"{v.isoformat()} is not in the future")
        return v


_FIELD_SETS = {"": tuple(ForgetRequest.model_fields), "selector": SELECTOR_FIELDS}
