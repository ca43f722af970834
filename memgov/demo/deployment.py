"""The demo world as a client of the engine: a checkpoint and contract tables, then the same `init` a user runs.

The demo's sections of a policy (`world`, `base_model.tiny`) are read here and nowhere in the engine; the engine
sees a `save_pretrained` folder (with its training recipe) and JSONL tables in the data contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from memgov.demo.model import BaseModelConfig, ensure_base_model
from memgov.demo.world import World, fact_row, generate_world, write_inbox
from pipelines.deployment.workspace import Workspace
from policies import Policy

DATA_DIR = "demo-data"


class WorldConfig(BaseModel):
    """A policy's `world` section: which demo world to build."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    n_subjects: int = Field(120, ge=10, le=20000)


def demo_config(policy: Policy) -> tuple[WorldConfig, BaseModelConfig]:
    """The demo's own policy sections, validated here (the engine does not read them)."""
    try:
        world = WorldConfig(**(policy.world or {}))
        tiny = BaseModelConfig(**{**(policy.base_model.tiny or {}), "seed": world.seed, "n_subjects": world.n_subjects})
    except ValueError as exc:
        raise ValueError(f"policy {policy.version}: the demo's `world` / `base_model.tiny` sections: {exc}") from None
    return world, tiny


def world_of(policy: Policy) -> World:
    world, _ = demo_config(policy)
    return generate_world(world.seed, world.n_subjects)


def write_tables(world: World, folder: Path) -> Path:
    """The world's initial knowledge and evaluation tables as the contract's JSONL files (what `--data` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tables = {
        "facts": [fact_row(f) for f in world.facts],
        "documents": [{**d, "kind": "document", "source": "world-initial", "license": "internal", "pii": False}
                      for d in world.documents],
        # Text the base model was pretrained on and no update ever trains on: general utility is measured on it.
        "general": [{"id": f"general-{i:05d}", "kind": "general", "text": t, "subject_ids": [], "source": "world-general",
                     "license": "internal", "pii": False} for i, t in enumerate(world.general_text)],
        # Facts of the same kind that no model ever saw: the comparison for forgetting.
        "unseen": [fact_row(f, source="world-unseen", kind="unseen", prefix="unseen") for f in world.unseen_facts],
    }
    for name, rows in tables.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return folder


def demo_keys_dir(ws: Workspace) -> Path:
    """The demo's people's private keys: beside the home, never inside it."""
    return ws.home.with_name(ws.home.name + ".demo-keys")


def demo_key(ws: Workspace, person: str) -> tuple[str, str]:
    """A demo person's private key file (created on first use) and public key."""
    from pipelines.trust.keys import generate, load_private, public_text

    path = demo_keys_dir(ws) / f"{person}.key"
    public = public_text(load_private(path).public_key()) if path.exists() else generate(path)
    return str(path), public


def deploy_demo(ws: Workspace, policy: Policy, progress: bool = True, embedder=None) -> dict[str, Any]:
    """Build the tiny model, write the world's tables, `init` the deployment, drop the update batches in the inbox.

    Idempotent: a workspace that already holds a deployment is returned as it is."""
    from pipelines.governance.initialise import init_deployment, validate

    if ws.registry.list():
        return {"release_id": ws.registry.list()[0].release_id, "created": False}
    _, tiny = demo_config(policy)
    world = generate_world(tiny.seed, tiny.n_subjects)
    checkpoint = ensure_base_model(ws.models_cache, tiny, progress=progress)
    data = write_tables(world, ws.work_dir / DATA_DIR)
    info, rows = validate(policy, str(checkpoint), data)
    out = init_deployment(ws, policy, str(checkpoint), rows, info, embedder=embedder,
                          admins={"demo-admin": demo_key(ws, "demo-admin")[1]})
    batches = [p.name for p in write_inbox(world, ws.inbox)]
    return {**out, "created": True, "base_model": str(checkpoint), "data": str(data), "inbox": batches}


__all__ = ["WorldConfig", "demo_config", "deploy_demo", "fact_row", "world_of", "write_tables"]
