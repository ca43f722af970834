"""Process one forget request: plan, scrub every store, tombstone, taint, check the serving index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.cycle.artifacts import load_index, scrub_index_snapshots
from pipelines.forget.plan import resolve_selector
from pipelines.workspace import Workspace

ACTOR = "system:forget"


def scrub_inbox(inbox: Path, matches) -> dict[str, int]:
    """Raw batch files are a store too: rewrite each without the matching rows."""
    removed: dict[str, int] = {}
    for path in sorted(inbox.glob("*.jsonl")):
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                keep.append(line)
                continue
            if isinstance(row, dict) and matches(row):
                continue
            keep.append(line)
        if len(keep) != len(lines):
            removed[path.name] = len(lines) - len(keep)
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(k + "\n" for k in keep))
            tmp.replace(path)
    return removed


def index_returns_forgotten(ws: Workspace, plan, embedder, k: int = 3) -> list[str]:
    """Ask the serving index the forgotten facts' own questions; any forgotten document in the answers is a leak."""
    champion = ws.registry.champion()
    if champion is None or not plan.forget_qas or embedder is None:
        return []
    index = load_index(ws, ws.registry.get(champion).index_snapshot)
    hits = index.search([q["prompt"] for q in plan.forget_qas], embedder, k=k)
    return sorted({h.doc_id for row in hits for h in row if h.doc_id in plan.doc_ids or h.doc_id in plan.row_ids})


def _plain(selector) -> dict:
    return selector if isinstance(selector, dict) else selector.model_dump()


def process_request(ws: Workspace, request_id: str, embedder=None, dry_run: bool = False,
                    run_id: str | None = None) -> dict[str, Any]:
    """Idempotent: a request already past 'received' is reported, not processed again."""
    req = ws.requests.get(request_id)
    plan = resolve_selector(ws.data, req.selector)
    if dry_run:
        return {"request_id": request_id, "dry_run": True, "plan": plan.summary(),
                "rows": sorted(plan.row_ids), "facts": sorted(plan.fact_ids)}
    if req.state != "received":
        return {"request_id": request_id, "state": req.state, "already_processed": True}
    ws.requests.transition(request_id, "planned", {"plan": {**plan.summary(), "forget_qas": plan.forget_qas}},
                           note="selector resolved")
    ws.requests.add_tombstones(request_id, sorted(plan.row_ids), sorted(plan.subject_ids), sorted(plan.fact_ids),
                               sorted(plan.doc_ids))
    data_report = ws.data.scrub(plan.matches)
    index_report = scrub_index_snapshots(ws, plan.doc_ids | plan.row_ids, plan.subject_ids, plan.fact_ids)
    inbox_report = scrub_inbox(ws.inbox, plan.matches) if ws.inbox.exists() else {}
    tainted = ws.registry.mark_tainted(plan.row_ids, plan.subject_ids, request_id, ACTOR)
    leaks = index_returns_forgotten(ws, plan, embedder)
    evidence = {
        "scrub": {"data": data_report.as_dict(), "index": index_report, "inbox": inbox_report},
        "tainted_releases": tainted,
        "index_clean": not leaks,
        "index_leaks": leaks,
        "legal_holds": data_report.legal_holds + index_report["legal_holds"],
    }
    ws.log.append(ACTOR, "forget.scrubbed", request_id,
                  reason=f"{len(plan.row_ids)} rows, {len(plan.doc_ids)} documents removed; {len(tainted)} releases tainted"
                  + (f"; {len(evidence['legal_holds'])} object version(s) kept under legal hold (Object Lock)"
                     if evidence["legal_holds"] else ""),
                  run_id=run_id, details={"selector": ws.log.redact(json.dumps(_plain(req.selector), sort_keys=True)),
                                          "tables": plan.per_table, "index_clean": not leaks})
    if not plan.forget_qas:
        ws.requests.transition(request_id, "applied", evidence, note="no fact reached the model's training data")
        ws.requests.transition(request_id, "verified" if not leaks else "failed", {}, note="retrieval-side only")
    else:
        ws.requests.transition(request_id, "planned", evidence, note="scrubbed; model-side forgetting pending")
    return {"request_id": request_id, "state": ws.requests.get(request_id).state, **evidence, "plan": plan.summary()}


def retry_request(ws: Workspace, request_id: str, actor: str, reason: str) -> dict[str, Any]:
    """Put a failed request back in line for model-side forgetting (the next cycle, or now for urgent ones).

    Filing a new request would not do: its selector no longer matches anything (the data is already scrubbed),
    and the facts to forget are kept only in the failed request's plan.
    """
    actor, reason = actor.strip(), reason.strip()
    if not actor or not reason:
        raise ValueError("retry needs who retries (--by) and why (--reason)")
    req = ws.requests.get(request_id)
    if req.state != "failed":
        raise ValueError(f"request {request_id} is '{req.state}'; only a failed request can be retried")
    if not (req.evidence or {}).get("plan", {}).get("forget_qas"):
        raise ValueError(f"request {request_id} has no facts for the model to forget; its failure was not model-side "
                         "(see `memgov forget status`), so a retry would change nothing")
    ws.requests.transition(request_id, "planned", {"retries": [*(req.evidence or {}).get("retries", []),
                                                               {"by": actor, "reason": reason}]},
                           note=f"retried by {actor}: {reason}")
    ws.log.append(actor, "forget.retried", request_id, reason=reason)
    return {"request_id": request_id, "state": "planned", "urgent": req.urgent}
