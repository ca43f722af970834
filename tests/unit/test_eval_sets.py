"""Evaluation sets come from the deployment's tables or a stated rule, never from nowhere: a gate whose set is
needed but missing fails with the fix, instead of passing on an empty set."""

from __future__ import annotations

import pytest
from support_forget import fact, small_deployment, write_batch

from evals.gates import Gate, decide
from pipelines.cycle import stages
from pipelines.deployment import evalsets
from policies import load_policy


@pytest.fixture
def ws(tmp_path):
    return small_deployment(tmp_path / "home", n_subjects=6)


def test_a_needed_set_that_is_missing_fails_its_gate_with_the_fix():
    gates = [Gate(metric="perplexity", max_ratio_vs_champion=1.5), Gate(metric="locality", min=0.8)]
    missing = {"perplexity": evalsets.FIX["general"]}
    decision = decide({"perplexity": None, "locality": None}, gates, {"perplexity": 3.0}, missing=missing)
    by_metric = {v.metric: v for v in decision.verdicts}
    assert not decision.passed and not by_metric["perplexity"].passed
    assert by_metric["perplexity"].reason.startswith("no general set: supply the `general` table")
    assert by_metric["locality"].passed and "not applicable" in by_metric["locality"].reason, \
        "a set nothing needed this cycle (no edits) is not applicable, not missing"


def test_sets_are_read_from_the_tables_and_name_their_source(ws):
    assert evalsets.general_text(ws).missing == evalsets.FIX["general"]
    assert evalsets.unseen(ws).missing == evalsets.FIX["unseen"]
    ws.data.put_part("eval_general", "mine", [{"id": f"g{i}", "text": f"General sentence number {i}."} for i in range(5)])
    ws.data.put_part("eval_unseen", "mine", [{**fact(90), "kind": "unseen"}])
    general = evalsets.general_text(ws)
    assert general.missing is None and len(general.items) == 5 and general.source == "table `general` (5 of 5 rows)"
    assert [q["prompt"] for q in evalsets.unseen(ws).items] == [fact(90)["prompt"]]


def test_paraphrases_come_from_the_rows_themselves():
    rows = [{**fact(1), "paraphrases": ["Who is s001's relation 0?", "Name the relation 0 of s001:"]}]
    resolved = evalsets.paraphrases(rows)
    assert [q["prompt"] for q in resolved.items] == ["Name the relation 0 of s001:"] and resolved.missing is None
    assert evalsets.paraphrases([fact(2)]).missing == evalsets.FIX["paraphrases"]


def test_the_paraphrase_set_asks_each_fact_its_last_paraphrase_whatever_their_number():
    """The held-out paraphrase is a row's last one, not a fixed index: one, two or four paraphrases alike."""
    rows = [{**fact(1), "paraphrases": ["only one"]}, {**fact(2), "paraphrases": ["p1", "p2", "p3", "last of four"]},
            {**fact(3), "paraphrases": ["q1", "  ", "last of two", ""]}, fact(4)]
    resolved = evalsets.paraphrases(rows)
    assert [q["prompt"] for q in resolved.items] == ["only one", "last of four", "last of two"]
    assert [q["target"] for q in resolved.items] == [fact(i)["target"] for i in (1, 2, 3)]
    assert "held-out last one (3 facts)" in resolved.source


def test_rows_of_an_evaluation_kind_go_to_their_table_and_are_never_trained_on(ws):
    policy = load_policy("default")
    general = {"id": "gen-1", "kind": "general", "text": "The river runs past the old mill.", "source": "wiki",
               "license": "cc0", "subject_ids": []}
    write_batch(ws, "b-eval", [general, {**fact(91), "kind": "unseen"}, {**fact(3, 4), "kind": "fact"}])
    out = stages.admit(ws, policy, "b-eval.jsonl")
    assert out.evaluation_rows == {"general": 1, "unseen": 1} and out.admitted == 1
    assert [r["id"] for r in ws.data.rows("eval_general", "b-eval")] == ["gen-1"]
    assert {r["id"] for r in ws.data.records("documents", "b-eval")} == {fact(3, 4)["id"]}, "not indexed"
    assert {r["id"] for r in ws.data.rows("replay", "b-eval")} == {fact(3, 4)["id"]}, "not replayed"
