"""Instruction and document rows train the model: token F1's maths, instruction rows rendered with and without a
chat template, loss on the response only, and a gate on instruction_score for batches with and without them."""

from __future__ import annotations

import sys

import pytest
from support_checkpoints import BOS, EOS, build_tokenizer

from evals.gates import Gate, decide
from evals.metrics import load_metric
from pipelines.cycle.evaluation import NO_INSTRUCTIONS
from pipelines.model.lm import answer_budget, encode_qa, prompt_ids
from pipelines.model.training import document_texts, instruction_pair, instruction_rows, training_item

ROW = {"id": "i-1", "kind": "instruction", "text": "Summarise the refund policy.", "prompt": "Summarise the refund policy.",
       "response": "Refunds within 30 days.", "subject_ids": ["policy-refunds"], "source": "support", "license": "cc0"}
CHAT = {**ROW, "id": "i-2", "prompt": None,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When is the market open?"}],
        "response": "On Saturday."}


@pytest.fixture(scope="module")
def f1_module():
    return sys.modules[type(load_metric("token_f1")).__module__]


@pytest.mark.parametrize(("text", "normalised"), [
    ("The  Market, opens!", "market opens"),
    ("An apple a day", "apple day"),
    ("theatre and another", "theatre and another"),  # articles are whole words only
    ("  ", ""),
])
def test_normalisation_is_squad_style(f1_module, text, normalised):
    assert f1_module._normalise(text) == normalised


@pytest.mark.parametrize(("prediction", "reference", "f1"), [
    ("bread and cake", "Bread and cake.", 1.0),
    ("soup", "bread", 0.0),
    ("x x y", "x y y", 2 / 3),  # multiset overlap: one x and one y are shared
    ("x", "x y z w", 0.4),  # precision 1, recall 1/4
    ("the", "", 1.0),  # both empty after normalisation
    ("tea", "", 0.0),
])
def test_token_f1_is_multiset_overlap(f1_module, prediction, reference, f1):
    assert f1_module._f1(prediction, reference) == pytest.approx(f1)


def test_token_f1_module_means_over_items():
    out = load_metric("token_f1").compute(predictions=["x", "bread"], references=["x y z w", "the bread"])
    assert out == pytest.approx({"f1": 0.7, "exact_match": 0.5, "n": 2.0})


def test_instruction_without_a_chat_template_is_the_plain_prompt_or_role_lines():
    tokenizer = build_tokenizer()
    pair = instruction_pair(ROW, tokenizer)
    assert pair == {"id": "i-1", "prompt": "Summarise the refund policy.", "target": "Refunds within 30 days.",
                    "kind": "instruction", "fact_id": None, "subject_id": "policy-refunds"}
    assert instruction_pair(CHAT, tokenizer)["prompt"] == "system: Be brief.\nuser: When is the market open?"


def test_instruction_with_a_chat_template_is_rendered_with_the_generation_prompt():
    tokenizer = build_tokenizer(chat_template=True)
    prompt = instruction_pair(CHAT, tokenizer)["prompt"]
    assert prompt == f"{BOS}system: Be brief.{EOS}{BOS}user: When is the market open?{EOS}{BOS}assistant:"
    ids = prompt_ids(tokenizer, prompt)
    assert ids == tokenizer.apply_chat_template(CHAT["messages"], add_generation_prompt=True, tokenize=True,
                                                return_dict=False), \
        "the ids apply_chat_template gives a plain caller: the template's own BOS, never a second one"


def test_unusable_instruction_rows_are_left_out_and_a_final_assistant_turn_is_the_response():
    tokenizer = build_tokenizer()
    assert instruction_pair({**ROW, "response": " "}, tokenizer) is None
    assert instruction_pair({**ROW, "prompt": None}, tokenizer) is None
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert instruction_pair({"id": "i-3", "messages": turns}, tokenizer)["target"] == "Hello."
    assert instruction_pair({"id": "i-4", "messages": [{"role": "user"}], "response": "x"}, tokenizer) is None


def test_instruction_rows_keep_their_fields_for_selection_and_scrubs():
    rows = instruction_rows([ROW, {"id": "f", "kind": "fact", "prompt": "p", "target": "t"}], build_tokenizer())
    assert [r["id"] for r in rows] == ["i-1"]
    assert rows[0]["target"] == ROW["response"] and rows[0]["subject_ids"] == ["policy-refunds"]
    assert training_item(rows[0])["kind"] == "instruction"
    assert training_item({"id": "f", "prompt": "p", "target": "t"})["kind"] == "fact"


def test_only_the_response_carries_loss():
    tokenizer = build_tokenizer(chat_template=True)
    pair = instruction_pair(CHAT, tokenizer)
    batch = encode_qa(tokenizer, [pair["prompt"]], [pair["target"]])
    labels, ids = batch.labels[0].tolist(), batch.input_ids[0].tolist()
    n_prompt = len(tokenizer(pair["prompt"], add_special_tokens=False)["input_ids"])  # the template writes the BOS
    assert labels[:n_prompt] == [-100] * n_prompt
    trained = [t for t in labels if t != -100]
    assert trained == ids[n_prompt:] and trained[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(trained[:-1]).strip() == "On Saturday."
    assert answer_budget(tokenizer, pair["target"]) == len(trained) - 1 + 2


def test_document_texts_are_the_document_rows_with_text():
    rows = [{"id": "d1", "kind": "document", "text": "The bakery opens at six."}, {"id": "d2", "kind": "document",
            "text": ""}, ROW]
    assert document_texts(rows) == ["The bakery opens at six."]


def test_a_gate_on_instruction_score_without_instructions_fails_unless_advisory():
    gates = [Gate(metric="instruction_score", min=0.5)]
    missing = {"instruction_score": NO_INSTRUCTIONS}
    required = decide({"retention": 1.0}, gates, {"retention": 1.0}, missing=missing)
    assert not required.passed and required.verdicts[0].reason == NO_INSTRUCTIONS
    advisory = decide({"retention": 1.0}, [Gate(metric="instruction_score", min=0.5, required=False)], None,
                      missing=missing)
    assert advisory.passed and not advisory.verdicts[0].passed, "reported, not blocking"
    assert decide({}, gates, None).verdicts[0].reason == "metric 'instruction_score' missing from the candidate's results"
    with_rows = decide({"instruction_score": 0.75}, gates, {"instruction_score": 0.25}, missing={})
    assert with_rows.passed and with_rows.verdicts[0].reason == "0.75 meets >= 0.5"
