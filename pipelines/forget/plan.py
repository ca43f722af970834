"""Turn a selector (row ids, subject ids, a subject string, a regex) into the concrete rows it covers.

The plan is computed before anything changes, so it can be shown (`memgov forget --dry-run`), held for
confirmation when it is too broad, and replayed step by step by the scrub's journal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.state.requests.models import Selector, compile_selector_regex
from pipelines.state.tables import TABLES, DataStore, id_list


@dataclass
class ForgetPlan:
    row_ids: set[str] = field(default_factory=set)
    subject_ids: set[str] = field(default_factory=set)
    fact_ids: set[str] = field(default_factory=set)
    doc_ids: set[str] = field(default_factory=set)
    forget_qas: list[dict[str, Any]] = field(default_factory=list)
    per_table: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def matches(self, row: dict[str, Any]) -> bool:
        if not isinstance(row, Mapping):
            return False
        if row.get("id") in self.row_ids or row.get("id") in self.doc_ids:
            return True
        if row.get("fact_id") is not None and row.get("fact_id") in self.fact_ids:
            return True
        if row.get("doc_id") is not None and row.get("doc_id") in self.doc_ids:
            return True
        subjects = id_list(row.get("subject_ids")) + id_list(row.get("subject_id"))
        if self.subject_ids.intersection(subjects):
            return True
        return isinstance(row.get("_raw"), str) and self.matches_raw(row["_raw"])

    def matches_raw(self, raw: str) -> bool:
        """A line that could not be parsed is judged by its text: any covered id in it, as a JSON string, removes it."""
        ids = self.row_ids | self.subject_ids | self.fact_ids | self.doc_ids
        return any(json.dumps(i) in raw for i in ids)

    def summary(self) -> dict[str, Any]:
        return {"rows": len(self.row_ids), "subjects": len(self.subject_ids), "facts": len(self.fact_ids),
                "documents": len(self.doc_ids), "per_table": self.per_table, "totals": self.totals}

    def shares(self) -> dict[str, float]:
        """The share of the deployment's rows, subjects and documents this plan removes."""
        covered = {"rows": self.per_table.get("admitted", 0), "subjects": len(self.subject_ids),
                   "documents": self.per_table.get("documents", 0)}
        return {k: (covered[k] / self.totals[k] if self.totals.get(k) else 0.0) for k in covered}

    def ids(self) -> dict[str, list[str]]:
        """What the scrub needs to replay the plan: ids only, no cleartext."""
        return {"row_ids": sorted(self.row_ids), "subject_ids": sorted(self.subject_ids),
                "fact_ids": sorted(self.fact_ids), "doc_ids": sorted(self.doc_ids)}

    @classmethod
    def from_ids(cls, ids: dict[str, list[str]]) -> ForgetPlan:
        return cls(set(ids.get("row_ids", [])), set(ids.get("subject_ids", [])), set(ids.get("fact_ids", [])),
                   set(ids.get("doc_ids", [])))


def _selected(row: dict[str, Any], selector: Selector, regex) -> bool:
    if row.get("id") in set(selector.row_ids):
        return True
    if set(selector.subject_ids).intersection(id_list(row.get("subject_ids"))):
        return True
    if selector.subject and row.get("subject") == selector.subject:
        return True
    if regex is None:
        return False
    text = row.get("text") if isinstance(row.get("text"), str) else row.get("_raw")
    return isinstance(text, str) and regex.search(text) is not None


def resolve_selector(data: DataStore, selector: Selector | dict) -> ForgetPlan:
    """Two passes: rows the selector hits directly, then everything sharing their subject or fact."""
    if isinstance(selector, dict):
        selector = Selector(**selector)
    regex = compile_selector_regex(selector.text_regex) if selector.text_regex else None
    plan = ForgetPlan()
    every = {t: data.stored(t) for t in TABLES}
    for rows in every.values():
        for row in rows:
            if _selected(row, selector, regex):
                plan.row_ids.add(str(row["id"]))
                plan.subject_ids |= set(id_list(row.get("subject_ids")))
                if row.get("fact_id"):
                    plan.fact_ids.add(str(row["fact_id"]))
    plan.subject_ids |= set(selector.subject_ids)
    plan.row_ids |= set(selector.row_ids)
    seen_facts: set[str] = set()
    for table, rows in every.items():
        hits = [r for r in rows if plan.matches(r)]
        plan.per_table[table] = len(hits)
        for row in hits:
            plan.row_ids.add(str(row["id"]))
            if table == "documents":
                plan.doc_ids.add(str(row["id"]))
            if row.get("fact_id"):
                plan.fact_ids.add(str(row["fact_id"]))
            if table == "admitted" and row.get("prompt") and row.get("target") and row.get("fact_id") not in seen_facts:
                seen_facts.add(row.get("fact_id"))
                plan.forget_qas.append({"id": row["id"], "prompt": row["prompt"], "target": row["target"],
                                        "fact_id": row.get("fact_id")})
    plan.totals = {"rows": len(every["admitted"]), "documents": len(every["documents"]),
                   "subjects": len({s for r in every["admitted"] for s in id_list(r.get("subject_ids"))})}
    return plan
