"""Urgent requests do not wait for the next cycle: an unlearning-only candidate, gated and approved like any other."""

from __future__ import annotations

import time
from typing import Any

from pipelines.artifacts import load_model, store_model
from pipelines.cycle import evaluation, governance
from pipelines.cycle.stages import champion_manifest
from pipelines.forget.model_side import apply_forgetting
from pipelines.workspace import Workspace
from policies import Policy


def urgent_cycle(ws: Workspace, policy: Policy, request_id: str, embedder, run_id: str | None = None,
                 progress: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    champion = champion_manifest(ws)
    model, tokenizer = load_model(ws, champion.model)
    model, records = apply_forgetting(ws, policy, model, tokenizer, [ws.requests.get(request_id)], progress)
    cycle = f"forget-{request_id}"
    cmodel = {"cycle": cycle, "batch": "", "champion": champion.release_id, "adapter": None,
              "model": store_model(ws, model, tokenizer), "edits": [], "unlearning": records, "honoured": [request_id]}
    cindex = {"index_snapshot": champion.index_snapshot}
    result = evaluation.evaluate(ws, policy, {"history": [], "adapter": None}, cmodel, cindex, embedder, run_id=run_id)
    decision = governance.release_stage(ws, policy, result, run_id=run_id)
    return {**decision, "passed": result["passed"], "metrics": result["metrics"], "seconds": round(time.perf_counter() - t0, 3)}
