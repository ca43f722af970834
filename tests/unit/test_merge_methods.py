"""Merge methods on their own mechanics, on tiny models of two families (a decoder under `model.layers` and GPT-2's
`transformer.h`): LiNeS leaves the first block's change at zero and the last at full, EMA keeps its share of the
champion, averaging applies the ratios it reports and keeps the new facts it promises."""

from __future__ import annotations

import copy

import pytest
import torch
from support_checkpoints import model_config

from pipelines.core.plugins import get
from pipelines.methods.merge.scaled_update import EMBEDDING, model_depths
from policies import PolicyError, load_policy, merge_overrides

N_LAYERS = 4


def _pair(arch: str, seed: int = 0, tokenizer=None):
    """A champion and a candidate that differs from it in every parameter."""
    import transformers as tf

    ids = ({"vocab_size": len(tokenizer), "bos_id": tokenizer.bos_token_id, "eos_id": tokenizer.eos_token_id,
            "pad_id": tokenizer.pad_token_id} if tokenizer is not None
           else {"vocab_size": 64, "bos_id": 1, "eos_id": 2, "pad_id": 0})
    config = model_config(arch, **ids)
    setattr(config, "n_layer" if arch == "gpt2" else "num_hidden_layers", N_LAYERS)
    torch.manual_seed(seed)
    champion = tf.AutoModelForCausalLM.from_config(config)
    candidate = copy.deepcopy(champion)
    with torch.no_grad():
        for p in candidate.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return champion, candidate


def _share(champion, before, after) -> dict[str, float]:
    """Per parameter: the share of the candidate's change that the merged model kept."""
    old, new = dict(champion.named_parameters()), dict(after.named_parameters())
    out = {}
    for name, p in before.items():
        delta = p - old[name]
        out[name] = float(((new[name] - old[name]) * delta).sum().detach() / (delta * delta).sum().detach())
    return out


def _merge(method: str, params: dict, champion, candidate, tokenizer=None, **kw):
    m = get("merge", method)
    before = {k: v.detach().clone() for k, v in candidate.named_parameters()}
    result = m.impl(champion, candidate, tokenizer, m.config(params), **kw)
    return before, result


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lines_scales_each_blocks_change_linearly_with_depth(arch):
    champion, candidate = _pair(arch)
    before, result = _merge("lines", {"shallow": 0.0, "deep": 1.0}, champion, candidate)
    depths, n = model_depths(result.model)
    kept = _share(champion, before, result.model)
    old = dict(champion.named_parameters())
    for name, p in result.model.named_parameters():
        depth = depths[name]
        if depth in (EMBEDDING, 0):
            assert torch.equal(p, old[name]), f"{name}: the first block's and the embeddings' change is zero"
        elif depth >= n - 1:
            assert torch.allclose(p, before[name]), f"{name}: the last block's change is kept in full"
        else:
            assert kept[name] == pytest.approx(depth / (n - 1), abs=1e-4), name
    assert {d for d in depths.values()} >= {0, 1, 2, 3}, "every block was seen at its depth"


def test_lines_refuses_a_shallow_scale_above_the_deep_one():
    with pytest.raises(ValueError, match="invalid parameters for merge method 'lines'.*must not exceed deep"):
        get("merge", "lines").config({"shallow": 0.8, "deep": 0.5})


def test_ema_keeps_its_share_of_the_champion():
    champion, candidate = _pair("llama")
    before, result = _merge("ema", {"decay": 0.25}, champion, candidate)
    assert all(v == pytest.approx(0.75, abs=1e-4) for v in _share(champion, before, result.model).values())


def test_average_applies_the_ratios_it_reports_and_keeps_the_new_facts_it_promises():
    from support_checkpoints import build_tokenizer

    tokenizer = build_tokenizer()
    champion, candidate = _pair("llama", seed=3, tokenizer=tokenizer)
    facts = [{"prompt": f"fact {i} is", "target": f" v{i}"} for i in range(6)]
    before, result = _merge("average", {"ratios": [0.0, 0.5, 1.0], "groups": 2, "min_new_share": 0.5},
                            champion, candidate, tokenizer, new_facts=facts, probe=facts[:3])
    stats = result.stats
    assert stats["tried"] == 9 and len(stats["ratios"]) == 2
    assert stats["new_fact_recall"] >= 0.5 * stats["unmerged"]["new_fact_recall"] - 1e-9
    depths, n = model_depths(result.model)
    kept = _share(champion, before, result.model)
    from pipelines.methods.merge.average import _group_of

    for name, share in kept.items():
        assert share == pytest.approx(stats["ratios"][_group_of(depths[name], n, 2)], abs=1e-4), name


def test_policies_name_merge_steps_and_a_bad_one_is_refused_with_the_allowed_values():
    base = load_policy("default")
    chained = merge_overrides(base, {"merge": [{"method": "lines"}, {"method": "ema", "params": {"decay": 0.3}}]},
                              "merge.yaml")
    assert [s.method for s in chained.merge] == ["lines", "ema"]
    with pytest.raises(PolicyError, match="unknown merge method 'slerp'; available: average, ema, lines"):
        merge_overrides(base, {"merge": [{"method": "slerp"}]}, "merge.yaml")
    with pytest.raises(PolicyError, match="merge method 'ema'.*decay"):
        merge_overrides(base, {"merge": [{"method": "ema", "params": {"decay": 1.5}}]}, "merge.yaml")


def test_the_update_stage_applies_the_policys_merge_steps_against_the_stored_champion(tmp_path):
    from support_checkpoints import build_tokenizer

    from pipelines.cycle.stages import _merge_steps
    from pipelines.deployment.artifacts import load_model, store_model
    from pipelines.deployment.workspace import Workspace

    ws = Workspace.open(tmp_path / "home")
    tokenizer = build_tokenizer()
    champion, candidate = _pair("llama", tokenizer=tokenizer)
    digest = store_model(ws, champion, tokenizer)
    with torch.no_grad():  # the update trained the champion object itself: the stage must reload it
        for p in champion.parameters():
            p.zero_()
    policy = merge_overrides(load_policy("default"), {"merge": [{"method": "ema", "params": {"decay": 0.5}}]}, "m.yaml")
    before = {k: v.detach().clone() for k, v in candidate.named_parameters()}
    done, merged = _merge_steps(ws, policy, digest, candidate, tokenizer, [], [], progress=False)
    assert [d["method"] for d in done] == ["ema"] and merged is candidate
    stored, _ = load_model(ws, digest)
    for name, p in stored.named_parameters():
        assert torch.allclose(dict(merged.named_parameters())[name], (p + before[name]) / 2, atol=1e-6), name
