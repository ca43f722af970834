"""Urgent requests do not wait for the next cycle: an unlearning-only candidate, gated and approved like any other."""

from __future__ import annotations

from pipelines.artifacts import load_model, store_model
from pipelines.cycle import evaluation, release
from pipelines.cycle.records import CandidateModel, ReleaseOutcome
from pipelines.cycle.stages import champion_manifest
from pipelines.forget.model_side import apply_forgetting
from pipelines.workspace import Workspace
from policies import Policy


def urgent_cycle(ws: Workspace, policy: Policy, request_id: str, embedder, run_id: str | None = None,
                 progress: bool = False) -> ReleaseOutcome:
    champion = champion_manifest(ws)
    model, tokenizer = load_model(ws, champion.model)
    model, records = apply_forgetting(ws, policy, model, tokenizer, [ws.requests.get(request_id)], progress)
    candidate = CandidateModel(cycle=f"forget-{request_id}", batch="", champion=champion.release_id, adapter=None,
                               adapter_method=None, model=store_model(ws, model, tokenizer), edits=[],
                               unlearning=records, honoured=[request_id])
    measured = evaluation.measure(ws, policy, candidate, champion.index_snapshot, embedder)
    return release.release_stage(ws, policy, measured, run_id=run_id)
