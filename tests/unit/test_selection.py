"""Selection plugins: duplicates and known facts pruned, budget, caps, replay ratio, determinism."""

from __future__ import annotations

import pytest
from support_wordlm import word_lm

from pipelines.methods.selection import METHODS, AllSelectionConfig, SelectionConfig, select_all, select_samples
from pipelines.methods.selection.row_rules import assign_clusters, replay_count

RELATIONS = ("lives_in", "works_as", "likes")


def _fact(i: int, relation: str | None = "lives_in", prompt: str | None = None, target: str | None = None) -> dict:
    row = {
        "id": f"f{i}",
        "prompt": prompt or f"Home town of person{i}",
        "target": target or f"city{i}",
    }
    if relation is not None:
        row["relation"] = relation
    return row


KNOWN = [_fact(i) for i in range(6)]


@pytest.fixture(scope="module")
def lm():
    texts = [f"{r['prompt']} {r['target']}" for r in [_fact(i) for i in range(60)]]
    texts += [f"What does person{i} do ? job{i} . Does person{i} like food{i} ?" for i in range(60)]
    return word_lm(KNOWN, texts)


def _run(rows, lm, pool=None, **cfg):
    model, tokenizer = lm
    return select_samples(rows, model, tokenizer, SelectionConfig(**cfg), pool or [])


def test_known_facts_are_pruned_and_unknown_kept(lm):
    new = [_fact(i) for i in range(10, 16)]
    res = _run(KNOWN + new, lm, min_loss=1.0, replay_ratio=0.0)
    assert {r["id"] for r in res.samples} == {r["id"] for r in new}
    known = [r for r in res.pruned if r["prune_reason"] == "known"]
    assert {r["id"] for r in known} == {r["id"] for r in KNOWN}
    assert all(r["score"] < 1.0 for r in known)
    assert all(r["score"] >= 1.0 for r in res.samples)
    # With no threshold every fact is kept: the pruning comes from the model's scores, not from ids.
    assert len(_run(KNOWN + new, lm, min_loss=0.0, replay_ratio=0.0).samples) == 12


def test_exact_and_near_duplicates_are_pruned(lm):
    rows = [
        _fact(10),
        _fact(11, prompt="  Home  town of   PERSON10 ", target="city10"),  # same fact after normalisation
        _fact(12, prompt="Home town of person10 now", target="city10"),  # near duplicate, same target
        _fact(13, prompt="Home town of person10 now", target="city13"),  # same prompt, other target
        _fact(14),
    ]
    res = _run(rows, lm, min_loss=0.0, replay_ratio=0.0)
    reasons = {r["id"]: r["prune_reason"] for r in res.pruned}
    assert reasons.pop("f11") == "duplicate"
    assert next(r for r in res.pruned if r["id"] == "f11")["duplicate_of"] == "f10"
    # Of the two near-identical prompts with the same target, the one the model knows less survives.
    (twin, reason), = reasons.items()
    assert twin in ("f10", "f12") and reason == "near_duplicate"
    kept = "f12" if twin == "f10" else "f10"
    scores = {r["id"]: r["score"] for r in res.samples + res.pruned if "score" in r}
    assert scores[kept] >= scores[twin]
    assert {r["id"] for r in res.samples} == {kept, "f13", "f14"}
    assert res.stats["prune_reasons"] == {"duplicate": 1, "near_duplicate": 1}
    off = _run(rows, lm, min_loss=0.0, replay_ratio=0.0, dedup=False)
    assert len(off.samples) == 5 and not off.pruned


def test_rows_without_prompt_or_target_are_skipped(lm):
    rows = [_fact(10), {"id": "t1", "text": "free text"}, {"id": "t2", "prompt": "Where ?", "target": "  "}]
    res = _run(rows, lm, min_loss=0.0, replay_ratio=0.0)
    assert [r["id"] for r in res.samples] == ["f10"]
    assert sorted((r["id"], r["prune_reason"]) for r in res.pruned) == [
        ("t1", "no prompt/target"),
        ("t2", "no prompt/target"),
    ]
    assert res.stats["n_in"] == 3 and res.stats["n_selected"] == 1 and res.stats["n_pruned"] == 2


def test_budget_is_respected_and_spread_over_clusters(lm):
    rows = [_fact(10 + i, relation=RELATIONS[i % 3]) for i in range(30)]
    res = _run(rows, lm, min_loss=0.0, budget=7, replay_ratio=0.0)
    assert len(res.samples) == 7
    per = res.stats["per_cluster"]
    assert sorted(v["selected"] for v in per.values()) == [2, 2, 3]
    assert sum(1 for r in res.pruned if r["prune_reason"] == "budget") == 23
    # Within a cluster the highest-scoring rows win.
    for rel in RELATIONS:
        chosen = [r["score"] for r in res.samples if r["cluster"] == rel]
        left = [r["score"] for r in res.pruned if r["cluster"] == rel]
        assert min(chosen) >= max(left)


def test_per_cluster_cap(lm):
    rows = [_fact(10 + i, relation="lives_in" if i < 8 else "likes") for i in range(10)]
    res = _run(rows, lm, min_loss=0.0, per_cluster_cap=3, replay_ratio=0.0)
    assert res.stats["per_cluster"]["lives_in"]["selected"] == 3
    assert res.stats["per_cluster"]["likes"]["selected"] == 2
    assert res.stats["prune_reasons"] == {"cluster_cap": 5}


def test_replay_ratio_and_balance(lm):
    rows = [_fact(10 + i) for i in range(17)]
    pool = [_fact(100 + i, relation=RELATIONS[i % 3]) for i in range(60)] + [rows[0]]  # one overlaps a sample
    res = _run(rows, lm, pool=pool, min_loss=0.0, replay_ratio=0.15)
    assert len(res.samples) == 17
    assert len(res.replay) == replay_count(0.15, 17) == 3
    share = len(res.replay) / (len(res.samples) + len(res.replay))
    assert abs(share - 0.15) < 0.05
    assert sorted(r["cluster"] for r in res.replay) == sorted(RELATIONS)
    assert all(r["replay"] for r in res.replay)
    assert not {r["id"] for r in res.replay} & {r["id"] for r in res.samples}
    big = _run(rows, lm, pool=pool, min_loss=0.0, replay_ratio=0.5)
    assert len(big.replay) == 17
    counts = [sum(1 for r in big.replay if r["cluster"] == c) for c in RELATIONS]
    assert max(counts) - min(counts) <= 1
    small_pool = _run(rows, lm, pool=pool[:2], min_loss=0.0, replay_ratio=0.5)
    assert len(small_pool.replay) == 2 and small_pool.stats["replay_requested"] == 17


def test_deterministic_given_seed(lm):
    rows = [_fact(10 + i, relation=None) for i in range(20)]
    pool = [_fact(100 + i, relation=None, prompt=f"What does person{i} do ?", target=f"job{i}") for i in range(30)]
    a = _run(rows, lm, pool=pool, min_loss=0.0, budget=8, replay_ratio=0.3, seed=3)
    b = _run(rows, lm, pool=pool, min_loss=0.0, budget=8, replay_ratio=0.3, seed=3)
    assert a.samples == b.samples and a.replay == b.replay and a.stats == b.stats
    assert all(r["cluster"].startswith("topic_") for r in a.samples)
    seeds = {tuple(r["id"] for r in _run(rows, lm, pool=pool, min_loss=0.0, replay_ratio=0.3, seed=s).replay)
             for s in range(4)}
    assert len(seeds) > 1  # the seed really drives the replay draw


def test_kmeans_clusters_group_similar_rows():
    rows = [{"prompt": f"What does person{i} do ?", "target": "teacher"} for i in range(6)]
    rows += [{"prompt": f"Which food does person{i} like best ?", "target": "bread"} for i in range(6)]
    labels = assign_clusters(rows, seed=0, n_clusters=2)
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]
    mixed = assign_clusters([{"prompt": "a", "target": "b", "relation": "likes"}, rows[0]], seed=0)
    assert mixed == ["likes", "topic_0"]


def test_all_baseline_keeps_everything():
    rows = [_fact(1), _fact(1), {"id": "t", "text": "x"}]
    pool = [_fact(100 + i, relation=RELATIONS[i % 3]) for i in range(30)]
    res = select_all(rows, None, None, AllSelectionConfig(replay_ratio=0.5), pool)
    assert len(res.samples) == 2 and all(r["score"] is None for r in res.samples)
    assert [r["prune_reason"] for r in res.pruned] == ["no prompt/target"]
    assert len(res.replay) == 2 and res.stats["method"] == "all"
    assert res.training_rows == res.samples + res.replay


def test_registered_methods_validate_their_config():
    method = METHODS["cluster_score"]
    assert method.kind == "selection" and method.impl is select_samples
    assert METHODS["all"].impl is select_all
    assert method.config({"budget": 5}).budget == 5
    with pytest.raises(ValueError, match="replay_ratio"):
        method.config({"replay_ratio": 1.0})
    with pytest.raises(ValueError, match="budgt"):
        method.config({"budgt": 5})
    with pytest.raises(ValueError, match="model and tokenizer"):
        select_samples([_fact(1)], None, None, SelectionConfig(), [])
