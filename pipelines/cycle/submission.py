"""Who submitted a batch: recorded when the file enters the inbox, checked when it is admitted, carried into the
release so the person who brought the data cannot also approve the model trained on it."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipelines.admission.identifiers import name_problem
from pipelines.workspace import Workspace

RECORD = "cycles/submitters/{batch}.json"
SUFFIXES = (".jsonl", ".parquet")
MAX_SIDECAR_BYTES = 4096  # a name, a hash and a time; anything bigger is not a submitter record


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: str
    submitted_by: str | None  # None: nobody recorded, or the file changed after it was submitted
    sha256: str
    note: str = ""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(inbox: Path, batch: str) -> Path:
    return inbox / f"{batch}.submitter.json"


def submit(ws: Workspace, source: Path, by: str, name: str | None = None) -> Submission:
    """Copy a batch file into the inbox under `name` and record who submitted it and the file's hash."""
    by = " ".join(by.split())
    if not by:
        raise ValueError("--by is required: who submits this batch")
    problem = name_problem(by)
    if problem:
        raise ValueError(f"--by {problem}")  # the name decides who may not approve this data
    source = Path(source)
    if not source.is_file() or source.suffix not in SUFFIXES:
        raise ValueError(f"{source}: give a .jsonl or .parquet file of contract rows")
    batch = name or source.stem
    if not batch.replace("-", "").replace("_", "").replace(".", "").isalnum() or "/" in batch or batch.startswith("."):
        raise ValueError(f"batch name {batch!r}: use letters, digits, '-', '_' and '.' only")
    target = ws.inbox / f"{batch}{source.suffix}"
    if any((ws.inbox / f"{batch}{s}").exists() for s in SUFFIXES):
        raise ValueError(f"a batch named {batch!r} is already in the inbox; choose another --name")
    ws.inbox.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    digest = _digest(target)
    _sidecar(ws.inbox, batch).write_text(json.dumps({"submitted_by": by, "sha256": digest,
                                                     "time": datetime.now(UTC).isoformat(timespec="seconds")}))
    ws.log.append(by, "batch.submitted", batch, reason=f"{target.name} submitted", details={"sha256": digest})
    return Submission(batch=batch, submitted_by=by, sha256=digest)


def _read_claim(sidecar: Path) -> dict:
    """The sidecar as a mapping with a plain submitter name; anything else is unreadable (ValueError, TypeError)."""
    raw = sidecar.read_bytes()[: MAX_SIDECAR_BYTES + 1]
    if len(raw) > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES} bytes")
    claimed = json.loads(raw.decode("utf-8"))
    if not isinstance(claimed, dict) or not isinstance(claimed.get("submitted_by"), str):
        raise TypeError("not a mapping with a submitted_by name")
    if not claimed["submitted_by"].strip() or name_problem(claimed["submitted_by"]):
        raise ValueError("the submitter's name is not a plain name")
    return claimed


def record_at_admission(ws: Workspace, path: Path) -> Submission:
    """The submitter of the file being admitted, if its recorded hash still matches the file; kept in the store."""
    batch, digest = path.stem, _digest(path)
    sidecar = _sidecar(path.parent, batch)
    by, note = None, "no submitter recorded (dropped into the inbox directly)"
    if sidecar.is_file():
        try:
            claimed = _read_claim(sidecar)
            if claimed.get("sha256") == digest:
                by, note = claimed["submitted_by"], ""
            else:
                note = "the file changed after it was submitted: its submitter is unknown"
        except (ValueError, KeyError, TypeError, RecursionError):
            note = "the submitter record is unreadable"
    found = Submission(batch=batch, submitted_by=by, sha256=digest, note=note)
    ws.store.write_json(RECORD.format(batch=batch), found.model_dump())
    return found


def submitter(ws: Workspace, batch: str) -> str | None:
    found = ws.store.read_json(RECORD.format(batch=batch), default=None) if batch else None
    return found.get("submitted_by") if found else None
