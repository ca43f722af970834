"""The gate decision is a pure function of the measurement and the policy; the release step registers the candidate
and acts on that decision (a rejection is a recorded verdict with reasons, the champion untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.core.digests import canonical_json
from pipelines.cycle.records import Measurement
from pipelines.cycle.release_stage import release_stage
from pipelines.cycle.verdict import judge
from pipelines.deployment.workspace import Workspace
from pipelines.governance import approvals
from policies import load_policy, merge_overrides

POLICY = load_policy("default")
GOOD = {"new_fact_recall": 0.95, "retention": 0.97, "paraphrase_recall": 0.1, "locality": None, "perplexity": 4.0,
        "forget_recall": None, "rag_support": 0.9}
CHAMPION = {**GOOD, "new_fact_recall": 0.05, "perplexity": 3.5}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "home", store_url=str(tmp_path / "store"),
                        requests_url=f"sqlite:///{tmp_path / 'requests.db'}")
    model = ws.store.put_bytes(canonical_json({"kind": "memgov.dir/v1", "files": [], "tag": "weights"}))
    rid = ws.registry.create({"base_model": "tiny", "model": model, "cycle": "init"}, "system:init", "base").release_id
    ws.registry.set_status(rid, "approved", "system:init", "base")
    assert ws.registry.promote(rid, "system:init", "base", expected=None)
    return ws


def measured(ws: Workspace, tmp: Path, metrics: dict, **extra) -> Measurement:
    folder = tmp / "card"
    folder.mkdir(exist_ok=True)
    card = {"release_id": "candidate of b1 (child of r0001)", "metrics": metrics, "set_sizes": {"new_facts": 3},
            "decision": {}}
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "card.md").write_text("# card\n")
    fields = {"cycle": "b1", "batch": "b1", "champion": ws.registry.champion(), "policy": "default",
              "model": ws.registry.get(ws.registry.champion()).model, "adapter": None, "adapter_method": None,
              "index_snapshot": "none", "edits": [], "unlearning": [], "honoured": [], "metrics": metrics,
              "champion_metrics": CHAMPION, "missing": {}, "forget_evidence": {}, "card": card,
              "card_digest": ws.store.put_dir(folder), "card_md": "# card\n"}
    m = Measurement(**{**fields, **extra})
    card = {**card, "decision": judge(m, POLICY).model_dump()}  # as the evaluation step records it
    (folder / "card.json").write_text(json.dumps(card))
    return m.model_copy(update={"card": card, "card_digest": ws.store.put_dir(folder)})


def test_the_decision_depends_on_nothing_but_the_measurement_and_the_policy(ws, tmp_path):
    m = measured(ws, tmp_path, GOOD)
    assert judge(m, POLICY) == judge(m, POLICY) and judge(m, POLICY).passed
    stricter = merge_overrides(POLICY, {"gates": [{"metric": "retention", "min": 0.99}]}, "strict.yaml")
    assert not judge(m, stricter).passed, "the same measurement under another policy"
    assert ws.registry.list()[-1].release_id == "r0001", "judging registers nothing"


def test_a_needed_set_that_is_missing_fails_its_gate_with_the_fix(ws, tmp_path):
    fix = "no general set: supply policies' `eval.general` or admit rows of kind `general`"
    m = measured(ws, tmp_path, {**GOOD, "perplexity": None}, missing={"perplexity": fix})
    (verdict,) = [v for v in judge(m, POLICY).verdicts if v.metric == "perplexity"]
    assert not verdict.passed and verdict.reason == fix


def test_a_forget_request_whose_index_is_not_clean_blocks_the_candidate(ws, tmp_path):
    forgetting = {"forget_recall": 0.0, "forget_quality": 0.9, "forget_mia_auc": 0.5, "forget_mia_reference": 0.5,
                  "forget_probe_excess": 0.0}
    m = measured(ws, tmp_path, {**GOOD, **forgetting}, honoured=["req-1"], forget_evidence={"req-1": {"index_clean": False}})
    decision = judge(m, POLICY)
    (verdict,) = [v for v in decision.verdicts if v.metric == "forget_request:req-1"]
    assert not decision.passed and "index_clean" in verdict.reason
    clean = m.model_copy(update={"forget_evidence": {"req-1": {"index_clean": True}}})
    assert judge(clean, POLICY).passed


def test_a_candidate_that_fails_its_gates_is_registered_and_rejected_with_the_reasons(ws, tmp_path):
    outcome = release_stage(ws, POLICY, measured(ws, tmp_path, {**GOOD, "retention": 0.5}))
    assert (outcome.release_id, outcome.status, outcome.passed, outcome.champion) == ("r0002", "rejected", False, "r0001")
    assert ws.registry.status("r0002") == "rejected" and ws.registry.champion() == "r0001"
    (event,) = [e for e in ws.log.events() if e["action"] == "gates.failed"]
    assert event["object"] == "r0002" and event["reason"].startswith("retention 0.5 vs >= 0.88")
    assert (Path(outcome.card_dir) / "card.json").exists(), "the card is kept beside the home for the reviewer"
    assert ws.registry.get("r0002").parent == "r0001"


def test_a_passing_candidate_waits_for_a_person_or_is_promoted_where_the_policy_auto_approves(ws, tmp_path, monkeypatch):
    waiting = release_stage(ws, POLICY, measured(ws, tmp_path, GOOD))
    assert (waiting.status, waiting.waiting_for) == ("candidate", "approval")
    promoted: list[str] = []
    monkeypatch.setattr(approvals, "promote_with_canary",
                        lambda ws, policy, rid, actor, reason, run_id=None: promoted.append(rid) or
                        {"release_id": rid, "status": "champion", "champion": rid})
    auto = merge_overrides(POLICY, {"approval": {"mode": "auto"}}, "auto.yaml")
    outcome = release_stage(ws, auto, measured(ws, tmp_path, GOOD))
    assert promoted == [outcome.release_id] and outcome.status == "champion"


def test_a_release_outcome_reads_as_a_verdict():
    from pipelines.cycle.records import ReleaseOutcome

    failed = {"metric": "retention", "value": 0.91, "champion_value": 0.99, "threshold": ">= 0.97", "passed": False,
              "reason": "0.91 < 0.97"}
    ok = {**failed, "metric": "locality", "passed": True, "reason": "ok"}
    common = {"cycle": "c", "champion": "r0003", "metrics": {}, "card_dir": "/x"}
    rejected = ReleaseOutcome(release_id="r0004", status="rejected", passed=False, verdicts=[failed, ok], **common)
    assert rejected.summary == "r0004 rejected by its gates: retention: 0.91 < 0.97"
    waiting = ReleaseOutcome(release_id="r0005", status="candidate", passed=True, verdicts=[ok], **common)
    assert waiting.summary == "r0005 passed its gates and waits for approval"


def test_the_batch_counts_as_processed_only_once_its_outcome_is_recorded(ws, tmp_path):
    from pipelines.cycle.stages import PROCESSED_KEY

    assert "b1" not in ws.store.read_json(PROCESSED_KEY, default=[])
    release_stage(ws, POLICY, measured(ws, tmp_path, {**GOOD, "retention": 0.5}))
    assert ws.store.read_json(PROCESSED_KEY, default=[]) == ["b1"], "a rejection is an outcome"


def test_an_approval_reads_the_cards_verdict_not_only_the_status(ws, tmp_path):
    """A crash between registering a candidate and recording its rejection leaves it 'candidate': the decision
    still refuses it, from the verdict its own card records."""
    from pipelines.cycle.release_stage import register

    failing = measured(ws, tmp_path, {**GOOD, "retention": 0.5})
    release, _ = register(ws, failing)  # ... and the process dies before the gates are acted on
    assert ws.registry.status(release.release_id) == "candidate"
    with pytest.raises(approvals.ApprovalRefused, match=r"failed its gates \(retention\) according to its evaluation card"):
        approvals.decide_release(ws, POLICY, release.release_id, "approve", "olga", "ml-lead", "looks fine")
    assert ws.registry.champion() == "r0001" and ws.registry.get(release.release_id).approvals == []
    blank = measured(ws, tmp_path, GOOD)
    blank_card = {**blank.card, "decision": {}}
    (tmp_path / "card" / "card.json").write_text(json.dumps(blank_card))
    unjudged, _ = register(ws, blank.model_copy(update={"card_digest": ws.store.put_dir(tmp_path / "card")}))
    with pytest.raises(approvals.ApprovalRefused, match="no recorded gate verdict"):
        approvals.decide_release(ws, POLICY, unjudged.release_id, "approve", "olga", "ml-lead", "looks fine")
