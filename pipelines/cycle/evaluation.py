"""Measure a candidate and its champion on the same sets, apply the policy's gates, register the candidate."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.card import render_card
from evals.continual import stability_summary
from evals.gates import decide
from evals.suites import EvalSets, run_suites
from pipelines.cycle.artifacts import load_index, load_model
from pipelines.cycle.knowledge import current_facts, qa, sample, world_for
from pipelines.cycle.stages import champion_manifest, effective_policy, forget_set, known_by, retention_rows
from pipelines.workspace import Workspace
from policies import Policy


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_sets(ws: Workspace, policy: Policy, batch: str, champ_model, tokenizer, honoured: list[str]) -> EvalSets:
    """The sets every candidate of this cycle is judged on; none of them holds tombstoned data."""
    world = world_for(policy.world.seed, policy.world.n_subjects)
    batch_rows = [r for r in ws.data.rows("admitted", batch) if r.get("prompt") and r.get("target")]
    retention = retention_rows(ws, policy, batch, champ_model, tokenizer, policy.evaluation.retention_sample)
    edited_relations = {r["relation"] for r in batch_rows if r.get("previous_target")}
    batch_subjects = {s for r in batch_rows for s in r.get("subject_ids", [])}
    neighbours = [r for r in current_facts(ws.data.rows("admitted")).values()
                  if r.get("relation") in edited_relations and not batch_subjects & set(r.get("subject_ids", []))]
    locality = known_by(champ_model, tokenizer, sample(neighbours, 100, seed=1)) if edited_relations else []
    forget = [q for rid in honoured for q in forget_set(ws.requests.get(rid))]
    return EvalSets(
        new_facts=[qa(r) for r in batch_rows],
        paraphrases=[qa(r, world, template=2) for r in batch_rows],
        retention=[qa(r) for r in retention],
        forget=forget,
        locality=[qa(r) for r in locality],
        general_text=sample(list(world.general_text), 200, seed=2),
        rag_queries=[qa(r, world, template=1) for r in batch_rows],
    )


def evaluate(ws: Workspace, policy: Policy, updated: dict[str, Any], cmodel: dict[str, Any], cindex: dict[str, Any],
             embedder, run_id: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    batch = cmodel["batch"]
    eff = effective_policy(ws, policy, batch)
    champion = champion_manifest(ws)
    champ_model, tokenizer = load_model(ws, champion.model)
    sets = build_sets(ws, eff, batch, champ_model, tokenizer, cmodel["honoured"])
    cand_model, _ = load_model(ws, cmodel["model"])
    cand = run_suites(cand_model, tokenizer, sets, index=load_index(ws, cindex["index_snapshot"]), embedder=embedder)
    champ = run_suites(champ_model, tokenizer, sets, index=load_index(ws, champion.index_snapshot), embedder=embedder)
    decision = decide(cand.metrics, eff.gates, champ.metrics)
    stability = stability_summary(updated.get("history", []), champ.metrics.get("retention"), cand.metrics.get("new_fact_recall"))

    parent = champion
    batch_rows = ws.data.rows("admitted", batch)
    lineage = {
        "subject_ids": sorted(set(parent.lineage.get("subject_ids", [])) | {s for r in batch_rows for s in r.get("subject_ids", [])}),
        "row_ids": sorted(set(parent.lineage.get("row_ids", [])) | {r["id"] for r in batch_rows}),
    }
    card = {
        "release_id": f"candidate of {cmodel['cycle']} (child of {champion.release_id})",
        "cycle": cmodel["cycle"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"data": ws.data.snapshot("admitted"), "model": cmodel["model"], "champion": champion.release_id,
                     "policy": eff.label, "code": code_version(), "index": cindex["index_snapshot"]},
        "metrics": cand.metrics,
        "champion_metrics": champ.metrics,
        "set_sizes": {k: len(v) for k, v in vars(sets).items()},
        "decision": decision.model_dump() if hasattr(decision, "model_dump") else _as_dict(decision),
        "stability": stability,
        "notes": f"{len(cmodel['edits'])} edits, {len(cmodel['honoured'])} forget requests honoured",
    }
    with tempfile.TemporaryDirectory(dir=ws.work_dir) as tmp:
        render_card(card, Path(tmp))
        card_digest = ws.store.put_dir(Path(tmp))
        release = ws.registry.create(
            {
                "parent": champion.release_id,
                "base_model": champion.base_model,
                "model": cmodel["model"],
                "adapters": [*champion.adapters, *([{"digest": updated["adapter"], "method": updated.get("method"),
                                                      "cycle": cmodel["cycle"]}] if updated.get("adapter") else [])],
                "edits": [*champion.edits, *cmodel["edits"]],
                "unlearning": [*champion.unlearning, *cmodel["unlearning"]],
                "tombstones_honoured": sorted(set(champion.tombstones_honoured) | set(cmodel["honoured"])),
                "index_snapshot": cindex["index_snapshot"],
                "policy_version": eff.label,
                "data_snapshots": {"admitted": ws.data.snapshot("admitted"), "batch": batch},
                "lineage": lineage,
                "evaluation_card": card_digest,
                "cycle": cmodel["cycle"],
            },
            actor=f"cycle:{cmodel['cycle']}",
            reason="candidate measured",
        )
        cards_dir = ws.home / "cards" / release.release_id
        shutil.rmtree(cards_dir, ignore_errors=True)
        shutil.copytree(tmp, cards_dir)
    failed = [v for v in card["decision"]["verdicts"] if not v["passed"]]
    ws.log.append("system:gates", "gates.passed" if decision.passed else "gates.failed", release.release_id,
                  reason="; ".join(f"{v['metric']} {v['value']} vs {v['threshold']}" for v in failed) or "all gates passed",
                  run_id=run_id, details={"metrics": cand.metrics})
    if not decision.passed:
        ws.registry.set_status(release.release_id, "rejected", "system:gates",
                               "failed gates: " + ", ".join(v["metric"] for v in failed), run_id=run_id)
    return {
        "cycle": cmodel["cycle"],
        "release_id": release.release_id,
        "passed": decision.passed,
        "metrics": cand.metrics,
        "champion_metrics": champ.metrics,
        "verdicts": card["decision"]["verdicts"],
        "card_dir": str(cards_dir),
        "card_digest": card_digest,
        "card_md": (cards_dir / "card.md").read_text(),
        "honoured": cmodel["honoured"],
        "n_facts_changed": len([r for r in batch_rows if r.get("prompt")]),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _as_dict(obj) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else dict(obj)
