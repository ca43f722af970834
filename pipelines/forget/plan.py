"""Turn a selector (row ids, subject ids, a subject string, a regex) into the concrete rows it covers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.datasets import TABLES, DataStore


@dataclass
class ForgetPlan:
    row_ids: set[str] = field(default_factory=set)
    subject_ids: set[str] = field(default_factory=set)
    fact_ids: set[str] = field(default_factory=set)
    doc_ids: set[str] = field(default_factory=set)
    forget_qas: list[dict[str, Any]] = field(default_factory=list)
    per_table: dict[str, int] = field(default_factory=dict)

    def matches(self, row: dict[str, Any]) -> bool:
        return (
            row.get("id") in self.row_ids
            or row.get("id") in self.doc_ids
            or (row.get("fact_id") is not None and row.get("fact_id") in self.fact_ids)
            or bool(self.subject_ids & set(row.get("subject_ids") or []))
        )

    def summary(self) -> dict[str, Any]:
        return {"rows": len(self.row_ids), "subjects": len(self.subject_ids), "facts": len(self.fact_ids),
                "documents": len(self.doc_ids), "per_table": self.per_table}


def _selected(row: dict[str, Any], selector) -> bool:
    if row.get("id") in set(selector.row_ids):
        return True
    if set(selector.subject_ids) & set(row.get("subject_ids") or []):
        return True
    if selector.subject and row.get("subject") == selector.subject:
        return True
    return bool(selector.text_regex and row.get("text") and re.search(selector.text_regex, str(row["text"])))


def resolve_selector(data: DataStore, selector) -> ForgetPlan:
    """Two passes: rows the selector hits directly, then everything sharing their subject or fact."""
    if isinstance(selector, dict):
        from pipelines.requests import Selector

        selector = Selector(**selector)
    plan = ForgetPlan()
    every = {t: data.rows(t) for t in TABLES}
    for rows in every.values():
        for row in rows:
            if _selected(row, selector):
                plan.row_ids.add(row["id"])
                plan.subject_ids |= set(row.get("subject_ids") or [])
                if row.get("fact_id"):
                    plan.fact_ids.add(row["fact_id"])
    plan.subject_ids |= set(selector.subject_ids)
    plan.row_ids |= set(selector.row_ids)
    seen_facts: set[str] = set()
    for table, rows in every.items():
        hits = [r for r in rows if plan.matches(r)]
        plan.per_table[table] = len(hits)
        for row in hits:
            plan.row_ids.add(row["id"])
            if table == "documents":
                plan.doc_ids.add(row["id"])
            if row.get("fact_id"):
                plan.fact_ids.add(row["fact_id"])
            if table == "admitted" and row.get("prompt") and row.get("target") and row.get("fact_id") not in seen_facts:
                seen_facts.add(row.get("fact_id"))
                plan.forget_qas.append({"id": row["id"], "prompt": row["prompt"], "target": row["target"],
                                        "fact_id": row.get("fact_id")})
    return plan
