"""Weights of tainted releases: deleted once nothing in service needs them, or kept under a named legal hold.

A tainted release was trained on data a forget request removed, so its model folder and the adapters it introduced
may hold that data, and no one may serve it again (rollback to it is refused). Its weights are deleted: every file
blob, then the folder's manifest, then the local model-cache copy. Kept instead:
- the champion's, while it serves: a release that honours the request replaces it, and promotion and rollback run
  this again, so its weights go then;
- any blob something live still names (a file shared by content with a kept folder, the base checkpoint named by
  `deployment.json`, a table, an index snapshot): collection is reference-aware like every other;
- the weights of a release the policy names under a legal hold (`retention.legal_holds`), and object versions the
  store cannot delete (S3 Object Lock): both recorded with the hold's name.

The manifest, status record, card and attestation stay: they are the audit trail (they hold digests and counts, no
data), and `memgov verify` accepts a tainted release's missing weights. Every request that tainted a release gets the
outcome in its evidence (`weights`), and the change log records it.
"""

from __future__ import annotations

import datetime as dt
import shutil
from typing import Any

from pipelines.deployment.workspace import Workspace
from pipelines.forget.refs import live_blobs
from policies import Policy

ACTOR = "system:forget"


def legal_holds(policy: Policy | None) -> dict[str, str]:
    """Release id -> the name of the legal hold (the policy's `retention.legal_holds`) that keeps its weights."""
    out: dict[str, str] = {}
    for hold in policy.retention.legal_holds if policy is not None else []:
        for rid in hold.releases:
            out.setdefault(rid, hold.name)
    return out


def _adapter_digests(release) -> list[str]:
    return [a["digest"] for a in release.adapters if isinstance(a, dict) and isinstance(a.get("digest"), str)]


def adapter_origins(releases: list) -> dict[str, str]:
    """Adapter folder digest -> the release that introduced it. Later releases inherit their parent's adapters as
    provenance; the adapter's training data is the introducing release's, so its taint decides the adapter's."""
    origin: dict[str, str] = {}
    for release in sorted(releases, key=lambda r: int(r.release_id[1:])):
        for digest in _adapter_digests(release):
            origin.setdefault(digest, release.release_id)
    return origin


def owners(releases: list) -> dict[str, set[str]]:
    """Weight folder digest -> the releases whose weights it is (a model folder its release's, an intermediate
    its release's, an adapter its introducer's)."""
    origin = adapter_origins(releases)
    out: dict[str, set[str]] = {}
    for release in releases:
        for folder in [release.model, *release.intermediates]:
            out.setdefault(folder, set()).add(release.release_id)
        for digest in _adapter_digests(release):
            out.setdefault(digest, set()).add(origin[digest])
    return out


def _cache_copy(ws: Workspace, digest: str) -> list[str]:
    """Remove the local model-cache copy of a folder (pipelines.deployment.artifacts.model_path); returns what went."""
    gone = []
    base = ws.home / "cache" / "models" / digest.replace(":", "_")
    for path in (base, base.with_name(base.name + ".partial")):
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            gone.append(str(path.relative_to(ws.home)))
    return gone


def sweep_model_cache(ws: Workspace) -> list[str]:
    """Cached copies of model folders the store no longer holds (deleted weights) are removed too."""
    root = ws.home / "cache" / "models"
    gone: list[str] = []
    if not root.is_dir():
        return gone
    for path in sorted(root.iterdir()):
        name = path.name.removesuffix(".partial")
        if not name.startswith("sha256_"):
            continue
        digest = name.replace("_", ":", 1)
        try:
            held = ws.store.has(digest)
        except ValueError:  # not a digest after all: not ours to judge
            continue
        if not held:
            gone += _cache_copy(ws, digest)
    return gone


def _delete_folder(ws: Workspace, folder: str, live: set[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Files first, the folder's manifest last, so a crash part-way leaves the manifest to resume from."""
    try:
        files = ws.store.blobs_of_dir(folder)
    except ValueError:  # a single blob rather than a folder
        files = []
    deleted: list[str] = []
    locked: list[dict[str, Any]] = []
    for digest in [*(f for f in files if f not in live), folder]:
        report = ws.store.delete_blob(digest)
        if report.deleted:
            deleted.append(digest)
        locked += [{"blob": digest, **h} for h in report.legal_hold]
    return deleted, locked


def _tainting_requests(release) -> list[str]:
    return sorted({t["request_id"] for t in release.taint if isinstance(t, dict) and t.get("request_id")})


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("release", "outcome", "hold", "folder"))


def _recorded(ws: Workspace, release, entry: dict[str, Any]) -> bool:
    """Whether every request that tainted the release already has this outcome in its evidence."""
    for request_id in _tainting_requests(release):
        try:
            found = (ws.requests.get(request_id).evidence or {}).get("weights") or []
        except KeyError:
            continue
        if not any(_same(e, entry) for e in found):
            return False
    return True


def _record(ws: Workspace, release, entry: dict[str, Any]) -> None:
    """The outcome goes into the evidence of every request that tainted the release (once per outcome)."""
    for request_id in _tainting_requests(release):
        def add(_state: str, evidence: dict[str, Any]) -> dict[str, Any]:
            found = evidence.get("weights") or []
            earlier = [b for e in found if _same(e, entry) for b in e.get("blobs") or []]
            merged = {**entry, **({"blobs": sorted({*earlier, *entry["blobs"]})} if "blobs" in entry else {})}
            return {**evidence, "weights": [*(e for e in found if not _same(e, entry)), merged]}

        try:
            ws.requests.update_evidence(request_id, add)
        except KeyError:  # a request store that no longer knows it (restored from elsewhere): the log still says
            continue


def release_tainted_weights(ws: Workspace, policy: Policy | None = None, when: str = "scrub",
                            run_id: str | None = None) -> dict[str, Any]:
    """Delete the weights of every tainted release that no longer serves (idempotent: what is gone stays gone,
    and a run stopped part-way is finished by the next). Returns, per release, what was deleted or kept and why."""
    releases = ws.registry.list()
    by_id = {r.release_id: r for r in releases}
    champion = ws.registry.champion()
    holds = legal_holds(policy)
    doomed = {r.release_id for r in releases if r.status == "tainted" and r.release_id != champion}
    folders = {f: who for f, who in owners(releases).items() if who and who <= doomed}
    held = {f: who & set(holds) for f, who in folders.items() if who & set(holds)}
    drop = set(folders) - set(held)
    serving = [champion] if champion in by_id and by_id[champion].status == "tainted" else []
    result: dict[str, Any] = {"deleted": {}, "held": {}, "still_named": {}, "object_lock": [], "cache_removed": [],
                              "serving": serving}  # a tainted champion's weights go when it is replaced
    pending = [f for f in sorted(drop) if ws.store.has(f)]
    live = live_blobs(ws, spare=drop) if pending else set()
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for folder in pending:
        first = min(folders[folder], key=lambda r: int(r[1:]))
        if folder in live:  # e.g. the base checkpoint that deployment.json names
            result["still_named"].setdefault(first, []).append(folder)
            continue
        deleted, locked = _delete_folder(ws, folder, live)
        result["deleted"].setdefault(first, []).extend(deleted)
        result["object_lock"] += locked
        result["cache_removed"] += _cache_copy(ws, folder)
        for owner in sorted(folders[folder]):
            entry = {"release": owner, "outcome": "deleted", "hold": None, "folder": folder, "blobs": deleted,
                     "object_lock": locked, "when": when, "time": now}
            if not deleted and _recorded(ws, by_id[owner], entry):
                continue  # only locked versions left, already recorded: nothing new to say
            _record(ws, by_id[owner], entry)
            ws.log.append(ACTOR, "release.weights_deleted", owner, run_id=run_id,
                          reason=f"tainted: {len(deleted)} blob(s) of folder {folder[:19]} deleted ({when})"
                          + (f"; {len(locked)} object version(s) kept under Object Lock" if locked else ""),
                          details={"folder": folder, "blobs": len(deleted), "object_lock": locked})
    for folder, who in sorted(held.items()):
        result["cache_removed"] += _cache_copy(ws, folder)  # the hold keeps the store's copy, not a convenience one
        if not ws.store.has(folder):
            continue
        for owner in sorted(who):
            name = holds[owner]
            result["held"].setdefault(owner, []).append({"folder": folder, "hold": name})
            entry = {"release": owner, "outcome": "held", "hold": name, "folder": folder, "when": when, "time": now}
            if _recorded(ws, by_id[owner], entry):
                continue
            _record(ws, by_id[owner], entry)
            ws.log.append(ACTOR, "release.weights_held", owner, run_id=run_id,
                          reason=f"tainted; weights kept under legal hold '{name}' (policy retention.legal_holds)",
                          details={"folder": folder, "hold": name})
    result["cache_removed"] += sweep_model_cache(ws)
    return result


def release_after_move(ws: Workspace, policy: Policy | None, when: str, run_id: str | None = None) -> dict[str, Any] | None:
    """After the champion moved: the release it left may be tainted, and its weights can go now. A failure here
    must not undo the move; it is logged, and the next scrub or cycle start finishes the job."""
    try:
        return release_tainted_weights(ws, policy, when=when, run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - recorded and retried, never silently dropped
        ws.log.append(ACTOR, "release.weights_pending", ws.registry.champion() or "-", run_id=run_id,
                      reason=f"deleting tainted weights after {when} failed ({type(exc).__name__}: {exc}); "
                      "the next scrub or cycle start retries")
        return None


def tainted_weights_left(ws: Workspace, policy: Policy | None = None) -> bool:
    """True when a tainted release that no longer serves, under no legal hold, still has its model folder in the
    store (the base checkpoint that deployment.json names stays, so it does not count)."""
    champion, holds = ws.registry.champion(), legal_holds(policy)
    base = ws.deployment().get("model")
    return any(r.status == "tainted" and r.release_id != champion and r.release_id not in holds
               and r.model != base and ws.store.has(r.model) for r in ws.registry.list())


__all__ = ["adapter_origins", "legal_holds", "owners", "release_after_move", "release_tainted_weights",
           "sweep_model_cache", "tainted_weights_left"]
