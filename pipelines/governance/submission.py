"""Who submitted a batch: signed when the file enters the inbox, verified when it is admitted, carried into the
release so the person who brought the data cannot also approve the model trained on it.

Anyone who can write to the inbox can write a sidecar; only a keyholder can sign one. The signature covers the
batch's name and its file's hash, so it can be neither moved to another batch nor kept across an edit."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipelines.deployment.workspace import Workspace
from pipelines.trust.decisions import SignatureRefused, content_subject, sign_statement, statement, verify_decision

RECORD = "cycles/submitters/{batch}.json"
SUFFIXES = (".jsonl", ".parquet")
MAX_SIDECAR_BYTES = 8192  # one signed statement; anything bigger is not a submission record


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


def batch_subject(batch: str, digest: str) -> dict[str, str]:
    """What a submitter's signature covers: the batch's name and the SHA-256 of its file."""
    return content_subject("batch", batch, {"sha256": digest})


def submit(ws: Workspace, source: Path, key_file: str | Path, name: str | None = None) -> Submission:
    """Copy a batch file into the inbox under `name` with the submitter's signature over its name and hash; the
    keyring's holder of the key is the submitter (an unknown key is refused before anything is copied)."""
    source = Path(source)
    if not source.is_file() or source.suffix not in SUFFIXES:
        raise ValueError(f"{source}: give a .jsonl or .parquet file of contract rows")
    batch = name or source.stem
    if not batch.replace("-", "").replace("_", "").replace(".", "").isalnum() or "/" in batch or batch.startswith("."):
        raise ValueError(f"batch name {batch!r}: use letters, digits, '-', '_' and '.' only")
    if any((ws.pull_inbox() / f"{batch}{s}").exists() for s in SUFFIXES):
        raise ValueError(f"a batch named {batch!r} is already in the inbox; choose another --name")
    digest = _digest(source)
    envelope = sign_statement(key_file, statement("submit", batch_subject(batch, digest), "submitter",
                                                  f"{batch}{source.suffix} submitted"))
    who = verify_decision(ws.keyring(), envelope, "submit", batch_subject(batch, digest), need_role=False)
    ws.inbox.mkdir(parents=True, exist_ok=True)
    target = ws.inbox / f"{batch}{source.suffix}"
    shutil.copyfile(source, target)
    if _digest(target) != digest:
        target.unlink()
        raise ValueError(f"{source} changed while it was being copied; submit it again")
    _sidecar(ws.inbox, batch).write_text(json.dumps(envelope))
    for path in (target, _sidecar(ws.inbox, batch)):
        ws.inbox_changed(path)
    ws.log.append(who.person, "batch.submitted", batch, reason=f"{target.name} submitted",
                  details={"sha256": digest, "signed": who.proof()})
    return Submission(batch=batch, submitted_by=who.person, sha256=digest)


def _read_envelope(sidecar: Path) -> dict:
    """The sidecar's signed statement; anything else is unreadable (ValueError, TypeError)."""
    raw = sidecar.read_bytes()[: MAX_SIDECAR_BYTES + 1]
    if len(raw) > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES} bytes")
    envelope = json.loads(raw.decode("utf-8"))
    if not isinstance(envelope, dict):
        raise TypeError("not a signed statement")
    return envelope


def _claimed_digest(envelope: dict) -> str | None:
    subject = (envelope.get("statement") or {}).get("subject") if isinstance(envelope.get("statement"), dict) else None
    return subject.get("content") if isinstance(subject, dict) else None


def record_at_admission(ws: Workspace, path: Path) -> Submission:
    """The submitter of the file being admitted: the keyring's holder of the key that signed this file's name and
    hash. A missing, unsigned, altered or foreign record leaves the submitter unknown, with the reason."""
    batch, digest = path.stem, _digest(path)
    sidecar = _sidecar(path.parent, batch)
    by, note = None, "no signed submission (dropped into the inbox directly)"
    if sidecar.is_file():
        expected = batch_subject(batch, digest)
        try:
            envelope = _read_envelope(sidecar)
            who = verify_decision(ws.keyring(), envelope, "submit", expected, need_role=False, max_age=None)
            by, note = who.person, ""
        except SignatureRefused as exc:
            changed = _claimed_digest(envelope) not in (None, expected["content"])
            note = ("the file changed after it was submitted: its submitter is unknown" if changed
                    else f"the submission's signature is not accepted ({exc})")
        except (ValueError, KeyError, TypeError, RecursionError):
            note = "the submitter record is unreadable"
    found = Submission(batch=batch, submitted_by=by, sha256=digest, note=note)
    ws.store.write_json(RECORD.format(batch=batch), found.model_dump())
    return found


def submitter(ws: Workspace, batch: str) -> str | None:
    found = ws.store.read_json(RECORD.format(batch=batch), default=None) if batch else None
    return found.get("submitted_by") if found else None
