"""Policies: the shipped files validate, and every kind of mistake names the file, the key and the fix."""

from pathlib import Path

import pytest
import yaml

from policies import PolicyError, load_policy, merge_overrides
from policies.schema import POLICY_DIR


@pytest.mark.parametrize("name", ["default", "demo"])
def test_shipped_policies_load(name):
    policy = load_policy(name)
    assert policy.gates, "a policy without gates would promote anything"
    assert len(policy.fingerprint()) == 12


def test_default_needs_a_human_and_demo_approves_as_policy_demo():
    assert load_policy("default").approval.mode == "human"
    demo = load_policy("demo")
    assert demo.approval.mode == "auto" and demo.approval.auto_approver == "policy:demo"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((POLICY_DIR / "default.yaml").read_text())
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, lambda r: r.__setitem__("gatez", []))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value) and "'gatez' is not allowed" in str(err.value)


def test_nested_bad_value_names_the_path(tmp_path):
    path = _write(tmp_path, lambda r: r["approval"].__setitem__("mode", "sometimes"))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert "approval.mode" in str(err.value) and "human" in str(err.value)


def test_unknown_method_lists_the_available_ones(tmp_path):
    path = _write(tmp_path, lambda r: r["update"].__setitem__("method", "qlora9000"))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert "qlora9000" in str(err.value) and "lora" in str(err.value)


def test_bad_method_parameter_is_named(tmp_path):
    path = _write(tmp_path, lambda r: r["update"]["params"].__setitem__("learnin_rate", 0.1))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert "learnin_rate" in str(err.value)


def test_unknown_gate_metric_is_refused(tmp_path):
    path = _write(tmp_path, lambda r: r["gates"].append({"metric": "vibes", "min": 1}))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert "vibes" in str(err.value)


def test_not_yaml_and_missing_policy(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("gates: [unclosed")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="default"):
        load_policy("no-such-policy")


def test_batch_overrides_are_validated_and_change_the_fingerprint():
    base = load_policy("demo")
    merged = merge_overrides(base, {"update": {"params": {"learning_rate": 0.05}}}, "inbox/b.policy.json")
    assert merged.update.params["learning_rate"] == 0.05
    assert merged.fingerprint() != base.fingerprint()
    with pytest.raises(PolicyError, match="b.policy.json"):
        merge_overrides(base, {"approval": {"mode": 3}}, "inbox/b.policy.json")


def test_a_legal_hold_needs_a_name_releases_and_a_reason():
    base = load_policy("default")
    held = merge_overrides(base, {"retention": {"legal_holds": [
        {"name": "litigation-117", "releases": ["r0003"], "reason": "case 117"}]}}, "hold.yaml")
    assert held.retention.legal_holds[0].name == "litigation-117"
    for bad in ({"name": "", "releases": ["r0003"], "reason": "x"}, {"name": "h", "releases": [], "reason": "x"},
                {"name": "h", "releases": ["r0003"]}):
        with pytest.raises(PolicyError, match="legal_holds"):
            merge_overrides(base, {"retention": {"legal_holds": [bad]}}, "hold.yaml")
