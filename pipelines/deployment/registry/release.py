"""Release manifests, their validation, and the status machine.

The manifest says what a release *is* (weights, adapters, edits, honoured tombstones, lineage) and never changes:
it is stored as a content-addressed blob. Status and approvals say what has been *decided* about it and live in a
separate mutable record, so deciding never rewrites the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

STATUSES = ("candidate", "approved", "champion", "retired", "rejected", "withdrawn", "tainted")
TRANSITIONS: dict[str, frozenset[str]] = {
    "candidate": frozenset({"approved", "rejected", "tainted"}),
    "approved": frozenset({"champion", "tainted"}),
    "champion": frozenset({"retired", "withdrawn", "tainted"}),
    "retired": frozenset({"champion", "withdrawn", "tainted"}),
    # Leaving 'rejected' is not a status change anyone may make: only Registry.waive, for gate rejections.
    "rejected": frozenset({"tainted"}),
    "withdrawn": frozenset({"tainted"}),  # failed its canary in service: never served again
    "tainted": frozenset(),
}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_transition(release_id: str, current: str, new: str) -> None:
    if new not in STATUSES:
        raise ValueError(f"unknown status {new!r}; statuses are {', '.join(STATUSES)}")
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (final)"
        raise ValueError(
            f"release {release_id}: cannot go from '{current}' to '{new}'; from '{current}' allowed: {allowed}"
        )


class Lineage(BaseModel):
    """Ids of what the weights were trained on, so a forget request can find every release it touches."""

    model_config = ConfigDict(extra="forbid")
    subject_ids: list[str] = Field(default_factory=list)
    row_ids: list[str] = Field(default_factory=list)


class ManifestFields(BaseModel):
    """The fields a caller supplies; the registry adds release_id, created_at and created_by."""

    model_config = ConfigDict(extra="forbid")
    parent: str | None = None
    base_model: str
    model: str
    adapters: list[dict[str, Any]] = Field(default_factory=list)
    edits: list[Any] = Field(default_factory=list)
    unlearning: list[Any] = Field(default_factory=list)
    tombstones_honoured: list[str] = Field(default_factory=list)
    index_snapshot: str = ""
    policy_version: str = ""
    data_snapshots: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    evaluation_card: str | None = None
    cycle: str = ""
    # Every other model or adapter folder the cycle stored on the way (the LoRA-merged model before edits and
    # unlearning, ...): named here so the tainted-weights scrub deletes them with the release's own weights.
    intermediates: list[str] = Field(default_factory=list)

    @field_validator("base_model")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name the base model (path or id)")
        return v

    @field_validator("model", "evaluation_card")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not _DIGEST.match(v):
            raise ValueError("must be a store digest 'sha256:<64 hex>' (use ArtifactStore.put_dir / put_bytes)")
        return v

    @field_validator("intermediates")
    @classmethod
    def _digests(cls, v: list[str]) -> list[str]:
        for digest in v:
            cls._digest(digest)
        return v


def validate_fields(raw: dict[str, Any]) -> ManifestFields:
    if not isinstance(raw, dict):
        raise ValueError("manifest_fields must be a dict of release manifest fields")
    try:
        return ManifestFields(**raw)
    except ValidationError as exc:
        known = ", ".join(ManifestFields.model_fields)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + (f"unknown field (fields are: {known})" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        raise ValueError(f"invalid release manifest: {problems}") from None


# `intermediates` is written only when there are some, so manifests stored before it existed still verify.
MANIFEST_KEYS = ("release_id", "created_at", "created_by",
                 *(k for k in ManifestFields.model_fields if k != "intermediates"))


@dataclass(frozen=True)
class Release:
    """A release as read from the registry: the immutable manifest plus its current status and approvals."""

    release_id: str
    created_at: str
    created_by: str
    parent: str | None
    base_model: str
    model: str
    adapters: list[dict]
    edits: list
    unlearning: list
    tombstones_honoured: list[str]
    index_snapshot: str
    policy_version: str
    data_snapshots: dict
    lineage: dict
    evaluation_card: str | None
    cycle: str
    manifest_digest: str
    status: str
    approvals: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    taint: list[dict] = field(default_factory=list)
    waivers: list[dict] = field(default_factory=list)
    log_head: dict | None = None  # {"seq", "hash"} of the change log when the release was registered
    intermediates: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> dict:
        anchor = {"log_head": self.log_head} if self.log_head is not None else {}
        extra = {"intermediates": self.intermediates} if self.intermediates else {}
        return {**{k: getattr(self, k) for k in MANIFEST_KEYS}, **extra, **anchor}
