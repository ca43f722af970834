"""Signed decisions and verifiable releases, tried from the attacker's side through the CLI on a copy of the demo.

Identity is the key: an unsigned or altered decision, a signature made for another release, the same key twice, a
role the keyring does not grant, a replayed signature, an edited status record and a swapped weight file are all
refused with the reason; nothing changes when they are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support_governance import POLICY, actions_on, candidate, demo_ws, flat, memgov
from support_keys import admin_key, keyholder

from pipelines.deployment.workspace import Workspace

LIMIT = POLICY.approval.two_approvers_above_facts


@pytest.fixture
def ws(demo_copy) -> Workspace:
    return demo_ws(demo_copy)


def sign(ws: Workspace, tmp_path: Path, action: str, rid: str, key: str, role: str, reason: str = "reviewed") -> Path:
    out = tmp_path / f"{action}-{rid}-{Path(key).stem}-{len(list(tmp_path.iterdir()))}.json"
    proc = memgov(ws.home, "sign", action, rid, "--key", key, "--role", role, "--reason", reason, "--out", str(out))
    assert proc.returncode == 0, flat(proc)
    return out


def test_an_unsigned_approval_is_refused(ws):
    rid = candidate(ws)
    proc = memgov(ws.home, "approve", rid, "--role", "ml-lead", "--reason", "looks good", "--approver", "bob")
    assert proc.returncode == 2 and "unsigned approve is refused" in flat(proc)
    assert "Traceback" not in flat(proc)
    assert ws.registry.status(rid) == "candidate" and ws.registry.get(rid).approvals == []


def test_an_altered_signature_is_refused(ws, tmp_path):
    rid = candidate(ws)
    signed = sign(ws, tmp_path, "approve", rid, keyholder(ws.home, "bob", "ml-lead"), "ml-lead")
    envelope = json.loads(signed.read_text())
    envelope["statement"]["reason"] = "something else"  # the words no longer those signed
    signed.write_text(json.dumps(envelope))
    proc = memgov(ws.home, "approve", rid, "--signed", str(signed))
    assert proc.returncode == 2 and "signature does not verify" in flat(proc)
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"


def test_a_key_outside_the_keyring_is_refused(ws, tmp_path):
    rid = candidate(ws)
    stranger = tmp_path / "mallory.key"
    assert memgov(ws.home, "keys", "new", str(stranger)).returncode == 0
    proc = memgov(ws.home, "approve", rid, "--key", str(stranger), "--role", "governance", "--reason", "trust me")
    assert proc.returncode == 2 and "not in the deployment's keyring" in flat(proc)
    assert ws.registry.get(rid).approvals == []


def test_a_signature_for_release_a_does_not_approve_release_b(ws, tmp_path):
    a, b = candidate(ws), candidate(ws)
    signed = sign(ws, tmp_path, "approve", a, keyholder(ws.home, "bob", "ml-lead"), "ml-lead")
    proc = memgov(ws.home, "approve", b, "--signed", str(signed))
    assert proc.returncode == 2 and f"signed for release '{a}', not '{b}'" in flat(proc)
    assert ws.registry.get(b).approvals == [] and ws.registry.champion() == "r0003"


def test_an_approval_signed_before_the_release_changed_no_longer_counts(ws, tmp_path):
    rid = candidate(ws)
    signed = sign(ws, tmp_path, "approve", rid, keyholder(ws.home, "bob", "ml-lead"), "ml-lead")
    envelope = json.loads(signed.read_text())
    envelope["statement"]["subject"]["card"] = "sha256:" + "0" * 64  # as if the card had been swapped since
    signed.write_text(json.dumps(envelope))
    proc = memgov(ws.home, "approve", rid, "--signed", str(signed))
    assert proc.returncode == 2  # changed after signing: the signature breaks first
    assert ws.registry.get(rid).approvals == []


def test_two_approvals_with_the_same_key_count_once(ws):
    rid = candidate(ws, new_facts=LIMIT + 1)  # a large change: two people must approve
    bob = keyholder(ws.home, "bob", "ml-lead", "governance")
    for role in ("ml-lead", "governance"):
        proc = memgov(ws.home, "approve", rid, "--key", bob, "--role", role, "--reason", f"approved as {role}")
        assert proc.returncode == 0, flat(proc)
        assert "more distinct approver" in flat(proc)
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"
    carol = keyholder(ws.home, "carol", "governance")
    proc = memgov(ws.home, "approve", rid, "--key", carol, "--role", "governance", "--reason", "second pair of eyes")
    assert proc.returncode == 0, flat(proc)
    assert ws.registry.champion() == rid
    approvals = ws.registry.get(rid).approvals
    assert [a["approver"] for a in approvals] == ["bob", "bob", "carol"]
    assert all(a["signed"]["key_id"].startswith("k:") for a in approvals), "each approval names the key it came with"


def test_a_second_key_of_the_same_person_is_still_one_approver(ws, tmp_path):
    rid = candidate(ws, new_facts=LIMIT + 1)
    bob = keyholder(ws.home, "bob", "ml-lead")
    laptop = tmp_path / "bob-laptop.key"
    public = memgov(ws.home, "keys", "new", str(laptop)).stdout.strip()
    granted = memgov(ws.home, "keys", "grant", "Bob", "--key", public, "--role", "ml-lead", "--by", admin_key(ws.home),
                     "--reason", "second device")
    assert granted.returncode == 0, flat(granted)
    for key in (bob, str(laptop)):
        assert memgov(ws.home, "approve", rid, "--key", key, "--role", "ml-lead", "--reason", "ok").returncode == 0
    assert ws.registry.status(rid) == "candidate", "two keys of one person are one approver"


def test_a_role_not_granted_to_the_key_is_refused(ws):
    rid = candidate(ws)
    dave = keyholder(ws.home, "dave", "data-scientist")
    proc = memgov(ws.home, "approve", rid, "--key", dave, "--role", "governance", "--reason", "I am governance now")
    assert proc.returncode == 2
    assert "role 'governance' is not granted to dave" in flat(proc) and "data-scientist" in flat(proc)
    assert ws.registry.get(rid).approvals == []


def test_a_name_beside_the_signature_must_be_the_signers(ws):
    rid = candidate(ws)
    bob = keyholder(ws.home, "bob", "ml-lead")
    proc = memgov(ws.home, "approve", rid, "--key", bob, "--role", "ml-lead", "--reason", "ok", "--approver", "carol")
    assert proc.returncode == 2 and "signed by bob's key but claims to be carol's" in flat(proc)


def test_a_signature_is_accepted_once(ws, tmp_path):
    rid = candidate(ws, new_facts=LIMIT + 1)
    signed = sign(ws, tmp_path, "approve", rid, keyholder(ws.home, "bob", "ml-lead"), "ml-lead")
    assert memgov(ws.home, "approve", rid, "--signed", str(signed)).returncode == 0
    proc = memgov(ws.home, "approve", rid, "--signed", str(signed))
    assert proc.returncode == 2 and "already used" in flat(proc)
    assert len(ws.registry.get(rid).approvals) == 1


def test_a_rollback_signed_while_another_champion_served_cannot_be_replayed(ws, tmp_path):
    rid = candidate(ws)
    ops = keyholder(ws.home, "ops", "ml-lead")
    signed = sign(ws, tmp_path, "rollback", "r0003", ops, "ml-lead", "prepared in advance")
    assert memgov(ws.home, "approve", rid, "--key", keyholder(ws.home, "bob", "ml-lead"), "--role", "ml-lead",
                  "--reason", "card reviewed").returncode == 0
    assert ws.registry.champion() == rid
    proc = memgov(ws.home, "rollback", "--to", "r0003", "--signed", str(signed))
    assert proc.returncode == 2 and "the champion is now" in flat(proc)
    assert ws.registry.champion() == rid


def test_an_edited_status_record_is_refused_by_rollback_with_the_release_named(ws):
    """The attack from the field: r0004 (rejected by its gates) edited to 'retired', then rolled back to."""
    path = ws.home / "artifacts" / "registry" / "releases" / "r0004"
    record_file = next(p for p in [path, path.with_suffix(".json")] if p.exists())
    record = json.loads(record_file.read_text())
    record["status"] = "retired"
    record_file.write_text(json.dumps(record, sort_keys=True, indent=1))
    proc = memgov(ws.home, "rollback", "--to", "r0004", "--key", keyholder(ws.home, "ops", "ml-lead"),
                  "--role", "ml-lead", "--reason", "bring it back")
    assert proc.returncode == 2, flat(proc)
    assert "release r0004's status record is not sealed" in flat(proc)
    assert ws.registry.champion() == "r0003" and "release.rolled_back" not in actions_on(ws, "r0004")
    assert memgov(ws.home, "verify", "r0004").returncode == 1


def test_an_older_copy_of_a_status_record_is_refused(ws):
    """Restoring a record memgov itself sealed earlier (a candidate, before it was rejected) is found too."""
    rid = candidate(ws)
    path = ws.home / "artifacts" / "registry" / "releases" / rid
    record_file = next(p for p in [path, path.with_suffix(".json")] if p.exists())
    before = record_file.read_text()
    assert memgov(ws.home, "reject", rid, "--key", keyholder(ws.home, "bob", "ml-lead"), "--role", "ml-lead",
                  "--reason", "card shows drift").returncode == 0
    record_file.write_text(before)
    proc = memgov(ws.home, "approve", rid, "--key", keyholder(ws.home, "carol", "governance"),
                  "--role", "governance", "--reason", "ship it")
    assert proc.returncode == 2 and f"release {rid}'s status record differs" in flat(proc)
    assert ws.registry.champion() == "r0003"


def test_memgov_verify_names_a_swapped_weight_file(ws):
    assert memgov(ws.home, "verify", "r0003").returncode == 0
    weights = ws.store.dir_manifest(ws.registry.get("r0003").model)["files"]
    target = next(f for f in weights if f["path"].endswith(".safetensors"))
    blob = next((ws.home / "artifacts" / "blobs").rglob(target["digest"].split(":", 1)[1] + "*"))
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)
    proc = memgov(ws.home, "verify", "r0003")
    assert proc.returncode == 1
    assert f"weights file {target['path']}" in flat(proc) and "corrupt" in flat(proc)


def test_memgov_verify_refuses_an_attestation_not_signed_by_the_system_key(ws, tmp_path):
    doc = next((ws.home / "artifacts" / "registry" / "attestations").glob("r0003*"))
    saved = tmp_path / "attestation"
    shutil.copy(doc, saved)
    envelope = json.loads(doc.read_text())
    envelope["signatures"][0]["sig"] = envelope["signatures"][0]["sig"][::-1]
    doc.write_text(json.dumps(envelope))
    proc = memgov(ws.home, "verify", "r0003")
    assert proc.returncode == 1 and "not signed by the deployment's system key" in flat(proc)
