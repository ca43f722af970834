"""`memgov init`: a deployment from any Hugging Face causal LM and the team's own contract tables.

Everything is checked before anything is written: the checkpoint (architecture, tokenizer, pad token), then every
data row through the same admission suite as an arriving batch. A problem is reported with the fix and leaves no
state behind. r0001 is the checkpoint unchanged: its folder is stored as it is, so its digest is the folder's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.rows import ContractRow, as_rows
from pipelines.data.admission import admit_batch, read_batch
from pipelines.deployment.artifacts import save_index, store_model
from pipelines.deployment.workspace import Workspace
from pipelines.governance.policy_in_force import adopt
from pipelines.methods.selection.replay import OVERLAPS_EVAL, overlap
from pipelines.model.recipe import read_recipe
from pipelines.state.tables import HELD_TABLES
from policies import Policy

ACTOR = "system:init"
DEPLOYMENT_KEY = "deployment.json"
# A file named after a kind gives its rows that kind unless a row says otherwise.
FILE_KINDS = {"facts": "fact", "instructions": "instruction", "documents": "document", "edits": "edit",
              "retention": "retention", "general": "general", "locality": "locality", "unseen": "unseen",
              "general_replay": "general_replay"}
TRAINABLE = ("fact", "instruction", "document")
# What each kind of row is used for, as `memgov validate` and `init` report it per table.
USES = {"fact": "new knowledge: trained (LoRA), replayed in later cycles, indexed for retrieval",
        "instruction": "trained with loss on the response; scored as instruction_score",
        "document": "the retrieval index (trained on only with training.documents: true)",
        "edit": "knowledge edits (inbox batches only)",
        "retention": "evaluation only: facts the champion must keep (retention gate)",
        "locality": "evaluation only: neighbours an edit must not move (locality gate)",
        "unseen": "evaluation only: facts never taught (forgetting comparison)",
        "general": "evaluation only: held-out text for perplexity (never trained on)",
        "general_replay": "rehearsed during updates against forgetting (never scored)"}


@dataclass(frozen=True)
class TableSummary:
    """One table of `--data` as the engine will read it."""

    file: str
    kind: str
    rows: int
    fact_ids_derived: int
    used_for: str


@dataclass(frozen=True)
class Validation:
    """What `memgov validate` checked: the checkpoint, the rows init would admit, and each table's use."""

    info: Any
    rows: list[dict[str, Any]]
    tables: list[TableSummary] = field(default_factory=list)


OVERLAP_FIX = (f"{OVERLAPS_EVAL}: this general_replay text is also in the `general` evaluation set, so the update "
               "would train on what the perplexity gate scores; fix: keep each text in one of the two tables")


def general_overlap(rows: list[ContractRow], held: list[ContractRow] = ()) -> list[ContractRow]:
    """general_replay rows (among `rows`) whose text is a `general` evaluation row's, in `rows` or already `held`."""
    replay = [r for r in rows if r.kind == "general_replay"]
    scored = [r for r in [*rows, *held] if r.kind == "general"]
    return overlap(replay, scored)


class InitError(ValueError):
    """`memgov init` refused its input; nothing was written."""


def _kind(row: dict[str, Any], file_kind: str | None) -> str:
    if isinstance(row.get("kind"), str) and row["kind"]:
        return row["kind"]
    if file_kind:
        return file_kind
    return "fact" if row.get("prompt") and row.get("target") else "document"


def kind_conflicts(rows: list[dict[str, Any]], origin: dict[int, str]) -> list[tuple[dict[str, Any], list[str]]]:
    """The table is the file: a row of retention.jsonl is a retention row. One whose own `kind` says otherwise
    (a fact in the retention table would be trained on; a document in general.jsonl would leave no perplexity set)
    is refused with the file, the field and the fix."""
    out = []
    for i, row in enumerate(rows):
        table = Path(origin[i]).stem
        wanted = FILE_KINDS.get(table)
        if wanted and "_parse_error" not in row and row.get("kind") != wanted:
            home = next((f"{name}.jsonl" for name, kind in FILE_KINDS.items() if kind == row.get("kind")), None)
            move = f", or move the row to {home}" if home else ""
            out.append((row, [f"field kind is '{row.get('kind')}' but every row of {origin[i]} is a {wanted} row; "
                              f"fix: drop the row's kind (or write '{wanted}'){move}"]))
    return out


def dangling_references(rows: list[ContractRow]) -> list[tuple[ContractRow, list[str]]]:
    """Evaluation rows that name a fact by `fact_id` alone where no fact of these tables has that id."""
    known = {r.fact_id for r in rows if r.kind in TRAINABLE and r.fact_id}
    return [(r, [f"field fact_id '{r.fact_id}' names no fact in these tables (a {r.kind} row without prompt "
                 "and target stands for the admitted fact of that id); fix: correct the id, or write the row out "
                 "with prompt and target"])
            for r in rows if r.kind in ("retention", "locality") and not r.is_question and r.fact_id not in known]


def read_data_dir(data_dir: Path) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Every row of every JSONL/Parquet file in the folder, with its kind set, and which file each row came from."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InitError(f"--data {data_dir}: not a folder; fix: give a folder of JSONL/Parquet files named by kind "
                        f"({', '.join(f'{k}.jsonl' for k in FILE_KINDS)})")
    files = sorted(p for p in data_dir.iterdir() if p.suffix in (".jsonl", ".parquet") and not p.name.startswith("."))
    if not files:
        raise InitError(f"--data {data_dir}: no .jsonl or .parquet file; fix: write your tables there, e.g. facts.jsonl")
    rows: list[dict[str, Any]] = []
    origin: dict[int, str] = {}
    for path in files:
        try:
            batch = read_batch(path)
        except ValueError as exc:
            raise InitError(f"--data {path}: {exc}") from None
        for row in batch:
            if "_parse_error" not in row:
                row = {**row, "kind": _kind(row, FILE_KINDS.get(path.stem))}
            origin[len(rows)] = path.name
            rows.append(row)
    return rows, origin


def validate(policy: Policy, base_model: str, data_dir: Path | None):
    """(checkpoint info, admitted rows) or InitError naming each problem and its fix."""
    checked = validate_tables(policy, base_model, data_dir)
    return checked.info, checked.rows


def _summaries(rows: list[dict[str, Any]], origin: dict[int, str], admitted: list[dict[str, Any]]) -> list[TableSummary]:
    derived = {r.id for r in admitted if (r.fact_id or "").startswith("prompt:")}
    files: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        files.setdefault(origin[i], []).append(row)
    out = []
    for name, part in files.items():
        kinds = Counter(r.get("kind") for r in part)
        for kind, n in kinds.most_common():
            ids = {r.get("id") for r in part if r.get("kind") == kind}
            out.append(TableSummary(name, str(kind), n, len(ids & derived), USES.get(str(kind), "refused")))
    return out


def _files_of(rows: list[dict[str, Any]], origin: dict[int, str], *outputs: list[dict[str, Any]]) -> dict[int, str]:
    """Which file each row admission returned came from (keyed by the returned row object): admission returns every
    row once, in input order within each list, so each list is walked beside the input. Two rows with one `id` in
    different files are each blamed on their own file."""
    out: dict[int, str] = {id(r): origin[i] for i, r in enumerate(rows)}
    for returned in outputs:
        j = 0
        for i, row in enumerate(rows):
            if j < len(returned) and all(returned[j].get(k) == v for k, v in row.items()):
                out[id(returned[j])] = origin[i]
                j += 1
    return out


def validate_tables(policy: Policy, base_model: str, data_dir: Path | None) -> Validation:
    """The checkpoint and every table checked as init would read them, or InitError naming each problem and its
    fix; nothing is written."""
    from pipelines.model.checkpoint import CheckpointError, inspect_checkpoint

    try:
        info = inspect_checkpoint(base_model)
    except CheckpointError as exc:
        raise InitError(f"--base-model: {exc}") from None
    if data_dir is None:
        return Validation(info, [])
    rows, origin = read_data_dir(data_dir)
    result = admit_batch(rows, policy.admission, batch_name="initial")
    problems = [(r, r["quarantine_reasons"]) for r in result.quarantined]
    problems += kind_conflicts(rows, origin)
    edits = [r for r in result.admitted if r.kind == "edit"]
    problems += [(r, ["an edit changes a deployed model; fix: drop edits into the inbox after init"]) for r in edits]
    problems += [(r, [OVERLAP_FIX]) for r in general_overlap(result.admitted)]
    problems += dangling_references(result.admitted)
    if problems:
        files = _files_of(rows, origin, result.admitted, result.quarantined)
        lines = [f"{files.get(id(r), '?')} row {r.get('id')!r}: {'; '.join(reasons)}" for r, reasons in problems[:20]]
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InitError(f"--data {data_dir}: {len(problems)} of {len(rows)} rows break the data contract "
                        "(policies/contract.json); nothing was written:\n  " + "\n  ".join(lines) + more)
    return Validation(info, result.admitted, _summaries(rows, origin, result.admitted))


def init_deployment(ws: Workspace, policy: Policy, base_model: str, rows: list[ContractRow], info,
                    embedder=None, admins: dict[str, str] | None = None) -> dict[str, Any]:
    """Store the checkpoint unchanged, seed the tables and the index from validated rows, crown r0001; with
    `admins` (name -> public key), pin the keyring's administrators as its root of trust."""
    from pipelines.data.rag import DocumentIndex, Embedder
    from pipelines.trust.grants import pin_admins

    if ws.registry.list():
        raise InitError(f"{ws.home} already holds a deployment (champion {ws.registry.champion()}); fix: use a new "
                        "--home, or `memgov run` to update this one")
    if admins:
        try:
            pin_admins(ws.home, ws.log, admins)
        except ValueError as exc:
            raise InitError(str(exc)) from None
    folder = Path(base_model)
    if folder.is_dir():
        digest = ws.store.put_dir(folder)
    else:  # a hub id already in the local cache
        from pipelines.model.lm import load_causal_lm

        model, tokenizer = load_causal_lm(base_model)
        digest = store_model(ws, model, tokenizer)
    rows = as_rows(rows)
    trainable = [r for r in rows if r.kind in TRAINABLE]
    for name, table in HELD_TABLES.items():
        part = [r for r in rows if r.kind == name]
        if part:
            ws.data.put_part(table, "initial", part)
    ws.data.put_part("admitted", "initial", trainable)
    ws.data.put_part("replay", "initial", [r for r in trainable if r.is_question])
    docs = [{"id": r.id, "text": r.text, "subject_ids": r.subject_ids, "fact_id": r.fact_id} for r in trainable]
    ws.data.put_part("documents", "initial", docs)
    embedder = embedder or Embedder()
    index = DocumentIndex(embedder.dim)
    index.upsert(docs, embedder)
    version = save_index(ws, index)
    ws.store.write_json(DEPLOYMENT_KEY, {"base_model": base_model, "model": digest, "checkpoint": info.to_dict(),
                                         "recipe": folder.is_dir() and read_recipe(folder) is not None})
    release = ws.registry.create(
        {"parent": None, "base_model": base_model, "model": digest, "index_snapshot": version,
         "policy_version": policy.label, "cycle": "init",
         "data_snapshots": {"admitted": ws.data.snapshot("admitted")},
         "lineage": {"subject_ids": sorted({s for r in trainable for s in r.subject_ids}),
                     "row_ids": [r.id for r in trainable]}},
        actor=ACTOR, reason=f"{info.architecture} checkpoint {base_model}, unchanged")
    ws.registry.set_status(release.release_id, "approved", ACTOR, "the base model is the starting point")
    ws.registry.promote(release.release_id, ACTOR, "first champion", expected=None)
    kinds = Counter(r.kind for r in rows)
    ws.log.append(ACTOR, "deployment.initialised", release.release_id, reason=f"{info.model_type} from {base_model}",
                  details={"model": digest, "rows": dict(kinds), "index_snapshot": version})
    adopt(ws, policy, ACTOR, "the policy this deployment was initialised with")
    return {"release_id": release.release_id, "model": digest, "architecture": info.architecture,
            "rows": dict(kinds), "index_snapshot": version, "documents": len(docs),
            "secrets": str(ws.secrets_dir), "keyring_admins": sorted(ws.keyring().admins)}


__all__ = ["USES", "InitError", "TableSummary", "Validation", "init_deployment", "read_data_dir", "validate",
           "validate_tables"]
