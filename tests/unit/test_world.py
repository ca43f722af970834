"""Demo world: determinism, batch contents and defects, tokenizer coverage, base-model bootstrap and cache."""

from __future__ import annotations

import json
import re

import pytest

from memgov.demo.tokenizer import build_tokenizer
from memgov.demo.world import (
    BAD_LICENSE,
    GOOD_LICENSES,
    HELDOUT_TEMPLATE,
    SYLLABLES,
    batch_facts,
    generate_world,
    qas,
    split_name,
    write_inbox,
)


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0)


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


def _initial_text(world) -> list[str]:
    """Everything the base model trains on or retrieves from: the initial facts' texts, documents, general text."""
    return [f.text(k) for f in world.facts for k in range(len(f.templates))] + [d["text"] for d in world.documents] + list(
        world.general_text
    )


def test_same_seed_same_world_and_different_seed_differs():
    a, b, c = generate_world(3), generate_world(3), generate_world(4)
    assert a == b
    assert [f.text() for f in a.facts] != [f.text() for f in c.facts]


def test_world_sizes_and_shapes(world):
    assert len(world.relations) >= 5
    assert len(world.facts) == 120 * len(world.relations) >= 600
    assert len(world.unseen_facts) >= 60
    assert len(world.documents) == len(world.facts)
    assert len(set(world.general_text)) == len(world.general_text) >= 300
    f = world.facts[0]
    assert re.fullmatch(r"f\d{5}", f.fact_id) and re.fullmatch(r"s\d{4}", f.subject_id)
    assert f.text(1) == f.prompt(1) + " " + f.object
    qa = f.qa(2)
    assert set(qa) == {"id", "prompt", "target", "fact_id", "subject_id", "relation"}
    assert qa["prompt"].endswith(f.templates[2].split("}")[-1]) and qa["target"] == f.object
    with pytest.raises(ValueError, match="template index"):
        f.prompt(7)
    for rel in world.relations:
        assert len(rel.templates) >= 4 and 8 <= len(rel.objects) <= 20
        assert all(t.format(subject="X").endswith(t.split("{subject}")[-1]) for t in rel.templates)


def test_documents_are_sentences_about_their_fact(world):
    by_id = {f.fact_id: f for f in world.facts}
    for doc in world.documents:
        fact = by_id[doc["fact_id"]]
        assert doc["subject_ids"] == [fact.subject_id]
        assert fact.subject in doc["text"] and fact.object in doc["text"] and doc["text"].endswith(".")


def test_subjects_are_unique_and_disjoint_across_sets(world):
    initial = {f.subject_id for f in world.facts}
    unseen = {f.subject_id for f in world.unseen_facts}
    per_batch = [{r["subject_ids"][0] for r in b.rows if b.name != "batch_002_changed_facts" or not r["previous_target"]}
                 for b in world.batches]
    groups = [initial, unseen, *per_batch]
    for i, g in enumerate(groups):
        for h in groups[i + 1 :]:
            assert not g & h
    names = list(world.subjects.values())
    assert len(names) == len(set(names))
    # Unseen subjects never appear in any text of the initial world.
    blob = "\n".join(_initial_text(world))
    assert not any(re.search(rf"\b{world.subjects[s]}\b", blob) for s in unseen)


def test_large_world_has_unique_names():
    w = generate_world(seed=1, n_subjects=10_000)
    assert len(w.facts) == 50_000
    assert len(set(w.subjects.values())) == len(w.subjects)
    with pytest.raises(ValueError, match="n_subjects"):
        generate_world(n_subjects=0)


def test_batch_001_bad_rows_each_have_exactly_one_defect(world):
    b = world.batch("batch_001_new_facts")
    good = [r for r in b.rows if "_defect" not in r]
    bad = {r["_defect"]: r for r in b.rows if "_defect" in r}
    assert 90 <= len(good) <= 110 and len({r["subject_ids"][0] for r in good}) >= 20
    assert set(bad) == {"text_null", "id_null", "text_too_long", "duplicate_id", "email", "phone", "ssn", "license"}
    for r in good:
        assert r["text"] == f"{r['prompt']} {r['target']}" and r["license"] in GOOD_LICENSES and r["pii"] is False
        assert r["kind"] == "fact" and r["previous_target"] is None and len(r["text"]) <= 400
    email = re.compile(r"[\w.+-]+@[\w-]+\.\w+")
    phone = re.compile(r"\(?\d{3}\)?[ -]\d{3}-\d{4}")
    ssn = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
    checks = {
        "text_null": lambda r: r["text"] is None,
        "id_null": lambda r: r["id"] is None,
        "text_too_long": lambda r: r["text"] is not None and len(r["text"]) > 400,
        "duplicate_id": lambda r: r["id"] is not None and sum(x["id"] == r["id"] for x in b.rows) > 1,
        "email": lambda r: bool(r["text"] and email.search(r["text"])),
        "phone": lambda r: bool(r["text"] and phone.search(r["text"])),
        "ssn": lambda r: bool(r["text"] and ssn.search(r["text"])),
        "license": lambda r: r["license"] == BAD_LICENSE,
    }
    for name, row in bad.items():
        hits = [d for d, check in checks.items() if check(row)]
        assert hits == [name], (name, hits)
    for row in good:  # the first good row shares its id with the duplicate; no other check fires on it
        assert [d for d, c in checks.items() if c(row) and d != "duplicate_id"] == []


def test_batch_002_changes_existing_facts(world):
    b = world.batch("batch_002_changed_facts")
    initial = {f.fact_id: f for f in world.facts}
    changed = [r for r in b.rows if r["previous_target"] is not None]
    new = [r for r in b.rows if r["previous_target"] is None]
    assert len(changed) == 20 and len(new) == 40
    for r in changed:
        old = initial[r["fact_id"]]
        assert r["previous_target"] == old.object != r["target"]
        assert (r["subject_ids"], r["relation"], r["prompt"]) == ([old.subject_id], old.relation, old.prompt(0))
    assert not {r["fact_id"] for r in new} & set(initial)


def test_batch_003_overrides_and_inbox(world, tmp_path):
    b = world.batch("batch_003_aggressive_update")
    assert len(b.rows) == 60
    assert b.policy_overrides["update"]["params"]["target_recall"] >= 1.0  # never stops early
    assert b.policy_overrides["selection"]["params"]["replay_ratio"] == 0.0
    paths = write_inbox(world, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        [f"{x.name}.jsonl" for x in world.batches] + ["batch_003_aggressive_update.policy.json"]
    )
    rows = [json.loads(line) for line in (tmp_path / "batch_001_new_facts.jsonl").read_text().splitlines()]
    assert rows == world.batch("batch_001_new_facts").rows
    assert json.loads((tmp_path / "batch_003_aggressive_update.policy.json").read_text()) == b.policy_overrides
    assert len(batch_facts(world.batch("batch_001_new_facts"))) == 100


def test_split_name_is_unique_and_rejects_foreign_words(world):
    for name in world.subjects.values():
        assert "".join(split_name(name)).capitalize() == name
    for word in ("Ashford", "Northwick", "Many", "Most"):
        with pytest.raises(ValueError, match="syllable"):
            split_name(word)


def test_every_subject_tokenizes_into_trained_syllable_pieces(world, tokenizer):
    unk = tokenizer.unk_token_id
    trained = {t for text in _initial_text(world) for t in tokenizer(text, add_special_tokens=False)["input_ids"]}
    assert unk not in trained
    others = [f.subject for f in world.unseen_facts] + [r["subject"] for b in world.batches for r in b.rows]
    for name in {*world.subjects.values(), *others}:
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(name, add_special_tokens=False)["input_ids"])
        assert [p.lstrip("\u2581").lower() for p in pieces] == split_name(name), name
        assert set(tokenizer.convert_tokens_to_ids(pieces)) <= trained, name
    # Any name the inventory can build (not only this world's) is covered.
    for a in SYLLABLES:
        name = f"{a}{SYLLABLES[-1]}{a}".capitalize()
        assert unk not in tokenizer(name, add_special_tokens=False)["input_ids"]


def test_objects_and_words_are_single_tokens(world, tokenizer):
    for rel in world.relations:
        for obj in rel.objects:
            assert len(tokenizer(" " + obj, add_special_tokens=False)["input_ids"]) == 1, obj
    for text in world.general_text[:50]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(re.findall(r"\w+|[^\w\s]", text))
        assert tokenizer.decode(ids) == text
    r = world.batches[0].rows[0]
    ids = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] + tokenizer(
        " " + r["target"], add_special_tokens=False
    )["input_ids"]
    assert ids == tokenizer(r["text"], add_special_tokens=False)["input_ids"]
    assert {tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token} == {
        "<pad>", "<s>", "</s>", "<unk>"
    }  # fmt: skip
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_base_model_config_rejects_bad_values():
    from memgov.demo.model import BaseModelConfig

    with pytest.raises(ValueError, match="extra"):
        BaseModelConfig(n_layers=3)
    with pytest.raises(ValueError, match="divisible"):
        BaseModelConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="main template"):
        BaseModelConfig(paraphrases_in_training=[1, 2])
    with pytest.raises(ValueError, match="held out"):
        BaseModelConfig(paraphrases_in_training=[0, HELDOUT_TEMPLATE])


def test_each_relation_has_four_templates_and_the_held_out_last_one_is_never_trained_on(world, tokenizer):
    """Main prompt + at least two trained paraphrases (three phrasings per fact) + the held-out last template: the
    base model's recipe never names it, its training rows never hold it, and it is the paraphrase the engine's
    paraphrase set asks (each row's last)."""
    from memgov.demo.deployment import demo_config, fact_row
    from memgov.demo.model import BaseModelConfig, training_qas
    from pipelines.deployment import evalsets
    from policies import load_policy

    for rel in world.relations:
        assert len(rel.templates) >= 4 and len(set(rel.templates)) == len(rel.templates)
        assert len(rel.templates) - 1 == HELDOUT_TEMPLATE
    _, tiny = demo_config(load_policy("demo"))
    for cfg in (tiny, BaseModelConfig()):
        indices = cfg.recipe().paraphrases_in_training
        assert len(indices) >= 3 and HELDOUT_TEMPLATE not in indices and max(indices) < HELDOUT_TEMPLATE
    trained = {q["prompt"] for q in training_qas(world, tiny)}
    held_out = {f.prompt(HELDOUT_TEMPLATE) for f in world.facts}
    assert len(trained) == len(world.facts) * len(tiny.paraphrases_in_training) and not trained & held_out
    rows = [fact_row(f) for f in world.facts]
    assert {q["prompt"] for q in evalsets.paraphrases(rows).items} == held_out
    for r in (r for b in world.batches for r in b.rows):
        held = world.relation(r["relation"]).templates[HELDOUT_TEMPLATE].format(subject=r["subject"])
        assert len(r["paraphrases"]) == HELDOUT_TEMPLATE and r["paraphrases"][-1] == held
    # The held-out phrasing is new, its words are not: each of its tokens but the subject's occurs in what the
    # base model trains on (trained prompts and general text), so none reaches the model untrained.
    def ids(texts):
        return {i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]}

    seen = ids([q["prompt"] for q in training_qas(world, tiny)] + world.general_text)
    for f in world.facts[: len(world.relations)]:  # one fact of each relation
        assert ids([f.prompt(HELDOUT_TEMPLATE)]) - ids([f.subject]) <= seen, f.relation


def test_base_model_learns_facts_and_is_cached(tmp_path, monkeypatch):
    from memgov.demo import model as basemodel
    from pipelines.model.lm import score_qa

    # Cheapest shape that still learns: 30 subjects, main template only, no general text (~100 steps).
    cfg = basemodel.BaseModelConfig(
        n_subjects=30, general_text=False, paraphrases_in_training=[0], target_recall=0.95, max_epochs=150
    )
    path = basemodel.ensure_base_model(tmp_path, cfg, progress=False)
    assert path.parent == tmp_path and path.name == basemodel.config_hash(cfg)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    report = basemodel.read_report(path)
    assert report["recall"] >= 0.9 and report["steps"] > 0 and report["held_out_templates"] == [1, 2, 3]

    model, tok = basemodel.load_base_model(path)
    facts = generate_world(cfg.seed, cfg.n_subjects).facts
    em = score_qa(model, tok, [f.prompt() for f in facts], [f.object for f in facts]).exact_match
    assert em.mean() >= 0.9
    assert abs(em.mean() - report["recall"]) < 1e-6

    def boom(*_a, **_k):
        raise AssertionError("cache miss: the model was trained again")

    monkeypatch.setattr(basemodel, "train_base_model", boom)
    assert basemodel.ensure_base_model(tmp_path, cfg, progress=False) == path
    with pytest.raises(AssertionError, match="cache miss"):
        basemodel.ensure_base_model(tmp_path, cfg.model_copy(update={"seed": 1}), progress=False)


def test_curriculum_grows_subject_subsets_until_every_row():
    from memgov.demo.model import BaseModelConfig
    from pipelines.model.recipe import curriculum

    world = generate_world(0, 60)
    rows = [q for k in (0, 1) for q in qas(world.facts, k)]
    stages = curriculum(rows, BaseModelConfig(n_subjects=60, curriculum_start=5).recipe())
    subjects = [{r["subject_id"] for r in stage} for stage in stages]
    assert [len(s) for s in subjects] == [5, 15, 60], "x3 per stage while the next stage still fits, then all"
    assert subjects[0] < subjects[1] < subjects[2]
    assert stages[-1] == rows
    assert all(len(stage) == 10 * len(s) for stage, s in zip(stages, subjects, strict=True)), "whole subjects only"
    assert curriculum(rows, BaseModelConfig(n_subjects=60).recipe()) == [rows]
    with pytest.raises(ValueError, match="curriculum_start"):
        BaseModelConfig(curriculum_start=0)


def test_curriculum_training_learns_each_stage_then_every_fact():
    from memgov.demo import model as basemodel
    from pipelines.model import recipe
    from pipelines.model.lm import score_qa

    cfg = basemodel.BaseModelConfig(n_subjects=12, general_text=False, paraphrases_in_training=[0],
                                    target_recall=0.95, max_epochs=200, curriculum_start=4)
    world = generate_world(cfg.seed, cfg.n_subjects)
    tok = build_tokenizer(world)
    model = basemodel.build_model(cfg, tok)
    rows = qas(world.facts, 0)
    report = recipe.train_on_facts(model, tok, rows, [], cfg.recipe(), progress=False)
    (stage,) = report["stages"]
    assert stage["rows"] == 20 and stage["recall"] >= recipe.STAGE_RECALL
    assert report["epochs"] > stage["epochs"] and report["reached_target"]
    em = score_qa(model, tok, [q["prompt"] for q in rows], [q["target"] for q in rows]).exact_match
    assert em.mean() >= 0.95
