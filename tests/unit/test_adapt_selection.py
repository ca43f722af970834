"""The adapt selector: gradient sketches, pseudo-skills, per-skill experts, budget, replay-pool pruning, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support_checkpoints import build_tokenizer, model_config
from support_wordlm import word_lm

from pipelines.core import plugins
from pipelines.methods.selection import METHODS, AdaptConfig, select_adaptive
from pipelines.methods.selection import experts as ex
from pipelines.methods.selection.adapt import apportion
from pipelines.methods.selection.pool import POOL_SIZE, prune_pool
from pipelines.methods.selection.row_rules import KNOWN

FOODS = ("bread", "soup", "coffee", "cake", "apples", "rice", "tea", "cheese", "honey", "pasta")
PLACES = ("market", "library", "station", "bakery", "park")
ANIMALS = ("cat", "dog", "rabbit", "parrot", "tortoise")
THINGS = ("window", "table", "chair", "lamp", "bookshelf", "umbrella")
DAYS = ("Monday", "Tuesday", "Friday", "Saturday", "Sunday")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; on a shared machine two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_lms():
    """Random-weight 2-layer GPT-2 and Llama over the test BPE tokenizer: sketches only need a working model."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    out = {}
    for arch in ("gpt2", "llama"):
        torch.manual_seed(0)
        config = model_config(arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                              tokenizer.pad_token_id)
        out[arch] = (AutoModelForCausalLM.from_config(config).eval(), tokenizer)
    return out


def _families(n: int) -> list[list[dict]]:
    """Three kinds of fact with unrelated prompts and answers, n (at most 25) distinct facts of each."""
    food = [{"id": f"food{i}", "prompt": f"The {FOODS[i % 10]} at the {PLACES[i // 10]} was sold on",
             "target": DAYS[i % 5]} for i in range(n)]
    pets = [{"id": f"pet{i}", "prompt": f"My neighbour has a {ANIMALS[i % 5]} that likes to sleep under the",
             "target": f"old {THINGS[i % 6]}"} for i in range(n)]
    rain = [{"id": f"rain{i}", "prompt": f"It rained all {DAYS[i % 5]} so we stayed at the {PLACES[i // 5]} and ate",
             "target": f"{FOODS[(i + 3) % 10]} with {FOODS[i % 10]}"} for i in range(n)]
    return [food, pets, rain]


# -- gradient sketches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sketches_are_seeded_per_fact_and_batch_independent(random_lms, arch):
    model, tokenizer = random_lms[arch]
    rows = _families(3)[0] + _families(2)[1]
    rows.append({"id": "twin", "prompt": rows[0]["prompt"], "target": rows[0]["target"]})
    prompts, targets = [r["prompt"] for r in rows], [r["target"] for r in rows]
    a = ex.gradient_sketches(model, tokenizer, prompts, targets, sketch_dim=16, seed=3, batch_size=4)
    b = ex.gradient_sketches(model, tokenizer, prompts, targets, sketch_dim=16, seed=3, batch_size=1)
    other = ex.gradient_sketches(model, tokenizer, prompts, targets, sketch_dim=16, seed=4, batch_size=4)
    assert a.vectors.shape == (len(rows), 16) and a.vectors.dtype == np.float32
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)  # no sample's gradient leaks into another's
    np.testing.assert_allclose(a.vectors[0], a.vectors[-1], atol=1e-6)  # same prompt and target, other id
    assert not np.allclose(a.vectors[0], a.vectors[1], atol=1e-3)
    assert not np.allclose(a.vectors, other.vectors, atol=1e-3)  # the seed draws the adapter and projection
    assert (a.grad_norm > 0).all()
    assert len(a.modules) == 1 and a.modules[0].endswith("mlp.c_proj" if arch == "gpt2" else "mlp.down_proj")
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sketch_is_the_projected_lora_b_gradient(random_lms, arch):
    """Against autograd: dL/dB of a rank-r LoRA at init is (dL/dW) A^T, then the Gaussian projection."""
    from pipelines.model.lm import encode_qa, per_example_loss

    model, tokenizer = random_lms[arch]
    row = _families(1)[1][0]
    sk = ex.gradient_sketches(model, tokenizer, [row["prompt"]], [row["target"]], sketch_dim=8, lora_rank=4, seed=0)
    (name,) = sk.modules
    weight = model.get_submodule(name).weight
    model.zero_grad()
    per_example_loss(model, encode_qa(tokenizer, [row["prompt"]], [row["target"]])).sum().backward()
    grad_w = weight.grad.T if type(model.get_submodule(name)).__name__ == "Conv1D" else weight.grad  # (out, in)
    grad_b = (grad_w @ sk.lora_a[name].T).reshape(-1)
    model.zero_grad(set_to_none=True)
    assert sk.grad_norm[0] == pytest.approx(float(grad_b.norm()), rel=1e-4)
    np.testing.assert_allclose(sk.vectors[0], (grad_b @ sk.projection).detach().numpy(), rtol=1e-4, atol=1e-6)


def test_sketch_clusters_separate_kinds_of_fact(random_lms):
    model, tokenizer = random_lms["gpt2"]
    food, pets, _ = _families(20)
    rows = [r for pair in zip(food, pets, strict=True) for r in pair]  # interleaved, so order gives nothing away
    assert len({(r["prompt"], r["target"]) for r in rows}) == 40
    sk = ex.gradient_sketches(model, tokenizer, [r["prompt"] for r in rows], [r["target"] for r in rows])
    kinds = [r["id"].rstrip("0123456789") for r in rows]
    for seed in range(3):
        labels = ex.kmeans_skills(sk.vectors, 2, seed=seed)
        purity = sum(max(sum(1 for lab, k in zip(labels, kinds, strict=True) if lab == c and k == kind)
                         for kind in ("food", "pet")) for c in set(labels)) / len(rows)
        assert purity >= 0.9, (seed, purity)
    labels = ex.kmeans_skills(sk.vectors, 2, seed=0)
    assert labels == ex.kmeans_skills(sk.vectors, 2, seed=0)
    # The selector's pseudo-skills are these clusters.
    res = select_adaptive(rows, model, tokenizer, AdaptConfig(n_clusters=2, min_loss=0.0, replay_ratio=0.0), [])
    assert [r["cluster"] for r in res.samples] == labels


# -- experts ----------------------------------------------------------------------------------------------------

KNOWN_RELATIONS = ("colour", "pet", "car", "sport", "song", "tool", "drink", "game", "book", "tree", "bird", "shoe")


@pytest.fixture(scope="module")
def half_known():
    """A model that knows 12 facts of unrelated, differently worded relations, and 12 similar facts it does not."""
    known = [{"id": f"k{i}", "prompt": f"The favourite {rel} of person{i} is", "target": f"{rel}{i}"}
             for i, rel in enumerate(KNOWN_RELATIONS)]
    new = [{"id": f"n{i}", "prompt": f"Home town of person{i}", "target": f"city{i}"} for i in range(20, 32)]
    model, tokenizer = word_lm(known, [f"{r['prompt']} {r['target']}" for r in known + new])
    return model, tokenizer, known, new


def test_loss_expert_wins_where_the_model_knows_half(half_known):
    """The known facts are the isolated ones in embedding space, so density would spend the budget on them; a
    held-out slice shows that training on them lowers nothing, and the skill picks loss (listed second, so a tie
    would not do)."""
    model, tokenizer, known, new = half_known
    rows = [r for pair in zip(known, new, strict=True) for r in pair]
    cfg = AdaptConfig(experts=["density", "loss"], n_clusters=1, min_loss=0.0, budget=6, replay_ratio=0.0,
                      holdout_share=0.25)
    res = select_adaptive(rows, model, tokenizer, cfg, [])
    (skill,) = res.stats["clusters"]
    assert skill["expert"] == "loss" and skill["chosen_on"] == "skill"
    assert skill["qualities"]["loss"] > 2 * skill["qualities"]["density"]
    assert skill["expert_quality"] == skill["qualities"]["loss"]
    assert res.stats["experts_chosen"] == {"loss": 1}
    assert {r["id"] for r in res.samples} <= {r["id"] for r in new} and len(res.samples) == 6
    assert all(r["expert"] == "loss" and r["expert_score"] == r["score"] for r in res.samples)
    # Density alone would have picked the known facts: the choice above is the criterion's, not a default.
    dens = ex.density_scores(ex.embed_texts([f"{r['prompt']} {r['target']}" for r in rows]))
    top = {rows[i]["id"] for i in np.argsort(-dens)[:6]}
    assert top <= {r["id"] for r in known}


def test_expert_choice_can_go_against_loss():
    """Synthetic skill: the highest-loss rows are outliers whose gradient points away from the rest of the skill;
    the expert that ranks the skill's core rows first is the one whose picks help the held-out rows."""
    n = 40
    sketches = np.zeros((n, 2), np.float32)
    sketches[:4, 0] = 1.0  # outliers
    sketches[4:, 1] = 1.0  # the skill
    scores = {"loss": np.r_[np.full(4, 9.0), np.linspace(1, 2, n - 4)], "density": np.r_[np.zeros(4), np.ones(n - 4)]}
    wins = [ex.choose_expert(scores, sketches, np.arange(n), 0.2, 0.1, np.random.default_rng(s))[0] for s in range(5)]
    assert wins == ["density"] * 5
    assert ex.choose_expert(scores, sketches, np.arange(1), 0.2, 0.1, np.random.default_rng(0)) is None


def test_el2n_and_density_scores(half_known):
    model, tokenizer, known, new = half_known
    el2n = ex.el2n_scores(model, tokenizer, [r["prompt"] for r in known + new], [r["target"] for r in known + new])
    assert el2n.shape == (24,) and ((el2n >= 0) & (el2n <= np.sqrt(2) + 1e-6)).all()
    assert el2n[:12].max() < el2n[12:].min()  # recited facts are close to their one-hot targets
    vec = np.eye(4, dtype=np.float32)[[0, 0, 0, 1]] + 0.01
    dens = ex.density_scores(vec, k=2)
    assert dens[3] == dens.max() and dens[3] > dens[0]


# -- budget, known facts, accounting ----------------------------------------------------------------------------


def test_apportion_spreads_the_budget():
    assert apportion({"a": 10, "b": 5, "c": 1}, 7) == {"a": 4, "b": 2, "c": 1}
    assert apportion({"a": 10, "b": 5, "c": 1}, None) == {"a": 10, "b": 5, "c": 1}
    assert apportion({"a": 10, "b": 5, "c": 1, "d": 0}, 2) == {"a": 1, "b": 1, "c": 0, "d": 0}
    for budget in range(1, 16):
        q = apportion({"a": 10, "b": 5, "c": 1}, budget)
        assert sum(q.values()) == budget and q["a"] <= 10 and q["b"] <= 5 and q["c"] <= 1
        assert budget < 3 or min(q.values()) >= 1


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_budget_is_spread_and_every_row_accounted_once(random_lms, arch):
    model, tokenizer = random_lms[arch]
    rows = [r for fam in _families(8) for r in fam]
    rows += [dict(rows[0], id="dup"), {"id": "text", "text": "free text"}]
    cfg = AdaptConfig(n_clusters=3, budget=7, replay_ratio=0.0, experts=["loss", "el2n", "grad_norm"])
    res = select_adaptive(rows, model, tokenizer, cfg, [])
    assert len(res.samples) == 7
    ids = [r["id"] for r in res.samples + res.pruned]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # each row once: selected or pruned
    assert all(r.get("prune_reason") for r in res.pruned)
    reasons = {r["id"]: r["prune_reason"] for r in res.pruned}
    assert reasons["dup"] == "duplicate" and reasons["text"] == "no prompt/target"
    assert res.stats["prune_reasons"] == {"budget": 17, "duplicate": 1, "no prompt/target": 1}
    skills = res.stats["clusters"]
    assert sum(c["selected"] for c in skills) == 7 and all(c["selected"] >= 1 for c in skills if c["candidates"])
    assert {c["cluster"]: c["selected"] for c in skills} == apportion({c["cluster"]: c["candidates"] for c in skills}, 7)
    for c in skills:
        chosen = [r for r in res.samples if r["cluster"] == c["cluster"]]
        left = [r for r in res.pruned if r.get("cluster") == c["cluster"]]
        assert all(r["expert"] == c["expert"] for r in chosen + left)
        assert c["expert"] in ("loss", "el2n", "grad_norm") and c["chosen_on"] == "skill"
        assert min(r["expert_score"] for r in chosen) >= max((r["expert_score"] for r in left), default=-np.inf)
        assert c["size"] == len(chosen) + len(left) and c["pruned"] == len(left)
    assert sum(res.stats["experts_chosen"].values()) == 3
    json.dumps(res.stats, allow_nan=False)  # stats go to the run record as they are
    again = select_adaptive(rows, model, tokenizer, cfg, [])
    assert again.samples == res.samples and again.stats == res.stats


def test_known_facts_are_pruned_as_known(half_known):
    model, tokenizer, known, new = half_known
    res = select_adaptive(known + new, model, tokenizer, AdaptConfig(min_loss=1.0, replay_ratio=0.0), [])
    assert {r["id"] for r in res.samples} == {r["id"] for r in new}
    pruned = {r["id"]: r for r in res.pruned}
    assert set(pruned) == {r["id"] for r in known}
    assert all(r["prune_reason"] == KNOWN and r["score"] < 1.0 and r["cluster"].startswith("skill_")
               for r in pruned.values())
    assert len(select_adaptive(known + new, model, tokenizer, AdaptConfig(min_loss=0.0), []).samples) == 24


def test_replay_comes_from_the_pruned_pool(random_lms):
    model, tokenizer = random_lms["gpt2"]
    rows = _families(6)[0]
    pool = [{"id": f"p{i}", "prompt": f"Where does person{i} of team {i} live?", "target": f"town{i}"}
            for i in range(12)]
    pool.append({"id": "p0b", "prompt": "Where does person0 of team 0 live ?", "target": "town0"})
    cfg = AdaptConfig(replay_ratio=0.5, pool_near_duplicate=0.97, pool_max_size=8, min_loss=0.0)
    res = select_adaptive(rows, model, tokenizer, cfg, pool)
    report = res.stats["pool"]
    assert report["n_kept"] == 8 and report["n_pruned"] == 5
    assert {"id": "p0b", "reason": "near_duplicate", "duplicate_of": "p0"}.items() <= report["pruned"][0].items()
    pruned = {p["id"] for p in report["pruned"]}
    assert len(res.replay) == 6 and not pruned & {r["id"] for r in res.replay}


# -- pool pruning -----------------------------------------------------------------------------------------------


def _fake_embed(vectors: dict[str, list[float]]):
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    return embed, calls


def _pool_row(i: int, prompt: str, target: str = "x") -> dict:
    return {"id": f"r{i}", "fact_id": f"f{i}", "prompt": prompt, "target": target}


def test_pool_pruning_skips_pruned_and_tombstoned_rows():
    rows = [_pool_row(0, "a"), _pool_row(1, "a"), _pool_row(2, "b"), _pool_row(3, "c"), _pool_row(4, "a")]
    embed, calls = _fake_embed({"a x": [1, 0, 0], "b x": [0, 1, 0], "c x": [0, 0, 1]})
    gone = {"f0"}  # a forget request covers r0, the first of three identical rows
    out = prune_pool(rows, embed, near_duplicate=0.95, already_pruned={"r3"},
                     tombstoned=lambda r: r.get("fact_id") in gone)
    assert [r["id"] for r in out.kept] == ["r1", "r2"]
    assert [(p["id"], p["reason"], p["duplicate_of"]) for p in out.pruned] == [("r4", "near_duplicate", "r1")]
    mentioned = {v for p in out.pruned for v in p.values()}
    assert "r0" not in mentioned and "r3" not in mentioned  # neither recorded nor used as a reference
    assert calls == [["a x", "b x", "a x"]]  # r1, r2, r4: the tombstoned row was not even embedded
    assert out.report()["n_previously_pruned"] == 1 and out.report()["reasons"] == {"near_duplicate": 1}
    # A tombstoned row stays out even when nothing else would prune it.
    out = prune_pool(rows[2:4], embed, near_duplicate=None, tombstoned=lambda r: True)
    assert out.kept == [] and out.pruned == []


def test_pool_size_bound_prunes_the_most_redundant_first():
    rng = np.random.default_rng(0)
    core = rng.normal(size=8)
    group = [core + 0.1 * rng.normal(size=8) for _ in range(4)]  # four rows saying nearly the same thing
    lone = [np.eye(8)[i] * 3 for i in range(4)]  # four rows unlike anything else
    texts = [f"t{i}" for i in range(8)]
    rows = [_pool_row(i, texts[i]) for i in (0, 4, 1, 5, 2, 6, 3, 7)]
    vectors = {f"t{i} x": v.tolist() for i, v in enumerate(group + lone)}
    embed, _ = _fake_embed(vectors)
    out = prune_pool(rows, embed, max_size=5, near_duplicate=None)
    assert len(out.kept) == 5 and all(p["reason"] == POOL_SIZE for p in out.pruned)
    assert {p["id"] for p in out.pruned} <= {"r0", "r1", "r2", "r3"} and len(out.pruned) == 3
    assert out.pruned == prune_pool(rows, embed, max_size=5, near_duplicate=None).pruned  # deterministic
    for size in range(0, 9):
        assert len(prune_pool(rows, embed, max_size=size, near_duplicate=None).kept) == size


def test_pool_near_duplicates_with_minilm():
    pairs = [("Where does Alice Martin live?", "In which city does Alice Martin live?", "Paris"),
             ("What is Bob Stone's job?", "What does Bob Stone work as?", "baker"),
             ("Which sport does Carla Diaz play?", "What sport is played by Carla Diaz?", "tennis")]
    rows = [_pool_row(i, p, t) for i, (p, _, t) in enumerate(pairs)]
    rows += [_pool_row(10 + i, q, t) for i, (_, q, t) in enumerate(pairs)]
    rows.append(_pool_row(20, "Where does Alice Martin live?", "Rome"))  # same question, another answer
    rows.append(_pool_row(21, "What is the capital of Peru?", "Lima"))
    out = prune_pool(rows, ex.embed_texts, near_duplicate=0.9)
    assert sorted((p["id"], p["duplicate_of"]) for p in out.pruned) == [("r10", "r0"), ("r11", "r1"), ("r12", "r2")]
    assert all(p["similarity"] >= 0.9 for p in out.pruned)
    assert [r["id"] for r in out.kept] == ["r0", "r1", "r2", "r20", "r21"]
    assert prune_pool(rows, ex.embed_texts, near_duplicate=0.9).pruned == out.pruned


# -- policy -----------------------------------------------------------------------------------------------------


def test_adapt_config_through_the_plugin_registry():
    method = plugins.get("selection", "adapt")
    assert method is METHODS["adapt"] and method.impl is select_adaptive
    cfg = method.config({"budget": 5, "experts": ["el2n", "loss"]})
    assert isinstance(cfg, AdaptConfig) and cfg.experts == ["el2n", "loss"]
    assert method.config().experts == ["loss", "el2n", "grad_norm", "density"]
    with pytest.raises(ValueError, match="experts") as err:
        method.config({"experts": ["loss", "perplexity"]})
    assert all(name in str(err.value) for name in ("'loss'", "'el2n'", "'grad_norm'", "'density'"))
    with pytest.raises(ValueError, match="budgt"):
        method.config({"budgt": 5})
    with pytest.raises(ValueError, match="each expert once"):
        method.config({"experts": ["loss", "loss"]})
    with pytest.raises(ValueError, match="holdout_share"):
        method.config({"holdout_share": 1.0})
    with pytest.raises(ValueError, match="model and tokenizer"):
        select_adaptive([{"prompt": "a", "target": "b"}], None, None, AdaptConfig(), [])


def test_small_batches_still_choose_an_expert(random_lms):
    model, tokenizer = random_lms["gpt2"]
    empty = select_adaptive([{"id": "t", "text": "x"}], model, tokenizer, AdaptConfig(), [])
    assert empty.samples == [] and empty.stats["clusters"] == [] and empty.stats["prune_reasons"] == {
        "no prompt/target": 1}
    one = select_adaptive(_families(1)[0], model, tokenizer, AdaptConfig(experts=["el2n", "loss"]), [])
    assert [c["chosen_on"] for c in one.stats["clusters"]] == ["default"] and one.samples[0]["expert"] == "el2n"
    # Skills too small to hold a row out take the expert that wins over the whole batch.
    few = select_adaptive(_families(3)[0] + _families(3)[1], model, tokenizer, AdaptConfig(n_clusters=6), [])
    assert {c["chosen_on"] for c in few.stats["clusters"]} == {"batch"} and len(few.samples) == 6
