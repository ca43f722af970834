"""Release manifests anchor the change log: each records the log's head (sequence number and hash) when it was
registered. The chain alone cannot see a consistent rewrite of the whole file or a cut tail; a manifest, content-
addressed in the artifact store, still names the hash the log had then."""

from __future__ import annotations

from pipelines.deployment.registry.registry import Registry
from pipelines.state.ledger.changelog import ChangeLog


def anchor_problems(registry: Registry, log: ChangeLog) -> tuple[int, list[str]]:
    """How many anchors were checked, and each one the log no longer holds, naming the release."""
    hashes = {e["seq"]: e["hash"] for e in log.events()}
    last = max(hashes, default=0)
    checked, problems = 0, []
    for release in registry.list():
        anchor = release.log_head
        if not anchor:
            continue
        checked += 1
        seq, expected = int(anchor["seq"]), anchor["hash"]
        if seq > last:
            problems.append(f"release {release.release_id} was registered after event {seq}, but the log ends at "
                            f"{last}: events were cut from the end")
        elif hashes[seq] != expected:
            problems.append(f"release {release.release_id} was registered after event {seq} with hash "
                            f"{expected[:12]}, the log now has {hashes[seq][:12]} there: the log was rewritten")
    return checked, problems


def registry_problems(registry: Registry, events: list[dict]) -> list[str]:
    """The registry crossed with the log: every release has its creation event, every status record is the one its
    latest event recorded, and the champion pointer is the one its latest move recorded."""
    created = {e["object"] for e in events if e["action"] == "release.created"}
    problems = []
    for release_id in registry.release_ids():
        if release_id not in created:
            problems.append(f"release {release_id} has no release.created event in the log")
        problems += registry.record_problems(release_id, events)
    return problems + registry.pointer_problems(events)
