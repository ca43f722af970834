"""Scrubbing one request from every store, as a journal of idempotent steps.

Plan, then apply, then verify. The journal (in the request's own record, next to its cleartext) lists the steps
done, the blobs each step replaced (written *before* the pointer moves) and every attempt with its error. A failure
part-way leaves the request `planned` with the journal saying where it stopped; the next attempt (the sensor, the
next cycle, or `memgov forget retry`) resumes at the first step not done. Tombstones come first, so admission,
indexing and training already refuse the data while the rest of the scrub is still to run.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.artifacts import index_holds, scrub_index_snapshots
from pipelines.datasets import TABLES
from pipelines.forget.plan import ForgetPlan
from pipelines.forget.refs import live_blobs
from pipelines.workspace import Workspace

ACTOR = "system:forget"
STEPS = ("tombstones", "data", "index", "inbox", "taint", "collect", "verify")
LEASE_S = 900.0


class ScrubBusy(RuntimeError):
    """Another run holds the request's lease; this one leaves it alone."""


class ScrubIncomplete(RuntimeError):
    """Verification found covered data after every step ran (a concurrent writer); the next attempt resumes."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def journal(evidence: dict[str, Any]) -> dict[str, Any]:
    return dict((evidence or {}).get("journal") or {})


def scrub_complete(evidence: dict[str, Any]) -> bool:
    """Complete by its journal; a request scrubbed before journals existed says so by its `scrub` evidence."""
    j = journal(evidence)
    return bool(j.get("complete")) or (not j.get("plan") and "scrub" in (evidence or {}))


def lease_live(evidence: dict[str, Any], now: dt.datetime | None = None) -> bool:
    """True while an attempt that has not ended still holds its lease (a killed run's lease simply runs out)."""
    attempts = journal(evidence).get("attempts") or []
    if not attempts or attempts[-1].get("ended"):
        return False
    return dt.datetime.fromisoformat(attempts[-1]["lease_until"]) > (now or _now())


def attempts_made(evidence: dict[str, Any]) -> int:
    return len(journal(evidence).get("attempts") or [])


class Journal:
    """The request's journal, read and written through the request store's row lock."""

    def __init__(self, ws: Workspace, request_id: str) -> None:
        self.ws, self.request_id = ws, request_id

    def _update(self, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        def change(_state: str, evidence: dict[str, Any]) -> dict[str, Any]:
            j = journal(evidence)
            fn(j)
            return {**evidence, "journal": j}

        return journal(self.ws.requests.update_evidence(self.request_id, change).evidence)

    def claim(self, run_id: str | None, lease_s: float = LEASE_S) -> int:
        """Record a new attempt under a lease; refuses while another live attempt holds it."""
        now = _now()

        def take(j: dict[str, Any]) -> None:
            if lease_live({"journal": j}, now):
                raise ScrubBusy(f"request {self.request_id} is being scrubbed by run {j['attempts'][-1].get('run_id')}")
            j["attempts"] = [*(j.get("attempts") or []), {"run_id": run_id or "", "started": now.isoformat(),
                                                          "lease_until": (now + dt.timedelta(seconds=lease_s)).isoformat()}]

        return len(self._update(take)["attempts"])

    def end(self, error: str | None = None, step: str | None = None) -> dict[str, Any]:
        def close(j: dict[str, Any]) -> None:
            if j.get("attempts"):
                last = dict(j["attempts"][-1])
                last.update(ended=_now().isoformat(), **({"error": error, "step": step} if error else {}))
                j["attempts"] = [*j["attempts"][:-1], last]

        return self._update(close)

    def add_stale(self, digests: list[str]) -> None:
        self._update(lambda j: j.update(stale=sorted({*j.get("stale", []), *digests})))

    def done(self, step: str, result: dict[str, Any]) -> None:
        def mark(j: dict[str, Any]) -> None:
            j["done"] = {**j.get("done", {}), step: result}
            if step == STEPS[-1]:
                j["complete"] = True

        self._update(mark)

    def undo(self, steps: list[str]) -> None:
        self._update(lambda j: j.update(done={k: v for k, v in j.get("done", {}).items() if k not in steps}))

    def read(self) -> dict[str, Any]:
        return journal(self.ws.requests.get(self.request_id).evidence)


# -- the inbox is a store too ----------------------------------------------------------------------------------
def _rewrite(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _covered_line(plan: ForgetPlan, raw: bytes, row: dict[str, Any]) -> bool:
    """A parsed row by its fields; a line that could not be parsed by its text."""
    return plan.matches(row) or ("_parse_error" in row and plan.matches_raw(raw.decode("utf-8", "backslashreplace")))


def _scrub_jsonl(path: Path, plan: ForgetPlan, dry_run: bool) -> int:
    from pipelines.admission.io import iter_jsonl_lines

    keep: list[bytes] = []
    removed = 0
    for _lineno, raw, row in iter_jsonl_lines(path):
        if _covered_line(plan, raw, row):
            removed += 1
        else:
            keep.append(raw)
    if removed and not dry_run:
        _rewrite(path, b"".join(k + b"\n" for k in keep))
    return removed


def _scrub_parquet(path: Path, plan: ForgetPlan, dry_run: bool) -> int:
    import pandas as pd

    from pipelines.admission.io import plain

    try:
        frame = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - an unreadable file holds no row anyone can read; admission quarantines it
        return 0
    drop = [plan.matches({str(k): plain(v) for k, v in rec.items()}) for rec in frame.to_dict(orient="records")]
    removed = sum(drop)
    if removed and not dry_run:
        kept = frame[[not d for d in drop]].reset_index(drop=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".parquet")
        os.close(fd)
        kept.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return removed


def scrub_inbox_file(path: Path, plan: ForgetPlan, dry_run: bool = False) -> int:
    """One raw batch file rewritten without the covered rows; returns how many went (or would, on a dry run)."""
    if path.suffix == ".jsonl":
        return _scrub_jsonl(path, plan, dry_run)
    return _scrub_parquet(path, plan, dry_run) if path.suffix == ".parquet" else 0


def scrub_inbox(inbox: Path, plan: ForgetPlan, dry_run: bool = False) -> dict[str, int]:
    """Raw batch files (JSONL and Parquet) rewritten without the covered rows; unparseable lines are judged by
    their text. Each file is replaced atomically. A dry run only counts."""
    removed: dict[str, int] = {}
    if not inbox.exists():
        return removed
    for path in sorted(inbox.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        n = scrub_inbox_file(path, plan, dry_run)
        if n:
            removed[path.name] = n
    return removed


def inbox_holds(inbox: Path, plan: ForgetPlan) -> dict[str, int]:
    """Covered rows still in the inbox, per file."""
    return scrub_inbox(inbox, plan, dry_run=True)


def store_holds(ws: Workspace, plan: ForgetPlan) -> dict[str, Any]:
    """Everything covered by the plan that some store still holds: the verification of a scrub."""
    tables = {t: n for t in TABLES if (n := sum(1 for r in ws.data.rows(t) if plan.matches(r)))}
    index = index_holds(ws, plan.doc_ids | plan.row_ids, plan.subject_ids, plan.fact_ids)
    inbox = inbox_holds(ws.inbox, plan)
    return {k: v for k, v in (("tables", tables), ("index", index), ("inbox", inbox)) if v}


# -- the steps ----------------------------------------------------------------------------------------------------
def run_steps(ws: Workspace, request_id: str, plan: ForgetPlan, run_id: str | None = None) -> dict[str, Any]:
    """Run every step the journal has not marked done; raises on the first failure (the journal keeps its place)."""
    j = Journal(ws, request_id)
    done = dict(j.read().get("done", {}))

    def tombstones() -> dict[str, Any]:
        ids = plan.ids()
        added = ws.requests.add_tombstones(request_id, ids["row_ids"], ids["subject_ids"], ids["fact_ids"], ids["doc_ids"])
        return {"added": added}

    def data() -> dict[str, Any]:
        return ws.data.scrub(plan.matches, on_stale=j.add_stale).as_dict()

    def index() -> dict[str, Any]:
        return scrub_index_snapshots(ws, plan.doc_ids | plan.row_ids, plan.subject_ids, plan.fact_ids,
                                     on_stale=j.add_stale)

    def inbox() -> dict[str, Any]:
        return {"removed": scrub_inbox(ws.inbox, plan)}

    def taint() -> dict[str, Any]:
        return {"tainted": ws.registry.mark_tainted(plan.row_ids, plan.subject_ids, request_id, ACTOR)}

    def collect() -> dict[str, Any]:
        live = live_blobs(ws)
        deleted, kept, holds = [], [], []
        for digest in j.read().get("stale", []):
            if digest in live:
                kept.append(digest)
                continue
            report = ws.store.delete_blob(digest)
            deleted.append(digest)
            holds.extend({"blob": digest, "detail": h} for h in (getattr(report, "legal_hold", None) or []))
        return {"deleted": deleted, "still_named": kept, "legal_holds": holds}

    def verify() -> dict[str, Any]:
        left = store_holds(ws, plan)
        if left:  # a writer that raced the scrub: redo the store steps on the next attempt
            j.undo(["data", "index", "inbox", "collect"])
            raise ScrubIncomplete(f"covered data reappeared during the scrub ({sorted(left)}); the next attempt redoes it")
        return {"clean": True}

    steps = {"tombstones": tombstones, "data": data, "index": index, "inbox": inbox, "taint": taint,
             "collect": collect, "verify": verify}
    for name in STEPS:
        if name in done:
            continue
        try:
            done[name] = steps[name]()
        except Exception as exc:
            exc.add_note(f"scrub step: {name}")
            exc.memgov_step = name  # type: ignore[attr-defined]
            raise
        j.done(name, done[name])
    return done
