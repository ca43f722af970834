"""The policy belongs to the deployment: adopted once, changed only by a signed and logged act of a role the policy
in force names; a command, a resource field or an edited record cannot switch it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support_keys import keyholder

from pipelines.deployment.workspace import Workspace
from pipelines.governance.approvals import ApprovalRefused, adopt_policy_signed, policy_subject
from pipelines.governance.policy_in_force import RECORD, PolicyNotInForce, adopt, policy_digest, policy_in_force
from pipelines.trust.decisions import SignatureRefused, sign_statement, statement
from policies import load_policy

DEFAULT, DEMO = load_policy("default"), load_policy("demo")


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "home")
    adopt(ws, DEFAULT, "system:init", "the policy this deployment was initialised with")
    return ws


def _signed(key: str, policy, role: str = "governance") -> dict:
    return sign_statement(key, statement("adopt_policy", policy_subject(policy), role, "tighter rules for launch"))


def memgov(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMGOV_HOME": str(home), "COLUMNS": "250"}
    env.pop("MEMGOV_POLICY", None)
    return subprocess.run([sys.executable, "-m", "memgov", *args], capture_output=True, text=True, env=env)


def test_the_adopted_policy_is_in_force_and_another_one_is_refused_with_the_way_to_change_it(ws):
    assert policy_digest(policy_in_force(ws)) == policy_digest(DEFAULT)
    assert policy_digest(policy_in_force(ws, "default")) == policy_digest(DEFAULT), "naming the same policy is fine"
    with pytest.raises(PolicyNotInForce, match=r"policy 'demo' .* is not in force.*memgov policy adopt demo"):
        policy_in_force(ws, "demo")


def test_an_edited_policy_file_is_not_in_force_until_it_is_adopted(ws, tmp_path):
    text = (Path("policies") / "default.yaml").read_text().replace("expiry_hours: 72", "expiry_hours: 9999")
    edited = tmp_path / "default.yaml"
    edited.write_text(text)
    with pytest.raises(PolicyNotInForce):
        policy_in_force(ws, str(edited))
    assert policy_in_force(ws).approval.expiry_hours == 72, "the deployment keeps the content it adopted"


def test_a_policy_record_edited_in_the_store_is_refused(ws):
    record = ws.store.read_json(RECORD)
    record["policy"]["approval"]["mode"] = "auto"  # switch off human approval, and make the record consistent
    lowered = load_policy("default").model_validate(record["policy"])
    record["sha256"] = policy_digest(lowered)
    ws.store.write_json(RECORD, record)
    with pytest.raises(PolicyNotInForce, match="not the policy last adopted in the change log"):
        policy_in_force(ws)


def test_a_governance_key_changes_the_policy_and_the_change_is_logged(ws):
    key = keyholder(ws.home, "gina", "governance")
    out = adopt_policy_signed(ws, DEFAULT, DEMO, _signed(key, DEMO))
    assert out["label"] == DEMO.label and out["previous"] == DEFAULT.label
    assert policy_digest(policy_in_force(ws)) == policy_digest(DEMO)
    event = ws.log.events()[-1]
    assert (event["action"], event["actor"], event["object"]) == ("policy.adopted", "gina", DEMO.label)
    assert event["details"]["previous"]["sha256"] == policy_digest(DEFAULT) and event["details"]["signed"]["key_id"]


def test_policy_changes_are_refused_from_other_roles_ungranted_roles_replays_and_other_content(ws, tmp_path):
    lead = keyholder(ws.home, "lee", "ml-lead")
    with pytest.raises(ApprovalRefused, match="approval.policy_roles"):
        adopt_policy_signed(ws, DEFAULT, DEMO, _signed(lead, DEMO, "ml-lead"))
    with pytest.raises(SignatureRefused, match="not granted"):
        adopt_policy_signed(ws, DEFAULT, DEMO, _signed(lead, DEMO, "governance"))
    gov = keyholder(ws.home, "gina", "governance")
    with pytest.raises(SignatureRefused, match="does not cover"):
        adopt_policy_signed(ws, DEFAULT, DEMO, _signed(gov, DEFAULT))  # signed for another policy's content
    envelope = _signed(gov, DEMO)
    adopt_policy_signed(ws, DEFAULT, DEMO, envelope)
    with pytest.raises(SignatureRefused, match="already used"):
        adopt_policy_signed(ws, DEMO, DEMO, envelope)
    assert [e["actor"] for e in ws.log.events() if e["action"] == "policy.adopted"] == ["system:init", "gina"]


def test_the_resource_cannot_pick_another_policy(ws, monkeypatch):
    from assets.resources import MemgovResource

    monkeypatch.setenv("MEMGOV_HOME", str(ws.home))
    monkeypatch.delenv("MEMGOV_POLICY", raising=False)
    assert policy_digest(MemgovResource().load_policy()) == policy_digest(DEFAULT)
    with pytest.raises(PolicyNotInForce):
        MemgovResource(policy="demo").load_policy()
    monkeypatch.setenv("MEMGOV_POLICY", "demo")
    with pytest.raises(PolicyNotInForce):
        MemgovResource().load_policy()


def test_the_cli_adopts_shows_and_refuses_a_policy_per_command(ws):
    key = keyholder(ws.home, "gina", "governance")
    refused = memgov(ws.home, "approve", "r0001", "--policy", "demo", "--key", key, "--role", "governance",
                     "--reason", "x")
    assert refused.returncode == 2 and "is not in force" in " ".join(refused.stdout.split())
    unsigned = memgov(ws.home, "policy", "adopt", "demo", "--role", "governance", "--reason", "x")
    assert unsigned.returncode == 2 and "unsigned adopt_policy is refused" in " ".join(unsigned.stdout.split())
    done = memgov(ws.home, "policy", "adopt", "demo", "--key", key, "--role", "governance", "--reason", "launch")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = " ".join(memgov(ws.home, "policy", "show").stdout.split())
    assert f"policy in force: {DEMO.label}" in shown and "gina" in shown and "system:init" in shown


def test_a_newer_memgov_with_a_new_policy_field_still_reads_the_adopted_record(ws):
    """The record is checked as stored: a field added later with a default must not break a deployment."""
    from pipelines.governance.policy_in_force import _content_digest

    record = ws.store.read_json(RECORD)
    del record["policy"]["approval"]["policy_roles"]  # as a version before the field existed adopted it
    record["sha256"] = _content_digest(record["policy"])
    ws.store.write_json(RECORD, record)
    ws.log.append("system:init", "policy.adopted", DEFAULT.label, details={"sha256": record["sha256"]})
    assert policy_in_force(ws).approval.policy_roles == ["governance"], "the new field takes its default"
    assert policy_digest(policy_in_force(ws, "default")) == policy_digest(DEFAULT)


def test_a_policy_change_signed_on_one_machine_is_filed_on_another(ws, tmp_path):
    key = keyholder(ws.home, "gina", "governance")
    out = tmp_path / "adopt.json"
    signed = memgov(ws.home, "sign", "adopt_policy", "demo", "--key", key, "--role", "governance", "--reason", "launch",
                    "--out", str(out))
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert memgov(ws.home, "policy", "adopt", "default", "--signed", str(out)).returncode == 2, "signed for demo"
    filed = memgov(ws.home, "policy", "adopt", "demo", "--signed", str(out))
    assert filed.returncode == 0, filed.stdout + filed.stderr
    assert policy_digest(policy_in_force(ws)) == policy_digest(DEMO)
