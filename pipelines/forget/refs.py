"""Which blobs something still names. Blobs are shared by content, so a blob may be deleted only when no table,
index snapshot, release or other document refers to it any more."""

from __future__ import annotations

import re
from collections.abc import Collection

from pipelines.deployment.artifacts import index_snapshots
from pipelines.deployment.workspace import Workspace

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def live_blobs(ws: Workspace, spare: Collection[str] = ()) -> set[str]:
    """Digests named by any document in the store, plus the files of every release's model and adapter folders.

    Folders in `spare` (the weights of tainted releases about to be deleted) do not count as named by their
    releases; a document that names one (deployment.json names the base checkpoint) still keeps it."""
    spare = set(spare)
    live: set[str] = set(index_snapshots(ws).values())
    for key in ws.store.list_keys():
        text = ws.store.read_text(key) or ""
        live.update(_DIGEST.findall(text))
    for release in ws.registry.list():
        folders = [release.model, *(a.get("digest") for a in release.adapters if isinstance(a, dict))]
        live.add(release.manifest_digest)
        for digest in filter(None, folders):
            if digest in spare:
                continue
            live.add(digest)
            if ws.store.has(digest):
                live.update(ws.store.blobs_of_dir(digest))
        if release.evaluation_card and ws.store.has(release.evaluation_card):
            live.update(ws.store.blobs_of_dir(release.evaluation_card, include_manifest=True))
    for digest in spare & live:  # named by a document after all: its files stay with it
        if ws.store.has(digest):
            live.update(ws.store.blobs_of_dir(digest))
    return live


def missing_blobs(ws: Workspace) -> list[str]:
    """Blobs a table, snapshot or release names that the store no longer has (must always be empty). The weights
    of a tainted release that no longer serves are deleted on purpose (pipelines.forget.weights)."""
    named = set(index_snapshots(ws).values())
    named |= ws.data.live_digests()
    champion = ws.registry.champion()
    for release in ws.registry.list():
        named.add(release.manifest_digest)
        if release.status != "tainted" or release.release_id == champion:
            named.add(release.model)
    return sorted(d for d in named if not ws.store.has(d))
