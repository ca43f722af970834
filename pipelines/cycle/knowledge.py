"""What the deployed system knows, derived from the data store (so a scrub changes it at once)."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from pipelines.world import World, generate_world, qas


@lru_cache(maxsize=4)
def world_for(seed: int, n_subjects: int) -> World:
    return generate_world(seed=seed, n_subjects=n_subjects)


def unseen_qas(seed: int, n_subjects: int) -> list[dict[str, Any]]:
    """Facts of the world's kind that no model is trained on: the "never learned it" comparison for forgetting."""
    return qas(world_for(seed, n_subjects).unseen_facts)


def fact_row(fact, source: str = "world-initial") -> dict[str, Any]:
    """An initial fact in the same row shape as an arriving batch."""
    return {
        "id": f"init-{fact.fact_id}",
        "kind": "fact",
        "text": fact.text(0),
        "prompt": fact.prompt(0),
        "target": fact.object,
        "previous_target": None,
        "fact_id": fact.fact_id,
        "subject_ids": [fact.subject_id],
        "subject": fact.subject,
        "relation": fact.relation,
        "paraphrases": [fact.prompt(k) for k in range(1, len(fact.templates))],
        "source": source,
        "license": "internal",
        "pii": False,
    }


def is_fact(row: dict[str, Any]) -> bool:
    return bool(row.get("prompt")) and bool(row.get("target"))


def current_facts(admitted_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """fact_id -> the latest admitted row for it (a changed fact supersedes the old one)."""
    facts: dict[str, dict[str, Any]] = {}
    for row in admitted_rows:
        if is_fact(row):
            facts[row.get("fact_id") or row["id"]] = row
    return facts


def paraphrase(row: dict[str, Any], template: int) -> str | None:
    """The row's own paraphrase number `template` (1 = the first), or its last one when it has fewer; None if none."""
    options = [p for p in (row.get("paraphrases") or []) if isinstance(p, str) and p.strip()]
    return options[min(template, len(options)) - 1] if options and template > 0 else None


def qa(row: dict[str, Any], world: World | None = None, template: int = 0) -> dict[str, Any]:
    """A fact row as a (prompt, target) pair; template > 0 asks for one of the row's paraphrases of the prompt
    (rows written before paraphrases were part of the contract fall back to the world's relation templates)."""
    prompt = (paraphrase(row, template) if template else None) or row["prompt"]
    relations = {r.name: r for r in world.relations} if world is not None else {}
    if template and not row.get("paraphrases") and row.get("relation") in relations and row.get("subject"):
        templates = relations[row["relation"]].templates
        prompt = templates[min(template, len(templates) - 1)].format(subject=row["subject"])
    subject_ids = row.get("subject_ids") or [None]
    return {"id": row["id"], "prompt": prompt, "target": row["target"], "fact_id": row.get("fact_id"),
            "subject_id": subject_ids[0]}


def sample(items: list[Any], n: int, seed: int = 0) -> list[Any]:
    if len(items) <= n:
        return list(items)
    return random.Random(seed).sample(items, n)
