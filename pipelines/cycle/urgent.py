"""Model-side forgetting that does not wait for data: an unlearning-only candidate (the champion, its pending forget
requests applied), gated and approved like any other. An urgent request gets one at once; `memgov run` builds one
for every pending request when no batch is waiting, so a request never waits for data that may never come."""

from __future__ import annotations

from pipelines.cycle import evaluation, release_stage
from pipelines.cycle.records import CandidateModel, ReleaseOutcome
from pipelines.cycle.stages import champion_manifest
from pipelines.deployment.artifacts import load_model, store_model
from pipelines.deployment.workspace import Workspace
from pipelines.forget.model_side import apply_forgetting, pending_model_forgets
from pipelines.forget.scrub import scrub_complete
from policies import Policy


def waiting_requests(ws: Workspace) -> list:
    """Requests scrubbed from every store whose model-side forgetting no release carries yet."""
    return [r for r in pending_model_forgets(ws) if scrub_complete(r.evidence)]


def _cycle_name(request_ids: list[str]) -> str:
    more = f"+{len(request_ids) - 1}" if len(request_ids) > 1 else ""
    return f"forget-{request_ids[0]}{more}"


def unlearning_cycle(ws: Workspace, policy: Policy, request_ids: list[str], embedder, run_id: str | None = None,
                     progress: bool = False) -> ReleaseOutcome:
    """The champion with `request_ids` forgotten, measured and decided as a release."""
    if not request_ids:
        raise ValueError("an unlearning-only candidate needs at least one pending forget request")
    champion = champion_manifest(ws)
    model, tokenizer = load_model(ws, champion.model)
    requests = [ws.requests.get(rid) for rid in request_ids]
    model, records = apply_forgetting(ws, policy, model, tokenizer, requests, progress)
    candidate = CandidateModel(cycle=_cycle_name(request_ids), batch="", champion=champion.release_id, adapter=None,
                               adapter_method=None, model=store_model(ws, model, tokenizer), edits=[],
                               unlearning=records, honoured=list(request_ids))
    measured = evaluation.measure(ws, policy, candidate, champion.index_snapshot, embedder)
    return release_stage.release_stage(ws, policy, measured, run_id=run_id)


def urgent_cycle(ws: Workspace, policy: Policy, request_id: str, embedder, run_id: str | None = None,
                 progress: bool = False) -> ReleaseOutcome:
    return unlearning_cycle(ws, policy, [request_id], embedder, run_id=run_id, progress=progress)
