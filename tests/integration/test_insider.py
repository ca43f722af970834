"""The insider who can read and write MEMGOV_HOME and the artifact store but holds neither the deployment's secrets
nor an approver's or administrator's key: every forgery tried from that side is refused or found, with what
changed named. Each case is one the threat model (infra/runbook.md) lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from support_forget import small_deployment
from support_governance import POLICY, candidate, flat
from support_keys import admin_key, key_file, keyholder

from pipelines.core.digests import canonical_json
from pipelines.deployment.registry.registry import CHAMPION_KEY, RecordTampered
from pipelines.deployment.workspace import Workspace
from pipelines.governance.policy_in_force import adopt, policy_in_force
from pipelines.state.ledger import LogTampered
from pipelines.state.ledger.changelog import event_hash
from pipelines.trust import keyring as kr
from pipelines.trust.identity import IdentityRefused, identity_tags, ui_user

ROOT = Path(__file__).resolve().parents[2]
LIMIT = POLICY.approval.two_approvers_above_facts


def memgov(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMGOV_HOME": str(home), "COLUMNS": "250"}
    env.pop("MEMGOV_POLICY", None)
    return subprocess.run([sys.executable, "-m", "memgov", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = small_deployment(tmp_path / "home")
    adopt(ws, POLICY, "system:init", "the policy this deployment was initialised with")
    keyholder(ws.home, "alice", "ml-lead")
    keyholder(ws.home, "bob", "data-scientist")
    return Workspace.open(ws.home)


def _lines(ws: Workspace) -> list[dict]:
    return [json.loads(line) for line in ws.log.path.read_text().splitlines()]


def _write(ws: Workspace, events: list[dict], rechain: bool = True) -> None:
    prev = "0" * 64
    out = []
    for i, event in enumerate(events, start=1):
        if rechain:
            event = {**event, "seq": i, "prev_hash": prev}
            event["hash"] = event_hash(event)
            prev = event["hash"]
        out.append(canonical_json(event).decode())
    ws.log.path.write_text("\n".join(out) + "\n")


# -- secrets ---------------------------------------------------------------------------------
def test_no_secret_lives_in_the_home(ws):
    secrets_dir = ws.secrets_dir
    assert not secrets_dir.is_relative_to(ws.home)
    system_pem = (secrets_dir / "system.key").read_bytes()
    ui_secret = (secrets_dir / "ui.secret").read_text().strip()
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in secrets_dir.iterdir())
    for path in ws.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert system_pem not in data and ui_secret.encode() not in data, f"{path} holds a secret"


def test_a_system_key_left_in_the_home_is_refused_with_the_move_that_fixes_it(tmp_path):
    home = tmp_path / "old"
    (home / "keys").mkdir(parents=True)
    from pipelines.trust.keys import generate

    generate(home / "keys" / "system.key")
    with pytest.raises(ValueError, match=r"inside the home.*mv .*system.key"):
        kr.system_key(home)


def test_secrets_inside_the_home_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMGOV_SECRETS", str(tmp_path / "home" / "secrets"))
    with pytest.raises(ValueError, match="inside MEMGOV_HOME"):
        Workspace.open(tmp_path / "home").secrets_dir  # noqa: B018


# -- the keyring -------------------------------------------------------------------------------
def test_a_hand_edited_keyring_is_refused_with_what_changed(ws):
    path = kr.keyring_path(ws.home)
    doc = yaml.safe_load(path.read_text())
    doc["people"]["bob"]["roles"].append("ml-lead")
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(kr.KeyringTampered, match=r"people\.bob\.roles: \['ml-lead'\] not granted"):
        ws.keyring()
    rid = candidate(ws)
    bob = key_file(ws.home, "bob")[0]
    proc = memgov(ws.home, "approve", rid, "--key", bob, "--role", "ml-lead", "--reason", "promote me")
    assert proc.returncode == 2 and "edited by hand" in flat(proc), flat(proc)
    assert ws.registry.get(rid).approvals == [] and ws.registry.champion() == "r0001"


def test_a_statement_signed_by_anyone_but_an_administrator_is_refused(ws):
    from pipelines.core.digests import digest_of
    from pipelines.trust import keys

    path = kr.keyring_path(ws.home)
    doc = yaml.safe_load(path.read_text())
    last = doc["statements"][-1]["body"]
    body = {"seq": last["seq"] + 1, "prev": digest_of(canonical_json(last)), "op": "grant", "time": last["time"],
            "args": {"person": "bob", "keys": [], "roles": ["ml-lead"]}, "reason": "self-service"}
    signed = keys.sign(keys.load_private(key_file(ws.home, "bob")[0]), body)
    doc["statements"].append({"body": body, "signer": signed["key"], "signature": signed["signature"]})
    doc["people"]["bob"]["roles"] = ["data-scientist", "ml-lead"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(kr.KeyringTampered, match="not signed by a keyring administrator"):
        ws.keyring()


def test_an_older_keyring_put_back_is_refused(ws):
    path = kr.keyring_path(ws.home)
    before = path.read_text()
    from pipelines.trust.grants import revoke

    revoke(ws.home, ws.log, "alice", [], ["ml-lead"], admin_key(ws.home), "left the rota")
    path.write_text(before)  # alice's role back, every statement in it validly signed
    with pytest.raises(kr.KeyringTampered, match="not the newest"):
        ws.keyring()


def test_an_emptied_or_deleted_keyring_is_refused(ws):
    path = kr.keyring_path(ws.home)
    path.write_text("{}\n")
    with pytest.raises(kr.KeyringTampered, match="missing or emptied"):
        ws.keyring()
    path.unlink()
    with pytest.raises(kr.KeyringTampered, match="missing or emptied"):
        ws.keyring()


def test_keys_grant_needs_an_administrators_key_not_a_typed_name(ws, tmp_path):
    mallory, public = key_file(ws.home, "mallory")
    before = kr.keyring_path(ws.home).read_text()
    own = memgov(ws.home, "keys", "grant", "mallory", "--key", public, "--role", "governance", "--by", mallory,
                 "--reason", "I am the admin now")
    assert own.returncode == 2 and "not a keyring administrator's" in flat(own), flat(own)
    typed = memgov(ws.home, "keys", "grant", "mallory", "--key", public, "--role", "governance", "--by", "sec-admin",
                   "--reason", "I am the admin now")
    assert typed.returncode == 2 and "does not exist" in flat(typed), flat(typed)
    assert kr.keyring_path(ws.home).read_text() == before
    assert ws.keyring().roles_of("mallory") == []
    pinned = memgov(ws.home, "keys", "pin-admins", "--admin", f"mallory={public}")
    assert pinned.returncode == 2 and "already has its administrators pinned" in flat(pinned), flat(pinned)


def test_a_password_set_while_local_login_is_off_says_so_and_one_command_turns_it_on(ws, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery")
    set_pw = memgov(ws.home, "keys", "password", "alice", "--by", admin_key(ws.home), "--password-file", str(secret))
    assert set_pw.returncode == 0 and "local login is off" in flat(set_pw), flat(set_pw)
    on = memgov(ws.home, "keys", "ui", "--local-login", "--by", admin_key(ws.home), "--reason", "sign-in for approvers")
    assert on.returncode == 0 and Workspace.open(ws.home).keyring().ui.local_login, flat(on)
    again = memgov(ws.home, "keys", "password", "alice", "--by", admin_key(ws.home), "--password-file", str(secret))
    assert again.returncode == 0 and "local login is off" not in flat(again)


# -- the UI's identity -------------------------------------------------------------------------
def test_a_ui_identity_cannot_be_sealed_from_what_the_home_holds(ws):
    for guess in ("", "secret", kr.keyring_path(ws.home).read_text()[:64]):
        with pytest.raises(IdentityRefused, match="not set by memgov's UI server"):
            ui_user(ws.keyring(), identity_tags(guess, "alice", "release_decision", "login"), "release_decision")
    sealed = identity_tags(ws.keyring().ui.secret, "alice", "release_decision", "login")
    assert ui_user(ws.keyring(), sealed, "release_decision").name == "alice", "the real server's seal holds"
    path = kr.keyring_path(ws.home)
    doc = yaml.safe_load(path.read_text())
    doc["ui"]["secret"] = "chosen-by-mallory"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(kr.KeyringTampered, match="ui.secret"):
        ws.keyring()


# -- the champion pointer ----------------------------------------------------------------------
def test_a_champion_pointer_written_by_hand_is_refused_by_every_reader(ws):
    rejected = candidate(ws)
    ws.registry.set_status(rejected, "rejected", "alice", "worse")
    ws.store.write_text(CHAMPION_KEY, rejected)
    with pytest.raises(RecordTampered, match="champion pointer"):
        ws.registry.champion()
    for args in (("verify", "r0001"), ("log", "verify"), ("status",)):
        proc = memgov(ws.home, *args)
        assert proc.returncode != 0 and "champion pointer" in flat(proc), (args, flat(proc))


def test_an_older_sealed_pointer_put_back_is_found_against_the_log(ws):
    old = ws.store.read_text(CHAMPION_KEY)
    rid = candidate(ws)
    ws.registry.set_status(rid, "approved", "alice", "ok")
    assert ws.registry.promote(rid, "alice", "ok")
    ws.store.write_text(CHAMPION_KEY, old)  # a pointer memgov sealed, from before the last move
    assert ws.registry.champion() == "r0001", "its seal alone holds"
    problems = ws.registry.pointer_problems()
    assert problems and "put back from an older copy" in problems[0]
    with pytest.raises(RecordTampered, match="older copy"):
        ws.registry.verify_champion()
    proc = memgov(ws.home, "log", "verify")
    assert proc.returncode == 1 and "older copy" in flat(proc), flat(proc)


# -- the log's tail ------------------------------------------------------------------------------
def test_a_cut_tail_is_found_and_nothing_reads_the_cut_log(ws):
    events = _lines(ws)
    _write(ws, events[:-3], rechain=False)
    proc = memgov(ws.home, "log", "verify")
    assert proc.returncode == 1 and "cut from the end" in flat(proc), flat(proc)
    with pytest.raises(LogTampered, match="cut from the end"):
        ws.log.events()
    history = memgov(ws.home, "history")
    assert history.returncode == 1 and "cut from the end" in flat(history), flat(history)


def test_a_rechained_rewrite_is_found(ws):
    rid = candidate(ws)
    ws.log.append("system:gates", "gates.failed", rid, "retention 0.5 vs >= 0.88")
    events = _lines(ws)
    events[-1] = {**events[-1], "action": "gates.passed", "reason": "all gates passed"}
    _write(ws, events)
    proc = memgov(ws.home, "log", "verify")
    assert proc.returncode == 1 and "rewritten or re-chained" in flat(proc), flat(proc)


def test_an_appended_forged_approval_is_found(ws):
    events = _lines(ws)
    forged = {"seq": len(events) + 1, "time": events[-1]["time"], "actor": "alice",
              "action": "release.approval_recorded", "object": "r0001", "reason": "looks good", "run_id": None,
              "details": {"role": "ml-lead", "decision": "approve"}, "prev_hash": events[-1]["hash"]}
    forged["hash"] = event_hash(forged)
    _write(ws, [*events, forged], rechain=False)
    proc = memgov(ws.home, "log", "verify")
    assert proc.returncode == 1 and "appended after the newest witnessed event" in flat(proc), flat(proc)
    history = memgov(ws.home, "history")
    assert history.returncode == 1 and "alice" not in history.stdout


def test_a_policy_record_rewritten_with_an_appended_event_is_refused(ws):
    from pipelines.governance.policy_in_force import RECORD, _content_digest

    record = ws.store.read_json(RECORD)
    loose = {**record["policy"], "approval": {**record["policy"]["approval"], "forbid_self_approval": False}}
    ws.store.write_json(RECORD, {**record, "policy": loose, "sha256": _content_digest(loose)})
    events = _lines(ws)
    adopted = {"seq": len(events) + 1, "time": events[-1]["time"], "actor": "alice", "action": "policy.adopted",
               "object": record["label"], "reason": "relax", "run_id": None,
               "details": {"sha256": _content_digest(loose), "role": "governance", "previous": None},
               "prev_hash": events[-1]["hash"]}
    adopted["hash"] = event_hash(adopted)
    _write(ws, [*events, adopted], rechain=False)
    with pytest.raises(LogTampered, match="appended"):
        policy_in_force(ws)


def test_a_record_put_back_after_a_cut_is_found(ws):
    from pipelines.deployment.registry.registry import RECORDS

    rid = candidate(ws)
    before = ws.store.read_text(RECORDS + rid)
    n = len(_lines(ws))
    ws.registry.set_status(rid, "rejected", "alice", "regresses on retention")
    ws.store.write_text(RECORDS + rid, before)  # the sealed 'candidate' record, signed by memgov back then
    _write(ws, _lines(ws)[:n], rechain=False)  # and the rejection's events cut
    assert ws.registry.status(rid) == "candidate"
    proc = memgov(ws.home, "log", "verify")
    assert proc.returncode == 1 and "cut from the end" in flat(proc), flat(proc)
    bob_approves = memgov(ws.home, "approve", rid, "--key", key_file(ws.home, "alice")[0], "--role", "ml-lead",
                          "--reason", "looks fine now")
    assert bob_approves.returncode != 0 and "cut from the end" in flat(bob_approves), flat(bob_approves)


# -- replay ------------------------------------------------------------------------------------------
def test_one_signed_approval_filed_by_four_processes_at_once_is_accepted_once(ws, tmp_path):
    rid = candidate(ws, new_facts=LIMIT + 1)  # two approvers needed: the first approval promotes nothing
    signed = tmp_path / "approval.json"
    made = memgov(ws.home, "sign", "approve", rid, "--key", key_file(ws.home, "alice")[0], "--role", "ml-lead",
                  "--reason", "card reviewed", "--out", str(signed))
    assert made.returncode == 0, flat(made)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: memgov(ws.home, "approve", rid, "--signed", str(signed)), range(4)))
    accepted = [p for p in runs if p.returncode == 0]
    refused = [p for p in runs if p.returncode != 0]
    assert len(accepted) == 1, [flat(p) for p in runs]
    assert all("accepted once" in flat(p) for p in refused), [flat(p) for p in refused]
    assert [a["approver"] for a in ws.registry.get(rid).approvals] == ["alice"]


# -- rotating the secrets -------------------------------------------------------------------------------
def test_a_rotated_system_key_reseals_everything_and_the_old_one_seals_nothing(ws):
    from cryptography.hazmat.primitives import serialization

    from pipelines.deployment.registry.registry import RECORDS
    from pipelines.trust import keys

    rid = candidate(ws)
    ws.registry.set_status(rid, "rejected", "alice", "worse")
    old_pem = (ws.secrets_dir / "system.key").read_bytes()
    subject = ws.data.rows("admitted")[0]["subject_ids"][0]
    proc = memgov(ws.home, "keys", "rotate-system-key", "--by", admin_key(ws.home), "--reason", "annual rotation")
    assert proc.returncode == 0, flat(proc)
    assert (ws.secrets_dir / "system.key").read_bytes() != old_pem
    for args in (("log", "verify"), ("verify", "r0001"), ("verify", rid), ("keys", "list")):
        check = memgov(ws.home, *args)
        assert check.returncode == 0, (args, flat(check))
    fresh = Workspace.open(ws.home)
    assert fresh.registry.in_lineage(fresh.registry.get("r0001"), "subject_ids", subject), \
        "forgotten ids still match the lineage hashed before the rotation"
    # A record re-sealed with the retired key (as an insider holding an old backup of it would) is refused.
    old = serialization.load_pem_private_key(old_pem, password=None)
    record = fresh.store.read_json(RECORDS + rid)
    body = {k: v for k, v in record.items() if k != "seal"} | {"status": "retired"}
    fresh.store.write_json(RECORDS + rid, {**body, "seal": keys.sign(old, body)})
    assert any("not sealed by the deployment's system key" in p for p in fresh.registry.record_problems(rid))


def test_the_ui_refuses_to_serve_on_a_hand_edited_keyring(ws):
    import asyncio

    from memgov.webauth import GovernanceGate

    path = kr.keyring_path(ws.home)
    doc = yaml.safe_load(path.read_text())
    doc["ui"]["trusted_proxies"] = ["0.0.0.0"]  # believe anyone's identity header
    path.write_text(yaml.safe_dump(doc))
    sent: list[dict] = []

    async def inner(scope, receive, send):  # the Dagster app behind the gate: must never be reached
        raise AssertionError("a request went through on a tampered keyring")

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-forwarded-user", b"alice")],
             "client": ("0.0.0.0", 1), "query_string": b""}
    asyncio.run(GovernanceGate(inner, ws.home)(scope, receive, send))
    assert sent[0]["status"] == 503 and b"ui.trusted_proxies" in sent[1]["body"]


def test_the_loser_of_two_simultaneous_approvals_is_told_it_was_decided(ws, monkeypatch):
    """Both approvals passed their checks before either landed (the interleaving is forced here): the second is told
    the release was decided meanwhile, not "cannot go from 'champion' to 'approved'"."""
    from pipelines.deployment.registry.registry import Registry
    from pipelines.governance import approvals, promotion

    monkeypatch.setattr(promotion, "canary", lambda ws, policy, rid: (True, 1.0))
    rid = candidate(ws)
    keyholder(ws.home, "carol", "ml-lead")
    real_status = Registry.status
    approvals.decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "card reviewed")
    assert ws.registry.champion() == rid
    seen = iter(["candidate", "candidate"])  # carol's two checks ran before alice's promotion

    monkeypatch.setattr(Registry, "status", lambda self, r: next(seen, None) or real_status(self, r))
    monkeypatch.setattr(approvals, "refuse_if_stale", lambda ws, release: None)
    monkeypatch.setattr(promotion, "refuse_if_stale", lambda ws, release: None)
    with pytest.raises(approvals.ApprovalRefused, match="decided by another approval at the same moment"):
        approvals.decide_release(ws, POLICY, rid, "approve", "carol", "ml-lead", "card reviewed")


def test_grants_made_at_the_same_moment_are_all_kept_and_the_keyring_matches_the_log(ws):
    from pipelines.deployment.registry.anchors import registry_problems
    from pipelines.trust.grants import grant

    admin = admin_key(ws.home)
    people = [f"tester-{i}" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: grant(ws.home, ws.log, name, [], ["data-scientist"], admin, "onboarding"), people))
    ring = ws.keyring()
    assert all(ring.roles_of(name) == ["data-scientist"] for name in people)
    events = ws.log.events()
    assert kr.log_problems(ws.home, events) == [] and registry_problems(ws.registry, events) == []
