"""Release registry: creation, status changes, approvals, the champion pointer, rollback and tainting.

The champion pointer (document "registry/champion") is the single source of truth for what serves; it only moves by
compare-and-swap, so two concurrent promotions cannot both win. It is a record sealed by the system key (release,
previous release, move number), so a pointer written by hand is refused by every reader, and every move is logged
with the pointer's digest, twice: an intent before the swap (`release.promotion_started`) and the outcome after it.
A crash between the two is finished on the next start (`recover`): the move completed if the pointer holds the
intended record, abandoned if not. Release records are bookkeeping updated after the pointer moves; a record that
still says "champion" while the pointer names another release reads as "retired", so a crash between the two steps
never shows two champions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import serialization

from pipelines.core.digests import canonical_json, digest_of
from pipelines.core.failpoints import failpoint
from pipelines.state.ledger import ChangeLog
from pipelines.state.store import ArtifactStore
from pipelines.trust import attest, keys

from .release import MANIFEST_KEYS, TRANSITIONS, Release, check_transition, validate_fields

CHAMPION_KEY = "registry/champion"
COUNTER_KEY = "registry/counter"
RECORDS = "registry/releases/"
DECISIONS = ("approve", "reject")
SEAL = "seal"
LINEAGE_HASH = "hmac-sha256:"


class RecordTampered(ValueError):
    """A status record or release that does not match what memgov signed and logged; the message names it."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _effective(release_id: str, recorded: str, champion: str | None) -> str:
    if recorded == "tainted":
        return recorded
    if champion == release_id:
        return "champion"
    return "retired" if recorded == "champion" else recorded


class Registry:
    """With a system key, every status record is sealed (signed) when written and its digest goes into the change
    log event that reports the change; `verify_record` then proves a record is the one memgov last wrote."""

    def __init__(self, store: ArtifactStore, log: ChangeLog, signer=None, lineage_key: bytes | None = None):
        """`lineage_key`: the key lineage ids are hashed under; kept apart from the system key so that rotating
        the system key does not change how forgotten ids match the lineage of existing releases."""
        self.store = store
        self.log = log
        self.signer = signer
        self.system_public = keys.public_text(signer.public_key()) if signer is not None else None
        self._written: dict[str, str] = {}
        self._lineage_key: bytes | None = lineage_key

    # -- lineage -----------------------------------------------------------------------
    def _lineage_digest(self, value: str) -> str:
        """A lineage id as the manifest keeps it: an HMAC under a key derived from the system key (a mounted
        secret, never in the store), so manifests name no forgotten id in clear and every pod hashes alike."""
        if value.startswith(LINEAGE_HASH):
            return value
        if self._lineage_key is None:
            self._lineage_key = derived_lineage_key(self.signer)
        return LINEAGE_HASH + hmac.new(self._lineage_key, value.encode(), hashlib.sha256).hexdigest()

    def lineage_digests(self, values) -> set[str]:
        return {self._lineage_digest(str(v)) for v in values}

    def in_lineage(self, release: Release, kind: str, value: str) -> bool:
        """Whether the release was trained on this row or subject id (`kind`: row_ids or subject_ids); manifests
        written before lineage was hashed hold ids in clear and are matched as they are."""
        held = release.lineage.get(kind, [])
        return self._lineage_digest(str(value)) in held or str(value) in held

    # -- sealing -----------------------------------------------------------------------
    def _seal(self, record: dict) -> dict:
        body = {k: v for k, v in record.items() if k != SEAL}
        if self.signer is None:
            return body
        return {**body, SEAL: keys.sign(self.signer, body)}

    def _update(self, release_id: str, change) -> dict:
        """Read-modify-write one record, sealed; remembers its digest for the next log event."""
        new = self.store.update_json(RECORDS + release_id, lambda r: self._seal(change(r)))
        self._written[release_id] = _record_digest(new)
        return new

    def _log(self, actor: str, action: str, obj: str, reason: str = "", run_id: str | None = None,
             details: dict | None = None) -> dict:
        written, self._written = self._written, {}
        extra = {"records": written} if written else {}
        return self.log.append(actor, action, obj, reason, run_id, details={**(details or {}), **extra})

    def record_problems(self, release_id: str, events: list[dict] | None = None) -> list[str]:
        """Why the stored status record is not the one memgov sealed and last logged (empty: it is)."""
        record = self._record(release_id)
        problems = []
        if self.signer is not None:
            seal = record.get(SEAL) or {}
            body = {k: v for k, v in record.items() if k != SEAL}
            if seal.get("key") != self.system_public or not keys.verify(seal["key"], body, seal.get("signature", "")):
                problems.append(f"release {release_id}'s status record is not sealed by the deployment's system key: "
                                "it was edited outside memgov")
        logged = None
        for event in events if events is not None else self.log.events():
            if release_id in (event.get("details") or {}).get("records", {}):
                logged = (event["seq"], event["details"]["records"][release_id])
        if logged is None and self.signer is not None:
            problems.append(f"release {release_id}'s status record is named by no change-log event: the log lost "
                            "the event that wrote it")
        elif logged is not None and logged[1] != _record_digest(record):
            problems.append(f"release {release_id}'s status record differs from the one change-log event {logged[0]} "
                            "recorded: it was edited or restored from an older copy")
        return problems

    def verify_record(self, release_id: str) -> None:
        problems = self.record_problems(release_id)
        if problems:
            raise RecordTampered("; ".join(problems) + "; refusing to act on it (restore the record, then run "
                                 "`memgov verify " + release_id + "`)")

    def release_problems(self, release_id: str) -> list[str]:
        """Signature and digests of a release: its attestation, its manifest and every artifact it names."""
        release = self.get(release_id)
        problems = list(self.record_problems(release_id))
        envelope = self.store.read_json(attest.ATTESTATIONS + release_id, default=None)
        if envelope is None:
            problems.append(f"release {release_id} has no attestation")
            return problems
        statement, why = attest.read_statement(envelope, self.system_public)
        if statement is None:
            return [*problems, f"release {release_id}: {why}"]
        expected = attest.subjects(release.manifest, release.manifest_digest)
        if statement["subject"] != expected:
            problems.append(f"release {release_id}'s manifest names other artifacts than the signed attestation")
        for subject in statement["subject"]:
            digest = "sha256:" + subject["digest"]["sha256"]
            if not self.store.has(digest) and self._deleted_on_purpose(release, subject["name"], digest):
                continue  # a tainted release's weights may hold forgotten data (pipelines.forget.weights)
            problems += [f"release {release_id}: {p}" for p in attest.artifact_problems(self.store, subject["name"],
                                                                                          digest)]
        return problems

    def _deleted_on_purpose(self, release: Release, name: str, digest: str) -> bool:
        """A tainted release's own weights, or an adapter that a tainted release introduced (later releases name it
        as provenance only), are deleted once no champion serves them; a missing blob is then no tampering."""
        champion = self.champion()
        if name == "weights":
            return release.status == "tainted" and release.release_id != champion
        if not name.startswith("adapter:"):
            return False
        for earlier in self.list():  # in release order: the first to name an adapter introduced it
            if any(isinstance(a, dict) and a.get("digest") == digest for a in earlier.adapters):
                return earlier.status == "tainted" and earlier.release_id != champion
        return False

    # -- reading ---------------------------------------------------------------------
    def _record(self, release_id: str) -> dict:
        record = self.store.read_json(RECORDS + release_id, default=None) if _valid_id(release_id) else None
        if record is None:
            raise KeyError(f"no release {release_id!r} in the registry at {self.store.uri}")
        return record

    def champion(self) -> str | None:
        """The release in service, from the sealed pointer; RecordTampered for a pointer memgov did not write."""
        pointer = self._pointer()
        return pointer["release"] if pointer else None

    def _pointer(self, text: str | None = ...) -> dict | None:
        text = self.store.read_text(CHAMPION_KEY) if text is ... else text
        if text is None:
            return None
        try:
            pointer = json.loads(text)
        except ValueError:
            pointer = None
        if not isinstance(pointer, dict) or not _valid_id(pointer.get("release")):
            raise RecordTampered(f"the champion pointer reads {text[:40]!r}, not a record memgov wrote: it was moved "
                                 "outside memgov; restore it (`memgov log verify` names the last logged move)")
        if self.signer is not None:
            seal = pointer.get(SEAL) or {}
            body = {k: v for k, v in pointer.items() if k != SEAL}
            if seal.get("key") != self.system_public or not keys.verify(seal["key"], body, seal.get("signature", "")):
                raise RecordTampered(f"the champion pointer (naming {pointer['release']}) is not sealed by the "
                                     "deployment's system key: it was moved outside memgov; restore it (`memgov log "
                                     "verify` names the last logged move)")
        return pointer

    def pointer_problems(self, events: list[dict] | None = None) -> list[str]:
        """Why the champion pointer is not the one memgov last logged (seal, then the log's last move)."""
        try:
            text = self.store.read_text(CHAMPION_KEY)
            pointer = self._pointer(text)
        except RecordTampered as exc:
            return [str(exc)]
        logged = None
        for event in events if events is not None else self.log.events():
            if "pointer" in (event.get("details") or {}):
                logged = event
        actual = digest_of(text.encode()) if text is not None else None
        if logged is None:
            return [f"the champion pointer names {pointer['release']} but no change-log event records a move"] \
                if pointer else []
        details = logged["details"]
        allowed = {details["pointer"]}
        if logged["action"] == "release.promotion_started":  # a move in flight: before or after the swap
            allowed.add(details.get("was"))
        if actual not in allowed:
            named = f"naming {pointer['release']}" if pointer else "missing"
            return [f"the champion pointer ({named}) is not the one change-log event {logged['seq']} "
                    f"({logged['action']} {logged['object']}) recorded: it was put back from an older copy or "
                    "written outside memgov"]
        return []

    def verify_champion(self) -> str | None:
        """The champion, after checking the pointer against the log; RecordTampered names what is wrong."""
        problems = self.pointer_problems()
        if problems:
            raise RecordTampered("; ".join(problems))
        return self.champion()

    def get(self, release_id: str) -> Release:
        return self._load(release_id, self.champion())

    def _load(self, release_id: str, champion: str | None) -> Release:
        record = self._record(release_id)
        manifest = json.loads(self.store.get_bytes(record["manifest"]))
        return Release(
            **{k: manifest[k] for k in MANIFEST_KEYS},
            manifest_digest=record["manifest"],
            status=_effective(release_id, record["status"], champion),
            approvals=record["approvals"],
            history=record["history"],
            taint=record.get("taint", []),
            waivers=record.get("waivers", []),
            log_head=manifest.get("log_head"),
            intermediates=manifest.get("intermediates", []),
        )

    def status(self, release_id: str) -> str:
        return _effective(release_id, self._record(release_id)["status"], self.champion())

    def release_ids(self) -> list[str]:
        ids = [k[len(RECORDS) :] for k in self.store.list_keys(RECORDS)]
        return sorted((i for i in ids if _valid_id(i)), key=lambda r: int(r[1:]))

    def list(self) -> list[Release]:
        champion = self.champion()
        return [self._load(i, champion) for i in self.release_ids()]

    # -- changing ----------------------------------------------------------------------
    def create(self, manifest_fields: dict[str, Any], actor: str, reason: str) -> Release:
        """Store the manifest blob and a 'candidate' record; lineage and honoured tombstones accumulate from parent."""
        fields = validate_fields(manifest_fields).model_dump()
        if not fields["intermediates"]:
            del fields["intermediates"]
        for k in ("subject_ids", "row_ids"):
            fields["lineage"][k] = sorted(self.lineage_digests(fields["lineage"][k]))
        if fields["parent"] is not None:
            parent = self.get(fields["parent"])
            for k in ("subject_ids", "row_ids"):
                fields["lineage"][k] = sorted(set(fields["lineage"][k]) | self.lineage_digests(parent.lineage[k]))
            fields["tombstones_honoured"] = sorted(set(fields["tombstones_honoured"]) | set(parent.tombstones_honoured))
        if not self.store.has(fields["model"]):
            raise ValueError(
                f"model {fields['model']} is not in {self.store.uri}; store the weights with put_dir first"
            )
        _require(actor, "actor")
        n = self.store.update_json(COUNTER_KEY, lambda v: (v or 0) + 1)
        release_id = f"r{n:04d}"
        manifest = {**fields, "release_id": release_id, "created_at": _now(), "created_by": actor}
        head = self.log.head() if self.log is not None else None
        if head is not None:
            manifest["log_head"] = head
        digest = self.store.put_bytes(canonical_json(manifest))
        if self.signer is not None:
            self.store.write_json(attest.ATTESTATIONS + release_id, attest.attest(self.signer, manifest, digest))
        record = self._seal({"release_id": release_id, "manifest": digest, "status": "candidate", "approvals": [],
                             "history": []})
        text = json.dumps(record, sort_keys=True, indent=1, ensure_ascii=False)
        if not self.store.compare_and_swap(RECORDS + release_id, None, text):
            raise RuntimeError(f"release record {release_id} already exists; the counter at {COUNTER_KEY} is behind")
        self._written[release_id] = _record_digest(record)
        self._log(
            actor,
            "release.created",
            release_id,
            reason,
            details={"manifest": digest, "parent": fields["parent"], "cycle": fields["cycle"]},
        )
        return self.get(release_id)

    def _move(
        self,
        release_id: str,
        new: str,
        actor: str,
        reason: str,
        run_id: str | None,
        strict: bool = True,
        extra: dict | None = None,
        extra_entry: dict | None = None,
    ) -> bool:
        """Update the record's status (and history); with strict=False an illegal move is skipped, not raised."""
        moved = False

        def change(record: dict) -> dict:
            nonlocal moved
            current = record["status"]  # the recorded state: callers already checked the effective one
            moved = new in TRANSITIONS[current]
            if not moved:
                if strict:
                    check_transition(release_id, current, new)
                return record
            entry = {"time": _now(), "from": current, "to": new, "actor": actor, "reason": reason, "run_id": run_id,
                     **({"signed": extra_entry} if extra_entry else {})}
            record = {**record, "status": new, "history": [*record["history"], entry]}
            if extra:
                record["taint"] = [*record.get("taint", []), extra]
            return record

        self._record(release_id)
        self._update(release_id, change)
        return moved

    def set_status(self, release_id: str, new: str, actor: str, reason: str, run_id: str | None = None,
                   proof: dict | None = None) -> Release:
        """approve / reject / taint; the champion changes only through promote() and rollback()."""
        _require(actor, "actor")
        current = self.status(release_id)
        if new == "champion":
            raise ValueError(f"release {release_id}: use promote() or rollback() to make a release champion")
        if current == "champion" and new == "retired":
            raise ValueError(
                f"release {release_id}: cannot go from 'champion' to 'retired' by hand; "
                "it is retired when another release is promoted or rolled back to"
            )
        check_transition(release_id, current, new)
        self._move(release_id, new, actor, reason, run_id, extra_entry=proof)
        self._log(actor, f"release.{new}", release_id, reason, run_id,
                  details={"from": current, **({"signed": proof} if proof else {})})
        return self.get(release_id)

    def add_approval(self, release_id: str, approver: str, role: str, decision: str, reason: str,
                     policy: str | None = None, proof: dict | None = None) -> Release:
        """Record one reviewer's decision (and the policy it was taken under); whether it suffices is the policy's
        business, not the registry's."""
        _require(approver, "approver")
        _require(role, "role")
        _require(reason, "reason")
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not valid; use one of {', '.join(DECISIONS)}")
        current = self.status(release_id)
        if current not in ("candidate", "approved"):
            raise ValueError(f"release {release_id} is '{current}'; approvals are recorded only for candidates")
        self.verify_record(release_id)
        signed = {"signed": proof} if proof else {}
        entry = {"approver": approver, "role": role, "decision": decision, "reason": reason, "time": _now(),
                 **({"policy": policy} if policy else {}), **signed}
        self._update(release_id, lambda r: {**r, "approvals": [*r["approvals"], entry]})
        self._log(approver, "release.approval_recorded", release_id, reason,
                  details={"role": role, "decision": decision, **({"policy": policy} if policy else {}), **signed})
        return self.get(release_id)

    def _swap_champion(
        self, release_id: str, expected: str | None, actor: str, reason: str, run_id: str | None, action: str,
        proof: dict | None = None, owed: list[str] | None = None,
    ) -> bool:
        """Intent logged, pointer swapped, records moved, outcome logged; `recover` finishes what a crash cut.
        `owed`: what must follow the move (["canary"]), carried in both events so a recovery knows it is owed."""
        if expected == release_id:
            raise ValueError(f"release {release_id} is already the champion")
        self.verify_record(release_id)
        old_text = self.store.read_text(CHAMPION_KEY)
        old = self._pointer(old_text)
        if (old["release"] if old else None) != expected:
            return False
        problems = self.pointer_problems()
        if problems:
            raise RecordTampered("; ".join(problems) + "; refusing to move it")
        body = {"release": release_id, "previous": expected, "move": (old or {}).get("move", 0) + 1, "time": _now()}
        new_text = json.dumps(self._seal(body), sort_keys=True)
        digest = digest_of(new_text.encode())
        signed = {"signed": proof} if proof else {}
        extra = {"owed": owed} if owed else {}
        self.log.append(actor, "release.promotion_started", release_id, reason, run_id,
                        details={"previous": expected, "pointer": digest, "was": digest_of(old_text.encode())
                                 if old_text else None, "action": action, **signed, **extra})
        if not self.store.compare_and_swap(CHAMPION_KEY, old_text, new_text):
            now = self.store.read_text(CHAMPION_KEY)
            self.log.append(actor, "release.promotion_abandoned", release_id, "another move won the race", run_id,
                            details={"pointer": digest_of(now.encode()) if now else None})
            return False
        failpoint("champion.swapped")
        self._finish_move(release_id, expected, actor, reason, run_id, action, digest, proof, owed)
        return True

    def _finish_move(self, release_id: str, expected: str | None, actor: str, reason: str, run_id: str | None,
                     action: str, digest: str, proof: dict | None, owed: list[str] | None = None,
                     recovered: bool = False) -> None:
        self._move(release_id, "champion", actor, reason, run_id, strict=False, extra_entry=proof)
        if expected is not None:
            self._move(expected, "retired", actor, f"replaced by {release_id}: {reason}", run_id, strict=False)
        self._log(actor, action, release_id, reason, run_id,
                  details={"previous": expected, "pointer": digest, **({"signed": proof} if proof else {}),
                           **({"owed": owed} if owed else {}), **({"recovered": True} if recovered else {})})

    def recover(self) -> str | None:
        """Finish a champion move a crash interrupted: its intent is the log's last word on the pointer. Completed
        (records and outcome event) when the pointer holds the intended record, else abandoned; returns what was
        done, or None."""
        events = self.log.events()
        last = next((e for e in reversed(events) if "pointer" in (e.get("details") or {})), None)
        if last is None or last["action"] != "release.promotion_started":
            return None
        text = self.store.read_text(CHAMPION_KEY)
        details = last["details"]
        if text is not None and digest_of(text.encode()) == details["pointer"]:
            self._pointer(text)
            self._finish_move(last["object"], details["previous"], last["actor"], last["reason"], last["run_id"],
                              details["action"], details["pointer"], details.get("signed"), details.get("owed"),
                              recovered=True)
            return "completed"
        if (digest_of(text.encode()) if text is not None else None) != details.get("was"):
            raise RecordTampered(f"the champion pointer is neither the one before nor the one after the move that "
                                 f"change-log event {last['seq']} started: it was written outside memgov")
        self.log.append("system:recovery", "release.promotion_abandoned", last["object"],
                        "the process moving the champion pointer stopped before the swap", last["run_id"],
                        details={"pointer": details.get("was")})
        return "abandoned"

    def promote(self, release_id: str, actor: str, reason: str, expected: Any = ..., run_id: str | None = None,
                owed: list[str] | None = None) -> bool:
        """Make an approved release champion; False when the pointer no longer held `expected` (lost a race).
        `owed` names what the caller does after the move (the canary), so a crash before it is done is finished."""
        _require(actor, "actor")
        current = self.status(release_id)
        if current == "retired":
            raise ValueError(f"release {release_id} is retired; use rollback() to bring it back")
        if current == "champion":
            raise ValueError(f"release {release_id} is already the champion")
        if current != "approved":
            raise ValueError(f"release {release_id} is '{current}'; only an approved release can be promoted")
        expected = self.champion() if expected is ... else expected
        return self._swap_champion(release_id, expected, actor, reason, run_id, "release.promoted", owed=owed)

    def rollback(self, to_id: str, actor: str, reason: str, expected: Any = ..., run_id: str | None = None,
                 proof: dict | None = None) -> bool:
        """Put a retired (or approved) release back in service; tainted, rejected and unapproved ones are refused."""
        _require(actor, "actor")
        release = self.get(to_id)
        requests = ", ".join(t["request_id"] for t in release.taint)
        requests = f" by forget request(s) {requests}" if requests else ""
        why = {
            "tainted": f"it is tainted{requests}: its weights may hold forgotten data; "
            "re-scrub it into a new release instead",
            "rejected": "it was rejected at review",
            "candidate": "it is a candidate that was never approved",
            "withdrawn": "it failed its canary check after promotion and was withdrawn from service",
            "champion": "it is already the champion",
        }.get(release.status)
        if why:
            raise ValueError(f"cannot roll back to release {to_id}: {why}")
        expected = self.champion() if expected is ... else expected
        return self._swap_champion(to_id, expected, actor, reason, run_id, "release.rolled_back", proof)

    def waive(self, release_id: str, actor: str, role: str, reason: str, gates: list[str],
              run_id: str | None = None, proof: dict | None = None) -> Release:
        """Return a gate-rejected release to 'candidate' under a recorded waiver; it still needs its approvals.

        Whether `role` may waive, and which gates, is the policy's business (see pipelines.governance.approvals);
        the registry only refuses what no policy can allow: waiving anything but a rejection by the gates.
        """
        for value, name in ((actor, "actor"), (role, "role"), (reason, "reason")):
            _require(value, name)
        if not gates:
            raise ValueError("gates is empty; name the failed gate(s) the waiver covers")
        self.verify_record(release_id)
        record = self._record(release_id)
        status = _effective(release_id, record["status"], self.champion())
        last = record["history"][-1] if record["history"] else {}
        if status != "rejected" or last.get("actor") != "system:gates":
            why = "it was rejected by a reviewer" if status == "rejected" else f"it is '{status}'"
            raise ValueError(f"cannot waive gates on release {release_id}: {why}; only a gate rejection can be waived")
        waiver = {"time": _now(), "actor": actor, "role": role, "reason": reason, "gates": sorted(gates),
                  "run_id": run_id, **({"signed": proof} if proof else {})}

        def change(r: dict) -> dict:
            if r["status"] != "rejected":
                raise ValueError(f"release {release_id} changed while being waived; it is now '{r['status']}'")
            entry = {"time": waiver["time"], "from": "rejected", "to": "candidate", "actor": actor,
                     "reason": f"gate waiver ({role}): {reason}", "run_id": run_id}
            return {**r, "status": "candidate", "history": [*r["history"], entry],
                    "waivers": [*r.get("waivers", []), waiver]}

        self._update(release_id, change)
        self._log(actor, "gates.waived", release_id, reason, run_id,
                  details={"role": role, "gates": sorted(gates), **({"signed": proof} if proof else {})})
        return self.get(release_id)

    def mark_tainted(self, row_ids: set[str], subject_ids: set[str], request_id: str, actor: str) -> list[str]:
        """Taint every release trained on the given ids that has not honoured `request_id`; returns their ids."""
        _require(request_id, "request_id")
        _require(actor, "actor")
        rows, subjects = set(row_ids), set(subject_ids)
        rows |= self.lineage_digests(rows)  # hashed lineage, and ids in clear for manifests from before hashing
        subjects |= self.lineage_digests(subjects)
        tainted = []
        for release in self.list():
            if release.status == "tainted" or request_id in release.tombstones_honoured:
                continue
            hit_rows = rows & set(release.lineage["row_ids"])
            hit_subjects = subjects & set(release.lineage["subject_ids"])
            if not (hit_rows or hit_subjects):
                continue
            reason = f"lineage intersects forget request {request_id}"
            taint = {"request_id": request_id, "time": _now()}
            if self._move(release.release_id, "tainted", actor, reason, None, strict=False, extra=taint):
                self._log(
                    actor,
                    "release.tainted",
                    release.release_id,
                    reason,
                    details={
                        "request_id": request_id,
                        "matched_rows": len(hit_rows),
                        "matched_subjects": len(hit_subjects),
                        "was": release.status,
                    },
                )
                tainted.append(release.release_id)
        return tainted


def derived_lineage_key(signer) -> bytes:
    """The lineage key of a deployment that has never rotated its system key: derived from that key."""
    raw = (signer.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption()) if signer is not None else b"")
    return hashlib.sha256(b"memgov lineage\x00" + raw).digest()


def _record_digest(record: dict) -> str:
    return digest_of(canonical_json(record))


def _require(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is empty; give a non-empty string")


def _valid_id(release_id: Any) -> bool:
    return isinstance(release_id, str) and len(release_id) > 1 and release_id[0] == "r" and release_id[1:].isdigit()
