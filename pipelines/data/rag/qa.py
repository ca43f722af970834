"""Retrieval-side QA checks: does the index still surface (or, after forgetting, no longer surface) a fact?"""

from __future__ import annotations

import re
from typing import Any

from pipelines.data.rag.index import DocumentIndex, Hit, SupportsEncode


def _contains_word(text: str, word: str) -> bool:
    word = word.strip()
    if not word:
        return False
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE) is not None


def _query(qa: dict[str, Any], i: int) -> tuple[str, str]:
    if "prompt" not in qa or "target" not in qa:
        raise ValueError(f"qa {i} needs 'prompt' and 'target' keys, got {sorted(qa)}")
    return str(qa.get("query") or qa["prompt"]), str(qa["target"])


def retrieval_hits(index: DocumentIndex, embedder: SupportsEncode, qas: list[dict[str, Any]], k: int = 1) -> list[bool]:
    """Per QA: does one of the top-k documents for its prompt contain the target as a whole word?"""
    pairs = [_query(qa, i) for i, qa in enumerate(qas)]
    results = index.search([q for q, _ in pairs], embedder, k=k)
    return [any(_contains_word(h.text, t) for h in hits) for (_, t), hits in zip(pairs, results, strict=True)]


def answer_with_support(
    index: DocumentIndex, embedder: SupportsEncode, qas: list[dict[str, Any]], k: int = 3
) -> list[dict[str, Any]]:
    """Per QA: the retrieved documents and which of them support the target (for evidence in cards and audits)."""
    pairs = [_query(qa, i) for i, qa in enumerate(qas)]
    results = index.search([q for q, _ in pairs], embedder, k=k)
    out: list[dict[str, Any]] = []
    for (query, target), hits in zip(pairs, results, strict=True):
        support: list[Hit] = [h for h in hits if _contains_word(h.text, target)]
        out.append(
            {
                "query": query,
                "target": target,
                "supported": bool(support),
                "support_ids": [h.doc_id for h in support],
                "retrieved": [{"doc_id": h.doc_id, "score": round(h.score, 6)} for h in hits],
            }
        )
    return out
