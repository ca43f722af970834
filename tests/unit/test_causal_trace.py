"""Causal tracing on checkpoints built from config (not from the demo world): its invariants, and on a checkpoint
trained on a town's facts, that the subject matters and some layer's MLP brings the answer back."""

from __future__ import annotations

import pytest
from support_byo import domain_fact, trained_checkpoint
from support_checkpoints import write_checkpoint

from pipelines.methods.edit.trace import trace_fact, trace_layers
from pipelines.model.lm import load_causal_lm

FACT = {"prompt": "The museum in Arden opens early on", "target": " Friday", "subject": "Arden"}
FACTS = [domain_fact(i) for i in range(40)]  # as the team's checkpoint in the bring-your-own tests


@pytest.fixture(scope="module")
def team_neox(tmp_path_factory):
    """A GPT-NeoX checkpoint with its own BPE that knows a town's 40 facts."""
    return load_causal_lm(trained_checkpoint(tmp_path_factory.mktemp("neox") / "neox", "gpt_neox", FACTS))


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


def test_on_a_checkpoint_that_knows_its_facts_the_subject_matters_and_an_mlp_restores_it(team_neox):
    model, tokenizer = team_neox
    trace = trace_layers(model, tokenizer, FACTS[:6], samples=4, seed=1, position="last")
    assert trace.facts == 6 and not trace.skipped
    assert trace.clean > 0.5 and trace.corrupted < trace.clean, trace.to_dict()
    assert max(trace.effects) > 0.0, trace.to_dict()
    assert trace.to_dict()["best_layer"] == trace.best_layer


def test_rome_writes_where_the_trace_peaks_and_says_so(team_neox):
    from support_checkpoints import GENERAL_TEXT

    from pipelines.methods.edit.rome import RomeConfig, apply_edits

    model, tokenizer = team_neox
    known = FACTS[3]
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


def _essence_drift(model, edited, tokenizer, subject: str) -> float:
    import torch

    from pipelines.model.lm import prompt_ids

    ids = torch.tensor([prompt_ids(tokenizer, f"{subject} is a")])
    with torch.no_grad():
        after = torch.log_softmax(edited(input_ids=ids).logits[0, -1].float(), -1)
        before = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    return float((after.exp() * (after - before)).sum())


def test_rome_essence_term_keeps_what_else_the_model_says_about_the_subject(team_neox):
    """ROME's KL term on "{subject} is a": the edit still takes, and the subject's next-token distribution there
    moves less than without it."""
    from support_checkpoints import GENERAL_TEXT

    from pipelines.methods.edit.rome import RomeConfig, apply_edits, context_prefixes

    model, tokenizer = team_neox
    known = FACTS[3]
    edit = {"prompt": known["prompt"], "target": " Monday" if known["target"] != " Monday" else " Sunday",
            "previous_target": known["target"], "subject": known["subject"]}
    drift = {}
    for kl in (0.0, 1.0):
        result = apply_edits(model, tokenizer, [edit], RomeConfig(key_token="subject", layer=0, kl_factor=kl),
                             list(GENERAL_TEXT[:80]), progress=False)
        assert result.per_edit[0]["success"] and result.stats["kl_factor"] == kl, (kl, result.per_edit)
        drift[kl] = _essence_drift(model, result.model, tokenizer, known["subject"])
    assert drift[1.0] < drift[0.0], drift

    # The context prefixes are the model's own short texts, the same for a seed, half of them shorter.
    prefixes = context_prefixes(model, tokenizer, 4, seed=3)
    assert prefixes == context_prefixes(model, tokenizer, 4, seed=3) and len(prefixes) == 4
    assert all(p.endswith(".") and "{" not in p for p in prefixes)
    stats = apply_edits(model, tokenizer, [edit], RomeConfig(key_token="subject", layer=0, context_prefixes=4,
                                                             v_steps=5), list(GENERAL_TEXT[:80]), progress=False).stats
    assert stats["contexts"] == 5
