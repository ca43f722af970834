"""Which blobs something still names. Blobs are shared by content, so a blob may be deleted only when no table,
index snapshot, release or other document refers to it any more."""

from __future__ import annotations

import re

from pipelines.artifacts import index_snapshots
from pipelines.workspace import Workspace

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def live_blobs(ws: Workspace) -> set[str]:
    """Digests named by any document in the store, plus the files of every release's model and adapter folders."""
    live: set[str] = set(index_snapshots(ws).values())
    for key in ws.store.list_keys():
        text = ws.store.read_text(key) or ""
        live.update(_DIGEST.findall(text))
    for release in ws.registry.list():
        folders = [release.model, *(a.get("digest") for a in release.adapters if isinstance(a, dict))]
        live.add(release.manifest_digest)
        for digest in filter(None, folders):
            live.add(digest)
            if ws.store.has(digest):
                live.update(ws.store.blobs_of_dir(digest))
        if release.evaluation_card and ws.store.has(release.evaluation_card):
            live.update(ws.store.blobs_of_dir(release.evaluation_card, include_manifest=True))
    return live


def missing_blobs(ws: Workspace) -> list[str]:
    """Blobs a table, snapshot or release names that the store no longer has (must always be empty)."""
    named = set(index_snapshots(ws).values())
    named |= ws.data.live_digests()
    for release in ws.registry.list():
        named |= {release.model, release.manifest_digest}
    return sorted(d for d in named if not ws.store.has(d))
