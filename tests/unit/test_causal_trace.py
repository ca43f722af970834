"""Causal tracing on checkpoints built from config (not from the demo world): its invariants, and on a checkpoint
trained on a town's facts, that the subject matters and some layer's MLP brings the answer back."""

from __future__ import annotations

import pytest
from support_byo import domain_fact, trained_checkpoint
from support_checkpoints import write_checkpoint

from pipelines.methods.edit.trace import trace_fact, trace_layers
from pipelines.model.lm import load_causal_lm

FACT = {"prompt": "The museum in Arden opens early on", "target": " Friday", "subject": "Arden"}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_without_noise_nothing_is_corrupted_and_no_layer_has_an_effect(tmp_path, arch):
    model, tokenizer = load_causal_lm(write_checkpoint(tmp_path / arch, arch))
    effects, clean, corrupted = trace_fact(model, tokenizer, FACT["prompt"], FACT["target"], FACT["subject"],
                                           samples=2, noise_scale=0.0)
    assert corrupted == pytest.approx(clean, rel=1e-5)
    assert len(effects) == model.config.num_hidden_layers
    assert all(abs(e) <= 1e-6 * max(clean, 1e-12) + 1e-12 for e in effects)


def test_a_prompt_without_its_subject_is_skipped_by_name_and_none_left_is_an_error(tmp_path):
    model, tokenizer = load_causal_lm(write_checkpoint(tmp_path / "gpt2", "gpt2"))
    with pytest.raises(ValueError, match="does not contain its subject 'Belmont'"):
        trace_layers(model, tokenizer, [{**FACT, "subject": "Belmont"}], samples=1)
    with pytest.raises(ValueError, match="window must be at least 1"):
        trace_layers(model, tokenizer, [FACT], window=0)


def test_on_a_checkpoint_that_knows_its_facts_the_subject_matters_and_an_mlp_restores_it(tmp_path):
    facts = [domain_fact(i) for i in range(12)]
    model, tokenizer = load_causal_lm(trained_checkpoint(tmp_path / "neox", "gpt_neox", facts, steps=300))
    trace = trace_layers(model, tokenizer, facts[:6], samples=4, seed=1)
    assert trace.facts == 6 and not trace.skipped
    assert trace.clean > 0.5 and trace.corrupted < trace.clean, trace.to_dict()
    assert max(trace.effects) > 0.0, trace.to_dict()
    assert trace.to_dict()["best_layer"] == trace.best_layer


def test_rome_writes_where_the_trace_peaks_and_says_so(tmp_path):
    from support_checkpoints import GENERAL_TEXT

    from pipelines.methods.edit.rome import RomeConfig, apply_edits

    facts = [domain_fact(i) for i in range(12)]
    model, tokenizer = load_causal_lm(trained_checkpoint(tmp_path / "neox", "gpt_neox", facts, steps=300))
    known = facts[3]
    new_day = next(d for d in (" Monday", " Sunday") if d != known["target"])
    edit = {"prompt": known["prompt"], "target": new_day, "previous_target": known["target"], "subject": known["subject"]}
    cfg = RomeConfig(layer="trace", key_token="last", trace_samples=4)
    result = apply_edits(model, tokenizer, [edit], cfg, list(GENERAL_TEXT[:80]), progress=False)
    traced = result.stats["layer_trace"]
    assert result.stats["layer"] == traced["best_layer"] and traced["position"] == "last" and traced["facts"] == 1
    assert result.per_edit[0]["success"], result.per_edit

    # An edit with no current answer to trace falls back to the architecture's layer and records why.
    bare = {**edit, "previous_target": None}
    fallback = apply_edits(model, tokenizer, [bare], cfg, list(GENERAL_TEXT[:80]), progress=False).stats
    assert "no fact could be traced" in fallback["layer_trace"]["fallback"]
