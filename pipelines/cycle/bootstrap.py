"""First start of a deployment: build (or load) the base model, seed the data stores and the index, crown release r0001."""

from __future__ import annotations

from typing import Any

from pipelines.cycle.artifacts import save_index, store_model
from pipelines.cycle.knowledge import fact_row, world_for
from pipelines.lm import load_causal_lm
from pipelines.rag import DocumentIndex, Embedder
from pipelines.workspace import Workspace
from pipelines.world import write_inbox
from pipelines.world.basemodel import ensure_base_model
from policies import Policy

ACTOR = "system:bootstrap"


def base_model_path(ws: Workspace, policy: Policy, progress: bool = True) -> str:
    if policy.base_model.path:
        return policy.base_model.path
    cfg = policy.base_model.tiny.model_copy(update={"seed": policy.world.seed, "n_subjects": policy.world.n_subjects})
    return str(ensure_base_model(ws.models_cache, cfg, progress=progress))


def bootstrap(ws: Workspace, policy: Policy, embedder: Embedder | None = None, progress: bool = True) -> dict[str, Any]:
    """Idempotent: returns the existing base release when the deployment already has one."""
    existing = ws.registry.list()
    if existing:
        return {"release_id": existing[0].release_id, "created": False}
    embedder = embedder or Embedder()
    world = world_for(policy.world.seed, policy.world.n_subjects)
    path = base_model_path(ws, policy, progress)
    model, tokenizer = load_causal_lm(path)
    model_digest = store_model(ws, model, tokenizer)

    rows = [fact_row(f) for f in world.facts]
    ws.data.put_part("admitted", "initial", rows)
    ws.data.put_part("documents", "initial", world.documents)
    ws.data.put_part("replay", "initial", rows)
    # The demo world supplies its evaluation tables like any deployment: general text the model is never trained
    # on, and facts of the same kind it never saw (the comparison for forgetting).
    ws.data.put_part("eval_general", "initial", [{"id": f"general-{i:05d}", "kind": "general", "text": t}
                                                 for i, t in enumerate(world.general_text)])
    ws.data.put_part("eval_unseen", "initial", [{**fact_row(f, source="world-unseen"), "id": f"unseen-{f.fact_id}",
                                                 "kind": "unseen"} for f in world.unseen_facts])

    index = DocumentIndex(embedder.dim)
    index.upsert(world.documents, embedder)
    version = save_index(ws, index)

    release = ws.registry.create(
        {
            "parent": None,
            "base_model": path,
            "model": model_digest,
            "adapters": [],
            "edits": [],
            "unlearning": [],
            "tombstones_honoured": [],
            "index_snapshot": version,
            "policy_version": policy.label,
            "data_snapshots": {"admitted": ws.data.snapshot("admitted")},
            "lineage": {"subject_ids": sorted({s for r in rows for s in r["subject_ids"]}), "row_ids": [r["id"] for r in rows]},
            "evaluation_card": None,
            "cycle": "bootstrap",
        },
        actor=ACTOR,
        reason="base model and initial knowledge",
    )
    ws.registry.set_status(release.release_id, "approved", ACTOR, "the base model is the starting point")
    ws.registry.promote(release.release_id, ACTOR, "first champion", expected=None)
    return {"release_id": release.release_id, "created": True, "index_snapshot": version, "model": model_digest}


def stage_demo_batches(ws: Workspace, policy: Policy) -> list[str]:
    """Drop the demo world's update batches into the inbox (the demo's stand-in for arriving data)."""
    world = world_for(policy.world.seed, policy.world.n_subjects)
    ws.inbox.mkdir(parents=True, exist_ok=True)
    return [p.name for p in write_inbox(world, ws.inbox)]
