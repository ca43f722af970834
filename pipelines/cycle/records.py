"""The typed records one stage of a cycle hands to the next: artifact references and counts, never models.

Every record names its cycle, batch and the champion it started from, so a stage can refuse a record from another
cycle and a person reading an asset's output sees what it was built on. Unknown fields are errors: a stage that
starts returning something new must say so here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cycle: str
    batch: str
    champion: str | None
    seconds: float = 0.0

    def carry(self) -> dict[str, Any]:
        """The identity fields every following stage repeats."""
        return {"cycle": self.cycle, "batch": self.batch, "champion": self.champion}


class Admitted(StageRecord):
    batch_file: str
    policy: str
    admitted: int
    evaluation_rows: dict[str, int]
    quarantined: int
    quarantine_reasons: dict[str, int]
    expectations_md: str
    batch_hash: str
    data_snapshot: str
    forget_requests_scrubbed: list[str]

    @property
    def has_new_data(self) -> bool:
        """A batch with no admitted row builds no candidate: there is nothing to learn, index or judge."""
        return self.admitted > 0


class Selected(StageRecord):
    method: str
    n_candidates: int
    n_samples: int
    n_instructions: int
    n_documents: int
    n_replay: int
    n_known_kept: int
    n_pruned: int
    n_edits: int
    prune_reasons: dict[str, int]
    stats: dict[str, Any]
    n_general: int = 0
    replay_tokens: int | None = None
    general_tokens: int = 0


class Updated(StageRecord):
    """The champion plus this cycle's adapter, merged; `adapter` is None when there was nothing to train."""

    method: str | None
    params: dict[str, Any]
    adapter: str | None
    model: str
    n_instructions: int
    n_documents: int
    history: list[dict[str, Any]]
    stats: dict[str, Any]
    n_general: int = 0


class EditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    row_id: str
    fact_id: str | None
    method: str
    success: bool


class CandidateModel(StageRecord):
    """The model to be judged: champion + adapter, then edits, then pending forget requests."""

    adapter: str | None
    adapter_method: str | None
    model: str
    edits: list[EditRecord]
    unlearning: list[dict[str, Any]]
    honoured: list[str]
    intermediates: list[str] = Field(default_factory=list)  # other model folders stored on the way (pre-edit)


class CandidateIndex(StageRecord):
    index_snapshot: str
    added: int
    updated: int
    unchanged: int
    removed: int
    n_docs: int
    fingerprint: str


class Measurement(StageRecord):
    """Everything measured on a candidate and its champion on the same sets, and the rendered card (in the store,
    not yet a release). Deciding is `pipelines.cycle.verdict.judge`; registering is the release step."""

    policy: str
    model: str
    adapter: str | None
    adapter_method: str | None
    index_snapshot: str
    edits: list[EditRecord]
    unlearning: list[dict[str, Any]]
    honoured: list[str]
    metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None]
    missing: dict[str, str]  # metric -> why its evaluation set could be neither read nor derived
    forget_evidence: dict[str, dict[str, Any]]  # honoured forget request -> what its checks read of its scrub
    card: dict[str, Any]
    card_digest: str
    card_md: str
    intermediates: list[str] = Field(default_factory=list)


class ReleaseOutcome(BaseModel):
    """What the release step did: registered the candidate, then rejected it, promoted it or left it waiting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cycle: str
    release_id: str
    status: str
    champion: str | None
    passed: bool
    verdicts: list[dict[str, Any]]
    metrics: dict[str, float | None]
    card_dir: str
    waiting_for: str | None = None
    canary_recall: float | None = None
    rolled_back_to: str | None = None
    rollback_refused: str | None = None
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        """The verdict in one line, as a person reads it: what happened and, for a rejection, which gates failed."""
        if not self.passed:
            failed = [f"{v['metric']}: {v['reason']}" for v in self.verdicts if not v.get("passed")]
            return f"{self.release_id} rejected by its gates: " + "; ".join(failed)
        if self.status == "candidate":
            return f"{self.release_id} passed its gates and waits for {self.waiting_for or 'approval'}"
        return f"{self.release_id} passed its gates and is {self.status}"
