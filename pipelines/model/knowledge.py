"""What the deployed system knows, derived from the data store (so a scrub changes it at once)."""

from __future__ import annotations

import random
from typing import Any


def is_fact(row: dict[str, Any]) -> bool:
    return bool(row.get("prompt")) and bool(row.get("target"))


def current_facts(admitted_rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """fact_id -> the latest admitted row for it (a changed fact supersedes the old one)."""
    facts: dict[str, dict[str, Any]] = {}
    for row in admitted_rows:
        if is_fact(row):
            facts[row.get("fact_id") or row["id"]] = row
    return facts


def paraphrases_of(row: dict[str, Any]) -> list[str]:
    """The row's usable paraphrases (non-empty strings), in order."""
    return [p for p in (row.get("paraphrases") or []) if isinstance(p, str) and p.strip()]


def paraphrase(row: dict[str, Any], template: int) -> str | None:
    """The row's own paraphrase number `template` (1 = the first), or its last one when it has fewer; None if none."""
    options = paraphrases_of(row)
    return options[min(template, len(options)) - 1] if options and template > 0 else None


def heldout_paraphrase(row: dict[str, Any]) -> str | None:
    """The row's last paraphrase: held out to measure generalisation, so nothing ever trains on it; None if none."""
    options = paraphrases_of(row)
    return options[-1] if options else None


def trainable_paraphrase(row: dict[str, Any], template: int) -> str | None:
    """The row's paraphrase number `template` (1 = the first) when it exists and is not the held-out last one."""
    options = paraphrases_of(row)
    return options[template - 1] if 0 < template < len(options) else None


def qa(row: dict[str, Any], template: int = 0) -> dict[str, Any]:
    """A fact row as a (prompt, target) pair; template k > 0 asks for the row's k-th paraphrase of the prompt (its
    last when it has fewer). For asking only: what trains on paraphrases takes them from `trainable_paraphrase`."""
    prompt = (paraphrase(row, template) if template else None) or row["prompt"]
    subject_ids = row.get("subject_ids") or [None]
    return {"id": row["id"], "prompt": prompt, "target": row["target"], "fact_id": row.get("fact_id"),
            "subject_id": subject_ids[0]}


def heldout_qa(row: dict[str, Any]) -> dict[str, Any] | None:
    """The fact row asked with its held-out paraphrase (`heldout_paraphrase`), or None when it has no paraphrase."""
    prompt = heldout_paraphrase(row)
    return {**qa(row), "prompt": prompt} if prompt else None


def known_by(model, tokenizer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The subset of fact rows a model recalls exactly: the facts whose loss a candidate must not cause."""
    from pipelines.model.lm import exact_match

    if not rows:
        return []
    hits = exact_match(model, tokenizer, [r["prompt"] for r in rows], [r["target"] for r in rows])
    return [r for r, hit in zip(rows, hits, strict=True) if hit]


def sample(items: list[Any], n: int, seed: int = 0) -> list[Any]:
    if len(items) <= n:
        return list(items)
    return random.Random(seed).sample(items, n)
