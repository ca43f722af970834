"""Admission policy: which checks every incoming row must pass before it may be used for training or retrieval."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.core.identifiers import DEFAULT_FORBIDDEN_CHARACTERS

DEFAULT_PII_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    # Separators are required so that plain numbers (years, counts, ids) are not mistaken for phone numbers.
    "phone": r"(?<![\d-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\d-])",
    "us_ssn": r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])",
}


class AdmissionConfig(BaseModel):
    """Typed admission section of a policy; unknown keys are rejected so a typo never silently disables a check."""

    model_config = ConfigDict(extra="forbid")

    required_columns: list[str] = Field(default_factory=lambda: ["id", "text", "source", "license", "subject_ids"])
    max_text_chars: int = 400
    allowed_licenses: list[str] = Field(default_factory=lambda: ["cc-by-4.0", "cc0", "internal"])
    pii_patterns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PII_PATTERNS))
    unique_ids: bool = True
    # Free-text columns that get the length and PII checks when they occur in a batch (QA rows carry prompt/target).
    text_columns: list[str] = Field(default_factory=lambda: ["text", "prompt", "target"])
    # Luhn-valid 13-19 digit numbers in text columns; a regex alone cannot tell a card number from any long number.
    detect_payment_cards: bool = True
    # Regex of characters no text column, id, source or subject id may contain.
    forbidden_characters: str = DEFAULT_FORBIDDEN_CHARACTERS
    # A batch whose submission is not signed by a keyholder (`memgov submit --key`) is quarantined whole.
    require_signed_submission: bool = False

    @field_validator("required_columns", "text_columns")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v or not v.strip() or v.startswith("_")]
        if bad:
            raise ValueError(f"column names must be non-empty and must not start with '_' (reserved): {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"column names must be unique, got {value}")
        return value

    @field_validator("max_text_chars")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"max_text_chars must be at least 1, got {value}")
        return value

    @field_validator("allowed_licenses")
    @classmethod
    def _licences(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("allowed_licenses must name at least one licence (an empty list would reject every row)")
        return value

    @field_validator("pii_patterns")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not name.strip():
                raise ValueError("pii_patterns keys must be non-empty names")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pii_patterns['{name}'] is not a valid regular expression ({exc}): {pattern!r}"
                ) from exc
        return value

    @field_validator("forbidden_characters")
    @classmethod
    def _forbidden(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"forbidden_characters is not a valid regular expression ({exc}): {value!r}") from exc
        if compiled.search("") is not None:
            raise ValueError(
                f"forbidden_characters must not match the empty string (it would reject every row): {value!r}; "
                "fix: use a character class such as '[\\x00-\\x08]', or '(?!)' to forbid nothing"
            )
        return value

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> AdmissionConfig:
        """Validate a policy's raw admission section; the error lists every bad field with its message."""
        try:
            return cls(**(raw or {}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"invalid admission config: {problems}") from exc

    def fingerprint(self) -> str:
        """Stable hash of the config, so a suite name says exactly which checks ran."""
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()
