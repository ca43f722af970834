"""People with keys: a private key file outside the deployment's home, granted roles in its keyring."""

from __future__ import annotations

from pathlib import Path

from pipelines.trust.grants import grant
from pipelines.trust.keys import generate, load_private, public_text
from pipelines.workspace import Workspace


def keyholder(home: Path, name: str, *roles: str) -> str:
    """The path of `name`'s key (created on first use) after granting it `roles` in the keyring of `home`."""
    path = Path(home).parent / f"keys-of-{Path(home).name}" / f"{name}.key"
    public = public_text(load_private(path).public_key()) if path.exists() else generate(path)
    ws = Workspace.open(home)
    grant(ws.home, ws.log, name, [public], list(roles), "keyring-admin", "test setup")
    return str(path)
