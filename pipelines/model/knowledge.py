"""What the deployed system knows, derived from the data store (so a scrub changes it at once)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from pipelines.core.rows import ContractRow, as_row

Row = ContractRow | Mapping[str, Any]  # a typed record, or a mapping a caller built (read as one)


def is_fact(row: Row) -> bool:
    """A row with a prompt and a target; a derived item (a QA dict) is read as the mapping it is."""
    if isinstance(row, ContractRow):
        return row.is_question
    return bool(row.get("prompt")) and bool(row.get("target"))


def current_facts(admitted_rows: list[ContractRow]) -> dict[str, ContractRow]:
    """fact_id -> the latest admitted row for it (a changed fact supersedes the old one)."""
    facts: dict[str, ContractRow] = {}
    for row in admitted_rows:
        if row.is_question:
            facts[row.fact_id or row.id] = row
    return facts


def paraphrases_of(row: Row) -> list[str]:
    """The row's usable paraphrases (non-empty strings), in order."""
    return [p for p in as_row(row).paraphrases if p.strip()]


def paraphrase(row: Row, template: int) -> str | None:
    """The row's own paraphrase number `template` (1 = the first), or its last one when it has fewer; None if none."""
    options = paraphrases_of(row)
    return options[min(template, len(options)) - 1] if options and template > 0 else None


def heldout_paraphrase(row: Row) -> str | None:
    """The row's last paraphrase: held out to measure generalisation, so nothing ever trains on it; None if none."""
    options = paraphrases_of(row)
    return options[-1] if options else None


def trainable_paraphrase(row: Row, template: int) -> str | None:
    """The row's paraphrase number `template` (1 = the first) when it exists and is not the held-out last one."""
    options = paraphrases_of(row)
    return options[template - 1] if 0 < template < len(options) else None


def qa(row: Row, template: int = 0) -> dict[str, Any]:
    """A fact row as a (prompt, target) pair; template k > 0 asks for the row's k-th paraphrase of the prompt (its
    last when it has fewer). For asking only: what trains on paraphrases takes them from `trainable_paraphrase`."""
    row = as_row(row)
    prompt = (paraphrase(row, template) if template else None) or row.prompt
    return {"id": row.id, "prompt": prompt, "target": row.target, "fact_id": row.fact_id,
            "subject_id": row.first_subject}


def heldout_qa(row: Row) -> dict[str, Any] | None:
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
