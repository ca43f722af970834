"""Scrubbing one request from every store, as a journal of idempotent steps.

Plan, then apply, then verify. The journal (in the request's own record, next to its cleartext) lists the steps
done, the blobs each step replaced (written *before* the pointer moves) and every attempt with its error. A failure
part-way leaves the request `planned` with the journal saying where it stopped; the next attempt (the sensor, the
next cycle, or `memgov forget retry`) resumes at the first step not done. Tombstones come first, so admission,
indexing and training already refuse the data while the rest of the scrub is still to run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pipelines.deployment.artifacts import index_holds, scrub_index_snapshots
from pipelines.deployment.workspace import Workspace
from pipelines.forget.plan import ForgetPlan
from pipelines.forget.refs import live_blobs
from pipelines.forget.weights import release_tainted_weights
from pipelines.model.knowledge import qa
from pipelines.state.tables import TABLES

ACTOR = "system:forget"
STEPS = ("tombstones", "data", "index", "inbox", "taint", "weights", "collect", "verify")
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
    from pipelines.data.admission.io import iter_jsonl_lines

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


def _scrub_parquet(path: Path, plan: ForgetPlan, dry_run: bool) -> int | None:
    """None when the file cannot be read as Parquet (it is then judged whole, by its bytes)."""
    import pandas as pd

    from pipelines.data.admission.io import plain

    try:
        frame = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - pyarrow raises several unrelated types for damaged files
        return None
    drop = [plan.matches({str(k): plain(v) for k, v in rec.items()}) for rec in frame.to_dict(orient="records")]
    removed = sum(drop)
    if removed and not dry_run:
        kept = frame[[not d for d in drop]].reset_index(drop=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".parquet")
        os.close(fd)
        kept.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return removed


_ARCHIVES = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "lzma"}
_TEXT_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
              (b"\xfe\xff", "utf-16"))
MAX_OPAQUE_BYTES = 256 << 20  # what is decompressed of one archive to look inside it


def _views(data: bytes, depth: int = 0) -> list[str]:
    """The texts a file may be read as: its bytes, decoded by its BOM, and what its archive holds (one level)."""
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    views = [data.decode("utf-8", "backslashreplace")]
    for bom, codec in _TEXT_BOMS:
        if data.startswith(bom):
            views.append(data.decode(codec, "replace"))
            break
    if depth:
        return views
    inner: list[bytes] = []
    try:
        for magic, kind in _ARCHIVES.items():
            if data.startswith(magic):
                module = {"gzip": gzip, "bz2": bz2, "lzma": lzma}[kind]
                with module.open(io.BytesIO(data)) as fh:
                    inner.append(fh.read(MAX_OPAQUE_BYTES))
        if data.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                inner += [zf.open(info).read(MAX_OPAQUE_BYTES) for info in zf.infolist() if not info.is_dir()]
    except Exception:  # noqa: BLE001 - a damaged archive is judged by its bytes alone
        pass
    return views + [v for blob in inner for v in _views(blob, depth + 1)]


def _scrub_opaque(path: Path, plan: ForgetPlan, dry_run: bool) -> int:
    """A file that cannot be read row by row (another format, compressed, UTF-16, damaged) cannot be rewritten
    without the covered rows; if any covered id occurs in it, however it is read, the whole file goes. Admission
    quarantines such files whole, so no admitted row is lost with it."""
    ids = sorted(plan.row_ids | plan.subject_ids | plan.fact_ids | plan.doc_ids, key=len, reverse=True)
    if not ids:
        return 0
    # An id counts as a whole token: `s1` is not found inside `s10` or `ks1`.
    pattern = re.compile("(?<![A-Za-z0-9_.:-])(?:" + "|".join(map(re.escape, ids)) + ")(?![A-Za-z0-9_.:-])")
    if not any(pattern.search(view) for view in _views(path.read_bytes())):
        return 0
    if not dry_run:
        path.unlink()
    return 1


def _plain_jsonl(path: Path) -> bool:
    from pipelines.data.admission.io import sniff_not_text

    with path.open("rb") as fh:
        return sniff_not_text(fh.read(8192)) is None


def scrub_inbox_file(path: Path, plan: ForgetPlan, dry_run: bool = False) -> int:
    """One inbox file rewritten without the covered rows; returns how many went (or would, on a dry run). JSON
    lines and Parquet are rewritten row by row; a file in any other form is removed whole when a covered id occurs
    in it (counted as one)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl" and _plain_jsonl(path):
        return _scrub_jsonl(path, plan, dry_run)
    if suffix == ".parquet":
        removed = _scrub_parquet(path, plan, dry_run)
        if removed is not None:
            return removed
    return _scrub_opaque(path, plan, dry_run)


def scrub_inbox(inbox: Path, plan: ForgetPlan, dry_run: bool = False) -> dict[str, int]:
    """Every inbox file (in sub-folders too) rewritten without the covered rows: JSONL and Parquet row by row
    (unparseable lines judged by their text), any other file removed whole when a covered id occurs in it. Each
    file is replaced atomically. A dry run only counts."""
    removed: dict[str, int] = {}
    if not inbox.exists():
        return removed
    for path in sorted(inbox.rglob("*")):
        rel = path.relative_to(inbox)
        if any(part.startswith(".") for part in rel.parts) or path.is_symlink() or not path.is_file():
            continue  # hidden names are writers' temporary files
        n = scrub_inbox_file(path, plan, dry_run)
        if n:
            removed[rel.as_posix()] = n
    return removed


def inbox_holds(inbox: Path, plan: ForgetPlan) -> dict[str, int]:
    """Covered rows still in the inbox, per file."""
    return scrub_inbox(inbox, plan, dry_run=True)


def store_holds(ws: Workspace, plan: ForgetPlan) -> dict[str, Any]:
    """Everything covered by the plan that some store still holds: the verification of a scrub."""
    tables = {t: n for t in TABLES if (n := sum(1 for r in ws.data.stored(t) if plan.matches(r)))}
    index = index_holds(ws, plan.doc_ids | plan.row_ids, plan.subject_ids, plan.fact_ids)
    inbox = inbox_holds(ws.pull_inbox(), plan)
    return {k: v for k, v in (("tables", tables), ("index", index), ("inbox", inbox)) if v}


# -- the steps ----------------------------------------------------------------------------------------------------
def _texts(value: Any) -> Iterator[str]:
    """Every string a row holds (text, prompt, target, paraphrases...): what an embedder may have encoded."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _query_texts(row: dict[str, Any]) -> set[str]:
    """The row's strings and the prompts a suite asks of it (the prompt, or a paraphrase, then the target)."""
    texts = set(_texts(row))
    if isinstance(row.get("prompt"), str) and isinstance(row.get("target"), str):
        for k in range(len(row.get("paraphrases") or []) + 1):
            with contextlib.suppress(Exception):
                q = qa(row, template=k)
                texts |= {q["prompt"], q["prompt"] + q["target"]}
    return texts


def run_steps(ws: Workspace, request_id: str, plan: ForgetPlan, run_id: str | None = None,
              policy: Any = None, embedder: Any = None) -> dict[str, Any]:
    """Run every step the journal has not marked done; raises on the first failure (the journal keeps its place).

    `policy` names the legal holds that keep a tainted release's weights (none without one); `embedder`, when the
    caller holds one, has its in-memory cache of the covered texts' vectors dropped with the data."""
    j = Journal(ws, request_id)
    done = dict(j.read().get("done", {}))

    def tombstones() -> dict[str, Any]:
        ids = plan.ids()
        added = ws.requests.add_tombstones(request_id, ids["row_ids"], ids["subject_ids"], ids["fact_ids"], ids["doc_ids"])
        return {"added": added}

    def data() -> dict[str, Any]:
        covered: set[str] = set()

        def matches(row: dict[str, Any]) -> bool:
            hit = plan.matches(row)
            if hit:
                covered.update(_query_texts(row))
            return hit

        report = ws.data.scrub(matches, on_stale=j.add_stale).as_dict()
        forget = getattr(embedder, "forget_texts", None)
        return {**report, "embedding_cache_dropped": forget(sorted(covered)) if callable(forget) else None}

    def index() -> dict[str, Any]:
        return scrub_index_snapshots(ws, plan.doc_ids | plan.row_ids, plan.subject_ids, plan.fact_ids,
                                     on_stale=j.add_stale)

    def inbox() -> dict[str, Any]:
        removed = scrub_inbox(ws.pull_inbox(), plan)
        holds = [{"blob": f"inbox:{rel}", "detail": h} for rel in removed for h in ws.inbox_changed(ws.inbox / rel)]
        return {"removed": removed, "legal_holds": holds}

    def taint() -> dict[str, Any]:
        return {"tainted": ws.registry.mark_tainted(plan.row_ids, plan.subject_ids, request_id, ACTOR)}

    def weights() -> dict[str, Any]:
        from pipelines.forget.reference import drop_stale_references

        return {**release_tainted_weights(ws, policy, when="scrub", run_id=run_id),
                "references_removed": drop_stale_references(ws)}

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
             "weights": weights, "collect": collect, "verify": verify}
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
