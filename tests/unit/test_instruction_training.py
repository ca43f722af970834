"""LoRA learns instruction responses (scored by token F1 on greedy answers) and, given texts, the documents
themselves (their perplexity falls), on a tiny Llama checkpoint with a chat template."""

from __future__ import annotations

import pytest
import torch
from support_checkpoints import GENERAL_TEXT, write_checkpoint

from evals.suites import EvalSets, instruction_suite, run_suites
from pipelines.methods.update.lora import LoraUpdateConfig, train_lora
from pipelines.model.lm import load_causal_lm, perplexity
from pipelines.model.training import instruction_pairs

ROWS = [{"id": f"i{i}", "kind": "instruction", "prompt": q, "response": a} for i, (q, a) in enumerate([
    ("What do we buy at the bakery?", "bread and cake"),
    ("Where does the cat sleep?", "next to the lamp"),
    ("When does the market open?", "early on Friday"),
    ("What did we do on Sunday?", "we played cards"),
])]
FACTS = [{"id": "f0", "prompt": "The museum opens early on", "target": "Monday", "kind": "fact"},
         {"id": "f1", "prompt": "The library opens early on", "target": "Tuesday", "kind": "fact"}]
DOCS = GENERAL_TEXT[:8]
FAST = {"learning_rate": 1e-2, "batch_size": 4, "max_epochs": 60, "eval_every_steps": 5}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("llama") / "m", "llama", chat_template=True)
    model, tokenizer = load_causal_lm(path, torch.device("cpu"))
    return model, tokenizer, instruction_pairs(ROWS, tokenizer)


def test_lora_learns_instruction_responses(llama):
    model, tokenizer, pairs = llama
    before, _ = instruction_suite(model, tokenizer, pairs, "token_f1")
    result = train_lora(model, tokenizer, pairs, [], LoraUpdateConfig(**FAST), progress=False)
    after, detail = instruction_suite(result.model, tokenizer, pairs, "token_f1")
    assert before < 0.5 and after >= 0.9 > before, (before, detail)
    stats = result.stats
    assert stats["n_instructions"] == 4 and stats["reached_target"]
    assert stats["response_accuracy_after"] >= 0.95 > stats["response_accuracy_before"]
    assert all("response_acc" in point for point in result.history)


def test_facts_decide_when_a_mixed_update_stops(llama):
    """Instructions ride along: a response that is slow to learn must not keep training (and forgetting) on."""
    model, tokenizer, pairs = llama
    cfg = LoraUpdateConfig(**{**FAST, "eval_every_steps": 1000}, target_recall=1.0, target_response_accuracy=1.0)
    result = train_lora(model, tokenizer, [*FACTS, *pairs], [], cfg, progress=False)
    stats = result.stats
    assert stats["reached_target"] and stats["new_recall_after"] == 1.0 and stats["epochs"] < cfg.max_epochs
    assert stats["n_samples"] == 6 and stats["n_instructions"] == 4
    assert 0.0 <= stats["response_accuracy_after"] <= 1.0


def test_texts_train_on_every_token(llama):
    model, tokenizer, pairs = llama
    before = perplexity(model, tokenizer, DOCS)
    alone = train_lora(model, tokenizer, [], [], LoraUpdateConfig(**FAST, text_epochs=3), progress=False, texts=DOCS)
    assert alone.stats["epochs"] == 3 and alone.stats["n_texts"] == len(DOCS)
    assert alone.stats["text_loss_after"] < alone.stats["text_loss_before"]
    assert perplexity(alone.model, tokenizer, DOCS) < 0.8 * before
    mixed = train_lora(model, tokenizer, pairs, [], LoraUpdateConfig(**FAST), progress=False, texts=DOCS)
    assert mixed.stats["reached_target"] and perplexity(mixed.model, tokenizer, DOCS) < before
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        train_lora(model, tokenizer, pairs, [], LoraUpdateConfig(**FAST), progress=False, texts=["ok", ""])


def test_instruction_score_is_reported_only_with_instructions(llama):
    model, tokenizer, pairs = llama
    with_rows = run_suites(model, tokenizer, EvalSets(instructions=pairs), instruction_metric="token_f1")
    assert with_rows.metrics["instruction_score"] == with_rows.details["instructions"]["f1"]
    assert with_rows.details["instructions"]["metric"] == "token_f1"
    without = run_suites(model, tokenizer, EvalSets(new_facts=FACTS))
    assert "instruction_score" not in without.metrics, "absent, so a gate on it cannot pass on nothing"
    with pytest.raises(ValueError, match="instruction scorer"):
        instruction_suite(model, tokenizer, pairs, "bleu")
