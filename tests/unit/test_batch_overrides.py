"""Whoever can drop a batch cannot rewrite the policy: a sidecar may set only the training hyper-parameters the
deployment's policy allows; anything else is quarantined with the reason and the batch runs under the policy."""

from __future__ import annotations

import json

import pytest
from support_forget import fact, small_deployment, write_batch

from evals.card import render_card
from pipelines.cycle import stages
from pipelines.governance import overrides
from pipelines.governance.overrides import effective_policy
from policies import PolicyError, load_policy, merge_overrides
from policies.schema import parse_policy

POLICY = load_policy("default")


@pytest.fixture
def ws(tmp_path):
    return small_deployment(tmp_path / "home", n_subjects=6)


def sidecar(ws, batch: str, content) -> None:
    path = ws.inbox / f"{batch}.policy.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def events(ws, action: str) -> list[dict]:
    return [e for e in ws.log.events() if e["action"] == action]


def test_an_allowed_training_setting_applies_to_the_batch_and_is_logged_with_its_hash(ws, tmp_path):
    write_batch(ws, "b-fast", [fact(1, 5)])
    sidecar(ws, "b-fast", {"update": {"params": {"learning_rate": 0.05}}})
    out = stages.admit(ws, POLICY, "b-fast.jsonl")
    assert out.admitted == 1
    assert effective_policy(ws, POLICY, "b-fast").update.params["learning_rate"] == 0.05
    assert effective_policy(ws, POLICY, "another-batch") == POLICY, "only that batch's cycle"
    (event,) = events(ws, "batch.overrides_applied")
    assert event["details"]["overrides"] == {"update.params.learning_rate": 0.05} and len(event["details"]["sha256"]) == 64
    card = {"release_id": "x", "batch_overrides": overrides.reviewed(ws, "b-fast").model_dump()}
    render_card(card, tmp_path / "card")
    assert "`update.params.learning_rate` = 0.05" in (tmp_path / "card" / "card.md").read_text()


@pytest.mark.parametrize("content, reason", [
    ({"gates": [{"metric": "retention", "min": 0.0}]}, "'gates' may not be set by a batch"),
    ({"approval": {"mode": "auto"}}, "'approval.mode' may not be set by a batch"),
    ({"update": {"params": {"learning_rate": 0.05}}, "unlearning": {"max_forget_recall": 1.0}},
     "'unlearning.max_forget_recall' may not be set"),
    ("{not json", "unreadable"),
    ("[1, 2]", "a JSON object of policy sections is expected"),
    ({"update": {"params": {"learning_rate": "fast"}}}, "learning_rate"),
    ({"update": {"params": {"max_epochs": 1_000_000_000}}}, "max_epochs"),  # would hold the cycle lock for ever
])
def test_a_sidecar_that_reaches_beyond_training_is_quarantined_and_the_batch_runs_under_the_policy(ws, content, reason):
    write_batch(ws, "b-sly", [fact(2, 5), fact(3, 5)])
    sidecar(ws, "b-sly", content)
    out = stages.admit(ws, POLICY, "b-sly.jsonl")
    assert out.admitted == 2, "nothing else of the batch is lost"
    assert effective_policy(ws, POLICY, "b-sly") == POLICY
    assert not (ws.inbox / "b-sly.policy.json").exists(), "the sidecar leaves the inbox for quarantine"
    (held,) = ws.data.records("quarantine", "b-sly.policy")
    assert held["id"] == "b-sly.policy.json" and any(reason in r for r in held["quarantine_reasons"]), held
    (event,) = events(ws, "batch.overrides_refused")
    assert reason in event["reason"] and event["details"]["sha256"] == held["sha256"]


def test_a_forged_review_record_still_applies_only_allowed_keys(ws):
    ws.store.write_json("cycles/overrides/b-forged.json", {
        "batch": "b-forged", "file": "b-forged.policy.json", "sha256": "0" * 64, "refused": [],
        "applied": {"approval.mode": "auto", "update.params.max_epochs": 3}})
    eff = effective_policy(ws, POLICY, "b-forged")
    assert eff.approval.mode == POLICY.approval.mode == "human" and eff.update.params["max_epochs"] == 3


def test_a_policy_cannot_let_batches_change_anything_but_training():
    raw = POLICY.model_dump(mode="json") | {"batch_overrides": ["gates", "approval.mode", "update.params.max_epochs"]}
    with pytest.raises(PolicyError, match="training hyper-parameters only .* not: gates, approval.mode"):
        parse_policy(raw, "team.yaml")
    assert merge_overrides(POLICY, None, "x") is POLICY


def test_a_policy_may_let_batches_move_only_bounded_hyper_parameters():
    raw = POLICY.model_dump(mode="json") | {"batch_overrides": ["update.params.seed"]}
    with pytest.raises(PolicyError, match="update.params.seed has no lower and upper bound"):
        parse_policy(raw, "loose.yaml")
    raw = POLICY.model_dump(mode="json") | {"batch_overrides": ["update.params.no_such_knob"]}
    with pytest.raises(PolicyError, match="no_such_knob is not a parameter of the update method 'lora'"):
        parse_policy(raw, "typo.yaml")
