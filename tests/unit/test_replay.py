"""Replay under a token budget: old facts on a recall interval, general text kept apart from the general eval split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support_checkpoints import write_checkpoint
from support_forget import HashEmbedder, fact, write_batch

from pipelines.cycle import stages
from pipelines.deployment.workspace import Workspace
from pipelines.governance.initialise import InitError, init_deployment, validate
from pipelines.methods.selection.replay import OVERLAPS_EVAL, general_replay, last_seen, old_replay, overlap
from policies import load_policy
from policies.schema import ReplaySection

POLICY = load_policy("default")


def words(row) -> int:
    return len(f"{row['prompt']} {row['target']}".split())


def pool(n: int) -> list[dict]:
    return [{**fact(i), "relation": f"rel{i % 3}"} for i in range(n)]


def test_old_replay_stays_within_its_token_budget_and_spreads_over_skills():
    draw = old_replay(pool(30), 40, words, seen={}, cycle=0, interval=1)
    assert 0 < draw.tokens <= 40 and draw.tokens == sum(words(r) for r in draw.rows)
    assert len({r["relation"] for r in draw.rows}) == 3, "a budget that ends early still covers every skill"
    assert all(r["replay"] for r in draw.rows)


def test_a_replayed_fact_comes_back_only_after_its_interval_and_the_pool_rotates():
    facts, history, replayed = pool(24), [], []
    for cycle in range(6):
        draw = old_replay(facts, 48, words, seen=last_seen(history), cycle=cycle, interval=3)
        ids = [r["fact_id"] for r in draw.rows]
        for earlier in replayed[-2:]:
            assert not set(ids) & set(earlier), "a fact replayed one or two cycles ago is not due yet"
        assert draw.stats["replayed_early"] == 0
        replayed.append(ids)
        history.append([{"role": "replay", "fact_id": f} for f in ids])
    assert {f for ids in replayed for f in ids} == {r["fact_id"] for r in facts}, "every fact came back in turn"


def test_not_yet_due_facts_fill_a_budget_the_due_ones_leave():
    facts = pool(6)
    seen = {r["fact_id"]: 0 for r in facts[:4]}  # four replayed in cycle 0
    draw = old_replay(facts, 10_000, words, seen=seen, cycle=1, interval=5)
    assert {r["fact_id"] for r in draw.rows[:2]} == {facts[4]["fact_id"], facts[5]["fact_id"]}, "due ones first"
    assert draw.stats["replayed_due"] == 2 and draw.stats["replayed_early"] == 4


def test_general_replay_windows_rotate_through_the_fixed_set_within_budget():
    texts = [{"id": f"gr{i}", "text": f"general sentence number {i} about nothing"} for i in range(20)]
    count = lambda t: len(t.split())  # noqa: E731
    windows = [general_replay(texts, 30, count, cycle=c) for c in range(4)]
    assert all(0 < w.tokens <= 30 for w in windows)
    first, second = ({r["id"] for r in w.rows} for w in windows[:2])
    assert not first & second, "the next cycle moves on to the next texts"
    assert {r["id"] for w in windows for r in w.rows} == {t["id"] for t in texts}, "the whole set comes round"
    assert general_replay(texts, 30, count, cycle=1).rows == windows[1].rows, "deterministic"


def test_overlap_ignores_case_and_spacing():
    replay = [{"id": "a", "text": "The  river runs."}, {"id": "b", "text": "A market day."}]
    assert [r["id"] for r in overlap(replay, [{"text": "the river RUNS."}])] == ["a"]


# The engine's side: the contract table, admission and the select stage.

GENERAL = [f"The weather {w} over the {p} today." for w in ("turns", "clears", "holds") for p in ("hills", "bay")]
REPLAY = [f"A {a} {n} stood by the {p}." for a in ("tall", "red", "old") for n in ("tree", "house")
          for p in ("road", "lake")]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _text_rows(prefix: str, kind: str, texts: list[str]) -> list[dict]:
    return [{"id": f"{prefix}{i}", "kind": kind, "text": t, "subject_ids": [], "source": "corpus", "license": "cc0"}
            for i, t in enumerate(texts)]


def _data(tmp: Path, replay_texts: list[str]) -> Path:
    data = tmp / "data"
    data.mkdir()
    _jsonl(data / "facts.jsonl", [{**fact(i), "kind": "fact"} for i in range(30)])
    _jsonl(data / "general.jsonl", _text_rows("g", "general", GENERAL))
    _jsonl(data / "general_replay.jsonl", _text_rows("gr", "general_replay", replay_texts))
    return data


@pytest.fixture
def deployment(tmp_path) -> Workspace:
    checkpoint = write_checkpoint(tmp_path / "ckpt", "gpt2")
    info, rows = validate(POLICY, str(checkpoint), _data(tmp_path, REPLAY))
    ws = Workspace.open(tmp_path / "home")
    init_deployment(ws, POLICY, str(checkpoint), rows, info, embedder=HashEmbedder())
    return ws


def test_init_refuses_general_replay_text_that_the_general_eval_split_scores(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "ckpt", "gpt2")
    with pytest.raises(InitError) as err:
        validate(POLICY, str(checkpoint), _data(tmp_path, [*REPLAY, GENERAL[2].upper()]))
    assert "general_replay.jsonl row 'gr12'" in str(err.value) and OVERLAPS_EVAL in str(err.value)
    assert "fix: keep each text in one of the two tables" in str(err.value)


def test_a_batch_cannot_slip_an_evaluated_text_into_general_replay(deployment):
    ws = deployment
    assert [r["id"] for r in ws.data.rows("general_replay")] == [f"gr{i}" for i in range(len(REPLAY))]
    write_batch(ws, "b1", [*_text_rows("new", "general_replay", ["Fresh general words here.", GENERAL[0]]),
                           *_text_rows("evalnew", "general", [REPLAY[0]]), {**fact(40), "kind": "fact"}])
    out = stages.admit(ws, POLICY, "b1.jsonl")
    quarantined = {r["id"]: r["quarantine_reasons"] for r in ws.data.records("quarantine", "b1")}
    assert set(quarantined) == {"new1", "evalnew0"}, "both directions of an overlap are refused"
    assert all(OVERLAPS_EVAL in reasons[0] for reasons in quarantined.values())
    assert [r["id"] for r in ws.data.rows("general_replay", "b1")] == ["new0"]
    assert out.evaluation_rows == {"general_replay": 1} and out.admitted == 1
    assert "new0" not in {r["id"] for r in ws.data.records("documents")}, "general replay text is not indexed"
    scored = {r["text"] for r in ws.data.rows("eval_general")}
    assert not scored & {r["text"] for r in ws.data.rows("general_replay")}


def test_select_draws_token_budgeted_spaced_replay_and_a_window_of_general_text(deployment):
    ws = deployment
    policy = POLICY.model_copy(update={"replay": ReplaySection(old_tokens=60, recall_interval=2, general_tokens=24)})
    replayed = []
    for b in range(2):
        write_batch(ws, f"b{b}", [{**fact(100 + 10 * b + i), "kind": "fact"} for i in range(3)])
        selected = stages.select(ws, policy, stages.admit(ws, policy, f"b{b}.jsonl"), progress=False)
        rows = ws.data.rows("selections", f"b{b}")
        replay = [r for r in rows if r["role"] == "replay"]
        general = [r for r in rows if r["role"] == "general"]
        assert 0 < selected.replay_tokens <= 60 and selected.stats["replay"]["source"] == "policy replay.old_tokens"
        assert 0 < selected.general_tokens <= 24 and selected.n_general == len(general) > 0
        assert {r["id"] for r in general} <= {r["id"] for r in ws.data.rows("general_replay")}
        assert not {r["text"] for r in general} & set(GENERAL), "never the text the perplexity gate scores"
        replayed.append({r["fact_id"] for r in replay})
    assert not replayed[0] & replayed[1], "with interval 2, last cycle's replay is not due again"


def test_general_replay_without_a_table_says_how_to_supply_one(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "ckpt", "gpt2")
    data = _data(tmp_path, [])
    (data / "general_replay.jsonl").unlink()
    info, rows = validate(POLICY, str(checkpoint), data)
    ws = Workspace.open(tmp_path / "home")
    init_deployment(ws, POLICY, str(checkpoint), rows, info, embedder=HashEmbedder())
    policy = POLICY.model_copy(update={"replay": ReplaySection(general_tokens=24)})
    write_batch(ws, "b0", [{**fact(100), "kind": "fact"}])
    with pytest.raises(ValueError, match="no general_replay table; fix: supply general text"):
        stages.select(ws, policy, stages.admit(ws, policy, "b0.jsonl"), progress=False)


def test_rows_a_selector_prunes_from_the_pool_are_recorded_and_never_replayed_again(deployment):
    ws = deployment
    params = {"pool_max_size": 10, "replay_ratio": 0.5, "n_clusters": 2}
    policy = POLICY.model_copy(update={"selection": POLICY.selection.model_copy(update={"method": "adapt",
                                                                                       "params": params})})
    write_batch(ws, "b0", [{**fact(100 + i), "kind": "fact"} for i in range(4)])
    stages.select(ws, policy, stages.admit(ws, policy, "b0.jsonl"), progress=False)
    pruned = {r["id"]: r for r in ws.data.records("pool_pruned")}
    assert len(pruned) == 20 and all(r["reason"] for r in pruned.values()), "30 facts in the pool, bounded to 10"
    assert all(r["fact_id"] and r["subject_ids"] for r in pruned.values()), "a forget request finds them by subject"
    write_batch(ws, "b1", [{**fact(110 + i), "kind": "fact"} for i in range(4)])
    stages.select(ws, policy, stages.admit(ws, policy, "b1.jsonl"), progress=False)
    for batch in ("b0", "b1"):
        replayed = {r["id"] for r in ws.data.rows("selections", batch) if r["role"] == "replay"}
        assert replayed and not replayed & set(pruned), "a pruned row never comes back"
    assert set(pruned) <= {r["id"] for r in ws.data.records("pool_pruned")}, "pruning is permanent"


def test_the_selection_report_names_clusters_experts_reasons_and_replay_costs(deployment):
    from pipelines.methods.selection.report import selection_markdown

    ws = deployment
    params = {"pool_max_size": 12, "replay_ratio": 0.0, "n_clusters": 2, "budget": 3}
    policy = POLICY.model_copy(update={
        "selection": POLICY.selection.model_copy(update={"method": "adapt", "params": params}),
        "replay": ReplaySection(old_tokens=50, recall_interval=2, general_tokens=20)})
    write_batch(ws, "b0", [{**fact(100 + i), "kind": "fact"} for i in range(6)])
    selected = stages.select(ws, policy, stages.admit(ws, policy, "b0.jsonl"), progress=False)
    md = selection_markdown(selected.method, selected.stats, selected.prune_reasons)
    assert "**Selection `adapt`**: 3 of 6 rows chosen, 3 left out." in md
    clusters = [line for line in md.splitlines() if line.startswith("| skill_")]
    assert len(clusters) == 2 and all(any(e in line for e in ("loss", "el2n", "grad_norm", "density"))
                                      for line in clusters)
    assert "| budget | 3 |" in md
    assert f"{selected.replay_tokens} tokens of a 50-token budget" in md and "recall interval of 2 cycles" in md
    assert "General replay:" in md and "Replay pool: 18 rows pruned for good (" in md and "; 12 kept." in md
