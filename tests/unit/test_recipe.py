"""A checkpoint that carries its training recipe can be retrained without the forget set, whatever its architecture;
one that carries none cannot, and the engine says so instead of guessing."""

from __future__ import annotations

import pytest
from support_byo import write_data_dir
from support_checkpoints import GENERAL_TEXT, write_checkpoint
from support_forget import HashEmbedder, file

from pipelines.deployment.workspace import Workspace
from pipelines.forget import process_request
from pipelines.forget.reference import _reference_plan, reference_kind, retrained_reference
from pipelines.governance.initialise import init_deployment, validate
from pipelines.model.recipe import TrainingRecipe, read_recipe, recipe_qas, write_recipe
from policies import load_policy

RECIPE = TrainingRecipe(seed=3, learning_rate=3e-3, batch_size=16, max_epochs=2, target_recall=1.0,
                        paraphrases_in_training=[0, 1])


def _deploy(tmp_path, with_recipe: bool) -> Workspace:
    checkpoint = write_checkpoint(tmp_path / "llama", "llama")
    if with_recipe:
        write_recipe(checkpoint, RECIPE, GENERAL_TEXT[:12])
    policy = load_policy("default")
    info, rows = validate(policy, str(checkpoint), write_data_dir(tmp_path / "tables", range(20), range(120, 130)))
    ws = Workspace.open(tmp_path / "home")
    init_deployment(ws, policy, str(checkpoint), rows, info, embedder=HashEmbedder())
    return ws


def test_recipe_round_trips_and_is_refused_when_malformed(tmp_path):
    write_recipe(tmp_path, RECIPE, ["one text", "two texts"])
    assert read_recipe(tmp_path) == (RECIPE, ["one text", "two texts"])
    assert read_recipe(tmp_path / "nothing-here") is None
    with pytest.raises(ValueError, match="must include 0"):
        TrainingRecipe(paraphrases_in_training=[1])


def test_a_llama_checkpoint_with_its_recipe_is_retrained_without_the_forgotten_facts(tmp_path):
    ws = _deploy(tmp_path, with_recipe=True)
    policy = load_policy("default")
    assert ws.deployment()["recipe"] is True and reference_kind(policy, ws) == "retrain"
    before = _reference_plan(ws)
    assert len(before.main) == 20 and len(before.rows) == 40, "each kept fact under its prompt and first paraphrase"

    victim = next(r for r in ws.data.rows("admitted", "initial") if r.get("prompt"))
    file(ws, "req-ref-1", subject_ids=victim["subject_ids"])
    small = policy.model_copy(update={"unlearning": policy.unlearning.model_copy(update={"max_share": 0.5})})
    assert process_request(ws, "req-ref-1", embedder=HashEmbedder(), policy=small)["state"] == "planned"
    after = _reference_plan(ws)
    forgotten = {q["fact_id"] for q in before.main} - {q["fact_id"] for q in after.main}
    assert forgotten and all(fid.startswith(victim["subject_ids"][0] + ":") for fid in forgotten)
    assert {q["prompt"] for q in after.rows}.isdisjoint({victim["prompt"], *victim["paraphrases"]})
    assert not {q["prompt"] for q in before.rows} & {r["paraphrases"][-1] for r in ws.data.rows("admitted", "initial")
                                                   if r.get("paraphrases")}, "never the held-out paraphrase"
    assert after.folder != before.folder, "the cache key follows the knowledge it was trained on"

    model, _, report = retrained_reference(ws)
    assert type(model).__name__ == "LlamaForCausalLM" and report["facts"] == len(after.main)
    assert report["epochs"] <= RECIPE.max_epochs
    _, _, again = retrained_reference(ws)
    assert again == report, "a second request over the same knowledge loads the cached reference"


def test_a_checkpoint_without_a_recipe_falls_back_to_never_seen_facts(tmp_path):
    ws = _deploy(tmp_path, with_recipe=False)
    policy = load_policy("default")
    assert ws.deployment()["recipe"] is False and reference_kind(policy, ws) == "unseen"
    strict = policy.model_copy(update={"unlearning": policy.unlearning.model_copy(update={"reference": "retrain"})})
    with pytest.raises(ValueError, match="carries no training recipe.*fix: set unlearning.reference"):
        reference_kind(strict, ws)


def test_a_recipe_never_trains_on_a_facts_held_out_last_paraphrase():
    """paraphrases_in_training names indices; a fact's last paraphrase is held out for evaluation
    (pipelines.deployment.evalsets.paraphrases), so an index that reaches it, or lies beyond the fact's paraphrases, adds
    nothing for that fact, whatever number of paraphrases each fact has."""
    facts = [{"id": "a", "prompt": "A is", "target": "x", "paraphrases": ["A1", "A2", "A3 held out"]},
             {"id": "b", "prompt": "B is", "target": "y", "paraphrases": ["B1 held out"]},
             {"id": "c", "prompt": "C is", "target": "z"}]
    rows = recipe_qas(facts, TrainingRecipe(paraphrases_in_training=[0, 1, 2, 3]))
    assert [(q["id"], q["prompt"]) for q in rows] == [("a", "A is"), ("b", "B is"), ("c", "C is"), ("a", "A1"),
                                                      ("a", "A2")]
    assert [q["target"] for q in rows] == ["x", "y", "z", "x", "x"]
    assert recipe_qas(facts, TrainingRecipe(paraphrases_in_training=[0])) == rows[:3]
