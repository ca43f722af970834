"""The evaluation sets of the data contract: read from the deployment's tables, or derived by a stated rule.

The engine never invents evaluation data. Each set comes back with where it came from (the card shows it), and a
set a gate needs that can neither be read nor derived comes back empty with the reason, so the gate fails with
that reason instead of passing on nothing.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.rows import ContractRow, as_row
from pipelines.deployment.workspace import Workspace
from pipelines.model.knowledge import current_facts, heldout_qa, qa, sample
from pipelines.state.tables import EVAL_TABLES

FIX = {
    "general": "no general set: supply the `general` table (held-out general text, one `text` per row; "
               "`memgov init --data DIR` reads DIR/general.jsonl) or admit rows of kind `general`",
    "unseen": "no unseen set: supply the `unseen` table (facts of the same kind the model never saw) or admit "
              "rows of kind `unseen`",
    "retention": "no retention set: the champion recalls none of the earlier facts; supply the `retention` table "
                 "(facts the champion must keep) or admit rows of kind `retention`",
    "locality": "no locality set: this batch edits facts but no neighbour of theirs is known; supply the `locality` "
                "table or admit rows of kind `locality`",
    "paraphrases": "no paraphrase set: the batch's facts carry no `paraphrases`; add them to the fact rows (the last "
                   "one of each is held out: scored, never trained on)",
}


@dataclass
class Resolved:
    """One evaluation set: its items, the source the card names, and why it is empty when it is."""

    items: list[Any] = field(default_factory=list)
    source: str = ""
    missing: str | None = None


def table(ws: Workspace, name: str) -> list[ContractRow]:
    return ws.data.rows(EVAL_TABLES[name])


def general_text(ws: Workspace, n: int = 200, seed: int = 2) -> Resolved:
    rows = [r.text for r in table(ws, "general") if r.text and r.text.strip()]
    if not rows:
        return Resolved([], "none", FIX["general"])
    picked = sample(rows, n, seed=seed)
    return Resolved(picked, f"table `general` ({len(picked)} of {len(rows)} rows)")


def unseen(ws: Workspace) -> Resolved:
    rows = [qa(r) for r in table(ws, "unseen") if r.is_question]
    if not rows:
        return Resolved([], "none", FIX["unseen"])
    return Resolved(rows, f"table `unseen` ({len(rows)} rows)")


@dataclass
class Supplied:
    """A QA table the deployment supplied, its rows written out or resolved from the facts they name by id."""

    rows: list[ContractRow]
    by_reference: int = 0
    unresolved: list[str] = field(default_factory=list)  # fact ids named that no admitted fact has

    def note(self) -> str:
        parts = [f"{self.by_reference} name admitted facts by fact_id"] if self.by_reference else []
        if self.unresolved:
            shown = ", ".join(self.unresolved[:5]) + (" …" if len(self.unresolved) > 5 else "")
            parts.append(f"{len(self.unresolved)} name facts not admitted, left out: {shown}")
        return f" ({'; '.join(parts)})" if parts else ""


def supplied(ws: Workspace, name: str, exclude_facts: Container[Any]) -> Supplied:
    """A QA table the deployment supplied, minus facts this cycle changes or forgets. A row that gives only a
    `fact_id` stands for the admitted fact of that id as it is now (a later row superseding it included)."""
    rows = table(ws, name)
    references = [r for r in rows if not r.is_question and r.fact_id]
    facts = current_facts(ws.data.rows("admitted")) if references else {}
    out, unresolved = [], []
    for row in rows:
        if row.is_question:
            out.append(row)
        elif row.fact_id in facts:
            out.append(as_row({**facts[row.fact_id], "id": row.id}))
        elif row.fact_id:
            unresolved.append(row.fact_id)
    return Supplied([r for r in out if r.fact_id not in exclude_facts],
                    len(references) - len(unresolved), unresolved)


def paraphrases(batch_rows: list[dict[str, Any]]) -> Resolved:
    """Each fact asked with its held-out paraphrase, the last of its `paraphrases` (no training ever uses that one:
    `pipelines.model.knowledge.trainable_paraphrase`)."""
    rows = [q for q in map(heldout_qa, batch_rows) if q is not None]
    if batch_rows and not rows:
        return Resolved([], "none", FIX["paraphrases"])
    source = f"the batch's own `paraphrases`, the held-out last one ({len(rows)} facts)" if rows else "no new facts"
    return Resolved(rows, source)


__all__ = ["FIX", "Resolved", "Supplied", "general_text", "paraphrases", "supplied", "table", "unseen"]
