"""Measure a candidate and its champion on the same sets and render the evaluation card."""

from __future__ import annotations

import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.card import card_markdown_for_ui, render_card
from evals.continual import backward_transfer, lifetime_minima, stability_summary
from evals.names import STABILITY_METRICS
from evals.suites import EvalSets, run_suites
from pipelines.cycle.records import CandidateModel, Measurement
from pipelines.cycle.stages import champion_manifest, retention_rows
from pipelines.cycle.verdict import judge
from pipelines.deployment import evalsets
from pipelines.deployment.artifacts import load_index, load_model
from pipelines.deployment.workspace import Workspace
from pipelines.forget.model_side import forget_set
from pipelines.forget.reference import reference_forget_ll
from pipelines.forget.verify import gate_evidence, request_verdicts
from pipelines.governance.overrides import effective_policy, reviewed
from pipelines.governance.promotion import read_card
from pipelines.model.knowledge import current_facts, known_by, qa, sample
from pipelines.model.lm import prompt_format
from pipelines.model.training import instruction_pairs
from policies import Policy

PROBE_TRAIN_FACTS = 600  # measured: the probe needs ~500+ facts to read answers of held-out known facts


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Which metrics each evaluation set feeds: a set that is needed but missing fails these metrics' gates.
SET_METRICS = {"general": ("perplexity",), "unseen": ("forget_quality", "forget_mia_auc", "forget_probe_excess",
                                                                  "forget_probe_p"),
               "retention": ("retention",), "locality": ("locality",), "paraphrases": ("paraphrase_recall",),
               "instructions": ("instruction_score",)}
INSTRUCTION_SAMPLE = 200  # greedy generation per response: enough to measure, bounded in cost
NO_INSTRUCTIONS = ("no instruction rows in this batch: instruction_score is measured on the batch's own instruction "
                   "rows; fix: make the gate `required: false` if batches without instructions may pass")


def instruction_set(ws: Workspace, policy: Policy, batch: str, tokenizer) -> tuple[list[dict], str]:
    """The batch's instruction rows as rendered prompt and expected response (a sample when there are many),
    and the card's line saying where they came from and how they are scored."""
    pairs = instruction_pairs(ws.data.rows("admitted", batch), tokenizer)
    picked = sample(pairs, INSTRUCTION_SAMPLE, seed=policy.seed)
    of = f"{len(picked)} of {len(pairs)}" if len(picked) < len(pairs) else str(len(pairs))
    return picked, f"the batch's instruction rows ({of}), scored by {policy.evaluation.instruction_metric}"


class ChangedFacts:
    """The batch's facts and every forgotten one, for `fact_id in changed`: tombstones answer one value at a time
    (by hash), so they cannot be merged into a set of ids."""

    def __init__(self, batch_facts: set[Any], tombstones) -> None:
        self.batch_facts, self.tombstones = batch_facts, tombstones

    def __contains__(self, fact_id: object) -> bool:
        return fact_id in self.batch_facts or self.tombstones.has_fact(fact_id)


def build_sets(ws: Workspace, policy: Policy, batch: str, champ_model, tokenizer,
               honoured: list[str]) -> tuple[EvalSets, dict[str, str], dict[str, str]]:
    """The sets every candidate of this cycle is judged on (none holds tombstoned data), where each came from, and
    the gate message for each needed set that could be neither read nor derived."""
    batch_rows = [r for r in ws.data.rows("admitted", batch) if r.is_question]
    changed = ChangedFacts({r.fact_id for r in batch_rows}, ws.requests.tombstones())
    sources: dict[str, str] = {"new_facts": f"the batch's fact rows ({len(batch_rows)})"}
    missing: dict[str, str] = {}

    def use(name: str, resolved: evalsets.Resolved) -> list:
        sources[name] = resolved.source
        if resolved.missing:
            missing[name] = resolved.missing
        return resolved.items

    table_retention = evalsets.supplied(ws, "retention", changed)
    supplied_retention = table_retention.rows
    if supplied_retention:
        retention = known_by(champ_model, tokenizer, sample(supplied_retention, policy.evaluation.retention_sample,
                                                            seed=policy.seed))
        sources["retention"] = (f"table `retention`: the {len(retention)} of {len(supplied_retention)} rows "
                                f"the champion recalls{table_retention.note()}")
        if not retention:
            missing["retention"] = ("the champion recalls none of the supplied `retention` table's rows, so there is "
                                    "nothing to keep; fix: supply facts the deployed model knows")
    else:
        retention = retention_rows(ws, policy, batch, champ_model, tokenizer, policy.evaluation.retention_sample)
        prior = len([r for r in ws.data.rows("admitted") if r.is_question and r.fact_id not in changed])
        sources["retention"] = (f"derived: a sample of earlier admitted facts the champion recalls ({len(retention)})"
                                if retention else "none")
        if not retention and prior:
            missing["retention"] = evalsets.FIX["retention"]
    edited_relations = {r.relation for r in batch_rows if r.previous_target}
    locality: list[dict] = []
    if edited_relations:
        table_locality = evalsets.supplied(ws, "locality", changed)
        supplied_locality = table_locality.rows
        batch_subjects = {s for r in batch_rows for s in r.subject_ids}
        neighbours = supplied_locality or [
            r for r in current_facts(ws.data.rows("admitted")).values()
            if r.relation in edited_relations and not batch_subjects & set(r.subject_ids)]
        locality = known_by(champ_model, tokenizer, sample(neighbours, 100, seed=1))
        sources["locality"] = (f"table `locality` ({len(locality)} recalled){table_locality.note()}" if supplied_locality else
                               f"derived: known facts of the edited relations about other subjects ({len(locality)})")
        if not locality:
            sources["locality"], missing["locality"] = "none", evalsets.FIX["locality"]
    forget = [q for rid in honoured for q in forget_set(ws.requests.get(rid))]
    unseen, probe_train = [], []
    if forget:  # the comparison facts and the probe's training facts matter only when something is forgotten
        unseen = use("unseen", evalsets.unseen(ws))
        forget_ids = {q.get("fact_id") for q in forget}
        kept = [r for fid, r in sorted(current_facts(ws.data.rows("admitted")).items()) if fid not in forget_ids]
        probe_train = [qa(r) for r in known_by(champ_model, tokenizer, sample(kept, PROBE_TRAIN_FACTS, seed=3))]
        sources["forget"] = f"the honoured requests' plans ({len(forget)} facts)"
    instructions, source = instruction_set(ws, policy, batch, tokenizer)
    if instructions:
        sources["instructions"] = source
    else:
        missing["instructions"] = NO_INSTRUCTIONS
    sets = EvalSets(
        new_facts=[qa(r) for r in batch_rows],
        paraphrases=use("paraphrases", evalsets.paraphrases(batch_rows)),
        retention=[qa(r) for r in retention],
        forget=forget,
        locality=[qa(r) for r in locality],
        general_text=use("general", evalsets.general_text(ws)),
        rag_queries=[qa(r, template=1) for r in batch_rows],
        unseen=unseen,
        probe_train=probe_train,
        instructions=instructions,
    )
    sources["rag_queries"] = "the batch's facts, first paraphrase (else the prompt)"
    return sets, sources, {m: msg for name, msg in missing.items() for m in SET_METRICS[name]}


def release_history(ws: Workspace, champion, models: dict[str, Any], tokenizer, limit: int = 10) -> list[dict[str, Any]]:
    """Backward-transfer entries: each earlier release's new facts, recalled when released and by each model now.

    Facts since forgotten (tombstoned) or since changed by a later batch are left out: losing them is intended.
    """
    from pipelines.model.lm import exact_match

    tomb = ws.requests.tombstones()
    current = current_facts(ws.data.rows("admitted"))
    live_rows = {r["id"] for r in current.values()}
    entries: list[dict[str, Any]] = []
    release = champion
    while release is not None and len(entries) < limit:
        batch = (release.data_snapshots or {}).get("batch")
        if batch:
            card = read_card(ws, release)
            at_release = (card.get("metrics") or {}).get("new_fact_recall")
            rows = [r for r in ws.data.rows("admitted", batch)
                    if r.prompt and r.id in live_rows and not tomb.covers(r)]
            if rows and at_release is not None:
                entry = {"release_id": release.release_id, "batch": batch, "n": len(rows), "acc_at_release": at_release}
                for name, model in models.items():
                    entry[name] = float(exact_match(model, tokenizer, [r.prompt for r in rows], [r.target for r in rows]).mean())
                entries.append(entry)
        release = ws.registry.get(release.parent) if release.parent else None
    return entries


def ancestor_cards(ws: Workspace, release, limit: int = 20) -> list[dict[str, Any]]:
    """The cards of a release and its ancestors, newest first: what earlier updates recorded while training."""
    cards = []
    while release is not None and len(cards) < limit:
        cards.append(read_card(ws, release))
        release = ws.registry.get(release.parent) if release.parent else None
    return cards


def measure(ws: Workspace, policy: Policy, candidate: CandidateModel, index_snapshot: str, embedder,
            training_history: list[dict[str, Any]] | None = None,
            tasks_before: dict[str, float] | None = None) -> Measurement:
    """Every suite on the candidate and on its champion, on the same sets; the card rendered into the store.

    Nothing is registered or decided here: the release step does that with the measurement this returns.
    """
    t0 = time.perf_counter()
    eff = effective_policy(ws, policy, candidate.batch)
    champion = ws.registry.get(candidate.champion) if candidate.champion else champion_manifest(ws)
    champ_model, tokenizer = load_model(ws, champion.model)
    sets, sources, missing = build_sets(ws, eff, candidate.batch, champ_model, tokenizer, candidate.honoured)
    cand_model, _ = load_model(ws, candidate.model)
    ref_ll, reference = reference_forget_ll(ws, eff, sets.forget)
    ref_auc = reference.get("reference_mia_auc")
    scorer = eff.evaluation.instruction_metric
    cand = run_suites(cand_model, tokenizer, sets, index=load_index(ws, index_snapshot), embedder=embedder,
                      reference_forget_ll=ref_ll, reference_mia_auc=ref_auc, instruction_metric=scorer)
    champ = run_suites(champ_model, tokenizer, sets, index=load_index(ws, champion.index_snapshot), embedder=embedder,
                       reference_forget_ll=ref_ll, reference_mia_auc=ref_auc, instruction_metric=scorer)
    history = release_history(ws, champion, {"acc_now": cand_model, "champion_now": champ_model}, tokenizer)
    cand.metrics["backward_transfer"] = backward_transfer(history)
    champ.metrics["backward_transfer"] = backward_transfer(
        [{"acc_at_release": h["acc_at_release"], "acc_now": h["champion_now"]} for h in history])
    stability = stability_summary(training_history or [], champ.metrics.get("retention"),
                                  cand.metrics.get("new_fact_recall"), tasks_before,
                                  lifetime_minima(ancestor_cards(ws, champion)))
    for name in STABILITY_METRICS:  # gateable like any metric (an unobserved update reports none: a gate on it fails)
        if stability.get(name) is not None:
            cand.metrics[name] = stability[name]
    evidence = {rid: gate_evidence(ws.requests.get(rid).evidence) for rid in candidate.honoured}
    measured = Measurement(
        **candidate.carry(), policy=eff.label, model=candidate.model, adapter=candidate.adapter,
        adapter_method=candidate.adapter_method, index_snapshot=index_snapshot, edits=candidate.edits,
        unlearning=candidate.unlearning, honoured=candidate.honoured, metrics=cand.metrics,
        champion_metrics=champ.metrics, missing=missing, forget_evidence=evidence, card={}, card_digest="", card_md="",
        intermediates=candidate.intermediates)
    decision = judge(measured, eff)
    request_checks, _ = request_verdicts(eff, cand.metrics, evidence)
    card = {
        "release_id": f"candidate of {candidate.cycle} (child of {champion.release_id})",
        "cycle": candidate.cycle,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"data": ws.data.snapshot("admitted"), "model": candidate.model, "champion": champion.release_id,
                     "policy": eff.label, "code": code_version(), "index": index_snapshot},
        "metrics": cand.metrics,
        "champion_metrics": champ.metrics,
        "set_sizes": {k: len(v) for k, v in vars(sets).items()},
        "set_sources": sources,
        "prompt_format": prompt_format(tokenizer),
        "decision": decision.model_dump(),
        "stability": stability,
        "history": history,
        "forgetting": _forgetting(cand, champ, reference, request_checks) if candidate.honoured else {},
        "batch_overrides": (lambda o: o.model_dump() if o else None)(reviewed(ws, candidate.batch)),
        "notes": f"{len(candidate.edits)} edits, {len(candidate.honoured)} forget requests honoured",
    }
    with tempfile.TemporaryDirectory(dir=ws.work_dir) as tmp:
        render_card(card, Path(tmp))
        card_md = card_markdown_for_ui(Path(tmp))
        digest = ws.store.put_dir(Path(tmp))
    return measured.model_copy(update={"card": card, "card_digest": digest, "card_md": card_md,
                                       "seconds": round(time.perf_counter() - t0, 3)})


def _forgetting(cand, champ, reference: dict[str, Any], checks: dict[str, dict[str, bool]]) -> dict[str, Any]:
    """The card's forgetting section: before (champion) and after (candidate), the comparison used, per-request checks."""
    keys = ("forget_recall", "forget_log_likelihood", "forget_quality", "forget_mia_auc", "forget_mia_reference",
            "forget_probe_excess", "forget_probe_p")

    def side(results) -> dict[str, Any]:
        probe = (results.details.get("forgetting") or {}).get("probe") or {}
        return {**{k: results.metrics.get(k) for k in keys}, "probe_forget_accuracy": probe.get("forget_accuracy"),
                "probe_unseen_accuracy": probe.get("unseen_accuracy")}

    detail = cand.details.get("forgetting") or {}
    return {
        "comparison": (detail.get("forget_quality") or {}).get("comparison"),
        "reference": reference,
        "before": side(champ),
        "after": side(cand),
        "details": detail,
        "requests": checks,
    }
