"""People with keys: a private key file outside the deployment's home, granted roles in its keyring."""

from __future__ import annotations

from pathlib import Path

from pipelines.deployment.workspace import Workspace
from pipelines.trust import keyring
from pipelines.trust.grants import grant, pin_admins
from pipelines.trust.keys import generate, load_private, public_text

ADMIN = "keyring-admin"


def key_file(home: Path, name: str) -> tuple[str, str]:
    """`name`'s private key file beside (never inside) the home, created on first use, and its public key."""
    path = Path(home).parent / f"keys-of-{Path(home).name}" / f"{name}.key"
    public = public_text(load_private(path).public_key()) if path.exists() else generate(path)
    return str(path), public


def admin_key(home: Path) -> str:
    """The keyring administrator's key file (the demo's own where the home is the demo's); pinned as the keyring's
    root of trust on first use."""
    demo = Path(home).with_name(Path(home).name + ".demo-keys") / "demo-admin.key"
    if demo.exists():
        return str(demo)
    path, public = key_file(home, ADMIN)
    ws = Workspace.open(home)
    if not keyring.load(ws.home).admins:
        pin_admins(ws.home, ws.log, {ADMIN: public})
    return path


def keyholder(home: Path, name: str, *roles: str) -> str:
    """The path of `name`'s key (created on first use) after granting it `roles` in the keyring of `home`."""
    path, public = key_file(home, name)
    ws = Workspace.open(home)
    grant(ws.home, ws.log, name, [public], list(roles), admin_key(home), "test setup")
    return path


def adopt_policy(home: Path, policy: str | Path, by: str = "policy-admin") -> str:
    """Make `policy` the deployment's as an operator would (`memgov policy adopt`, signed by a governance key);
    returns the label in force. Adopting the policy already in force changes nothing."""
    from pipelines.governance.approvals import adopt_policy_signed, policy_subject
    from pipelines.governance.policy_in_force import policy_digest, policy_in_force
    from pipelines.trust.decisions import sign_statement, statement
    from policies import load_policy

    ws = Workspace.open(home)
    current, new = policy_in_force(ws), load_policy(policy)
    if policy_digest(current) != policy_digest(new):
        key = keyholder(home, by, "governance")
        adopt_policy_signed(ws, current, new, sign_statement(
            key, statement("adopt_policy", policy_subject(new), "governance", "the policy these tests run under")))
    return new.label
