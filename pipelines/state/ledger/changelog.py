"""Append-only change log: JSON lines, each event hash-chained to the one before it.

Anyone can re-compute the chain (`verify`), so an edited, removed, inserted or reordered line is found and
located. A chain alone cannot notice a consistent rewrite or lines cut off the end; the mirror (one write-once
object per event, on S3 under COMPLIANCE Object Lock in its own bucket, see `mirror.py`) can, through
`verify_mirror`, which reads every version of every event object. The log is permanent, so callers put ids and
`redact`-ed hashes in it, never personal data in clear.

Where many machines write (run pods on Kubernetes), the mirror is the primary copy (`primary="mirror"`,
`MEMGOV_LOG_PRIMARY=mirror`): an append first pulls the events it lacks, then creates the next sequence number's
object with a conditional write; a writer that loses the race re-reads and tries the next number. The local file
is then a verified cache of the mirror, and a new pod starts from the mirror, not from sequence 1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.filelock import exclusive
from pipelines.state.store import ArtifactStore

from .mirror import LOCK_MODE, LogMirror, MirrorUnavailable, MirrorVersion, as_mirror
from .witness import LogTampered, Witness, end_problem, pending

GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "object", "reason", "run_id", "details", "prev_hash", "hash")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_MIRROR_KEY = re.compile(r"^changelog/(\d{8,})\.json$")
PRIMARIES = ("local", "mirror")
MAX_RACES = 200  # lost conditional writes before an append gives up (each loss means another writer progressed)


class LogRaceLost(RuntimeError):
    """An append lost the race for the next sequence number more often than MAX_RACES times in a row."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_hash(event: dict) -> str:
    """sha256 of the canonical JSON of the event without its own "hash" field."""
    return hashlib.sha256(_canonical({k: v for k, v in event.items() if k != "hash"})).hexdigest()


def redact(value: str, salt: str) -> str:
    """Keyed hash of a value (selector, name, e-mail): stable for matching, useless for reading it back."""
    if not salt:
        raise ValueError("redact needs a non-empty salt; use ChangeLog.salt (kept beside the log)")
    return "hmac-sha256:" + hmac.new(salt.encode(), value.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    n_events: int
    first_bad_line: int | None = None
    problem: str = ""
    problems: tuple[str, ...] = ()


class ChangeLog:
    def __init__(self, path: str | Path, mirror: ArtifactStore | LogMirror | None = None, primary: str = "local",
                 witness: Witness | None = None):
        if primary not in PRIMARIES:
            raise ValueError(f"primary {primary!r}: use 'local' (one writer) or 'mirror' (many writers)")
        self.path = Path(path)
        self.mirror = as_mirror(mirror)
        if primary == "mirror" and self.mirror is None:
            raise ValueError("MEMGOV_LOG_PRIMARY=mirror needs a mirror: an S3 artifact store or MEMGOV_LOG_MIRROR")
        self.primary = primary
        self.witness = witness if primary == "local" else None  # a mirror-primary log is anchored by the mirror
        self._checked: _Checked | None = None  # what the last chain check read
        self.races_lost = 0  # conditional writes another writer won (mirror-primary only)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._salt_path = self.path.with_name(self.path.name + ".salt")

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive(self._lock_path)

    @property
    def salt(self) -> str:
        """Secret salt for `redact`, created on first use next to the log (mode 600) and never logged."""
        if not self._salt_path.exists():
            tmp = self._salt_path.with_name(f"{self._salt_path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # link is atomic: the first creator wins, content complete
                os.link(tmp, self._salt_path)
            tmp.unlink()
        return self._salt_path.read_text().strip()

    def redact(self, value: str) -> str:
        return redact(value, self.salt)

    def _last_event(self) -> dict | None:
        """The final line, read from the end so appends stay cheap however long the log grows."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            pos, tail = end, b""
            while pos > 0 and tail.count(b"\n") < 2:
                step = min(4096, pos)
                pos -= step
                fh.seek(pos)
                tail = fh.read(step) + tail
        if not tail.endswith(b"\n"):
            raise RuntimeError(f"{self.path} ends with an incomplete line; run verify() and repair before appending")
        try:
            return json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        except ValueError:
            raise RuntimeError(f"{self.path} ends with an unreadable line; run verify() before appending") from None

    def append(
        self,
        actor: str,
        action: str,
        obj: str,
        reason: str = "",
        run_id: str | None = None,
        details: dict | None = None,
    ) -> dict:
        """Add one event; the file lock makes concurrent writers queue instead of interleaving."""
        if not isinstance(actor, str) or not actor.strip():
            raise ValueError("actor is empty; pass who made the change, e.g. 'alice' or 'system:scheduler'")
        if not isinstance(action, str) or not _ACTION.match(action):
            raise ValueError(f"action {action!r} is malformed; use dotted lowercase words like 'release.promoted'")
        if not isinstance(obj, str):
            raise ValueError("obj must be a string id, e.g. a release id or request id")
        details = dict(details or {})
        try:
            _canonical(details)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"details must be JSON-serialisable ({exc}); convert values to str/int/float/list/dict"
            ) from exc
        with self._locked():
            if self.primary == "mirror":
                return self._append_to_mirror(actor, action, obj, reason, run_id, details)
            event = self._next_event(self._settled_last(), actor, action, obj, reason, run_id, details)
            if self.witness is not None:
                self.witness.write(event, committed=False)  # first: a crash before the line leaves it to complete
            self._write_local(event)
            if self.witness is not None:
                self.witness.write(event, committed=True)
            if self.mirror is not None:
                self._mirror_one(event)
        return event

    def _settled_last(self) -> dict | None:
        """The last event, after finishing an append a crash interrupted; LogTampered when the end is not the
        witnessed event (called under the lock)."""
        last = self._last_event()
        if self.witness is None:
            return last
        witnessed = self.witness.read()
        if pending(witnessed, last):
            event = {k: v for k, v in witnessed.items() if k != "committed"}
            self._write_local(event)
            self.witness.write(event, committed=True)
            return event
        problem = end_problem(witnessed, last, self._hash_at)
        if problem:
            raise LogTampered(f"{self.path}: {problem}; nothing was appended (run `memgov log verify`)")
        return last

    def complete(self) -> bool:
        """Finish an append a crash interrupted (the witness one event ahead); True when a line was written."""
        if self.witness is None:
            return False
        with self._locked():
            before = self._last_event()
            after = self._settled_last()
        return after is not None and (before is None or after["seq"] != before["seq"])

    def _hash_at(self, seq: int) -> str | None:
        lines = self._raw_lines()
        if not 0 < seq <= len(lines):
            return None
        try:
            return json.loads(lines[seq - 1]).get("hash")
        except (ValueError, AttributeError):
            return None

    def tail_problem(self) -> str | None:
        """Why the log's end is not the event the witness holds (None where there is no witness or it is)."""
        if self.witness is None:
            return None
        try:
            last = self._last_event()
        except RuntimeError as exc:
            return str(exc)
        return end_problem(self.witness.read(), last, self._hash_at)

    @staticmethod
    def _next_event(last: dict | None, actor: str, action: str, obj: str, reason: str, run_id: str | None,
                    details: dict) -> dict:
        event = {
            "seq": 1 if last is None else last["seq"] + 1,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "object": obj,
            "reason": reason,
            "run_id": run_id,
            "details": details,
            "prev_hash": GENESIS if last is None else last["hash"],
        }
        event["hash"] = event_hash(event)
        return event

    def _write_local(self, *events: dict) -> None:
        with open(self.path, "ab") as fh:
            fh.write(b"".join(_canonical(e) + b"\n" for e in events))
            fh.flush()
            os.fsync(fh.fileno())

    def _append_to_mirror(self, actor: str, action: str, obj: str, reason: str, run_id: str | None,
                          details: dict) -> dict:
        """Claim the next sequence number in the mirror; a lost race means another writer got it: pull, retry
        after a short random pause (so one fast writer cannot starve the others)."""
        for lost in range(MAX_RACES):
            last = self._pull()
            event = self._next_event(last, actor, action, obj, reason, run_id, details)
            if self.mirror.create(self._mirror_key(event["seq"]), _canonical(event).decode("utf-8")):
                self._write_local(event)
                return event
            self.races_lost += 1
            time.sleep(random.uniform(0, 0.005 * min(lost + 1, 20)))
        raise LogRaceLost(f"{MAX_RACES} other writers took the next sequence number first; nothing was written "
                          "(is a writer looping?)")

    def _pull(self) -> dict | None:
        """Copy the mirror's events beyond the local cache into it, each checked to chain on; returns the last."""
        last = self._last_event()
        after = self._mirror_key(last["seq"]) if last else "changelog/"
        new = []
        for key in self.mirror.keys_after("changelog/", after):
            if not _MIRROR_KEY.match(key):
                continue
            text = self.mirror.read(key)
            event = json.loads(text) if text else None
            expected = 1 if last is None else last["seq"] + 1
            if event is None or _check_line(text.encode("utf-8"), expected, GENESIS if last is None
                                            else last["hash"]):
                if new:  # what did chain on is kept; the cache never holds what does not
                    self._write_local(*new)
                raise RuntimeError(f"mirror {self.mirror.uri}/{key} does not chain onto event {expected - 1} of "
                                   f"the local log; run `memgov log verify` (the mirror or the cache was altered)")
            new.append(event)
            last = event
        if new:
            self._write_local(*new)
        return last

    def refresh(self) -> int:
        """Bring the local cache up to the mirror (mirror-primary logs only); returns how many events came in."""
        if self.primary != "mirror":
            return 0
        with self._locked():
            before = (self._last_event() or {"seq": 0})["seq"]
            return (self._pull() or {"seq": 0})["seq"] - before

    def _mirror_key(self, seq: int) -> str:
        return f"changelog/{seq:08d}.json"

    def _mirror_one(self, event: dict) -> None:
        """Write-once: the object is created only if absent; an existing one must hold this very event."""
        text = _canonical(event).decode("utf-8")
        key = self._mirror_key(event["seq"])
        try:
            if self.mirror.create(key, text) or self.mirror.read(key) == text:
                return
        except MirrorUnavailable as exc:
            raise MirrorUnavailable(f"event {event['seq']} is in the local log but not in the mirror: {exc}; "
                                    "once the mirror is back, ChangeLog.sync_mirror() copies what it lacks") from exc
        raise RuntimeError(f"mirror {self.mirror.uri}/{key} holds a different event than the local log")

    def sync_mirror(self) -> int:
        """Copy events the mirror lacks (e.g. after the mirror was unreachable); returns how many were written."""
        if self.mirror is None:
            raise ValueError("this change log has no mirror; construct it with mirror=<ArtifactStore or LogMirror>")
        have = set(self.mirror.keys("changelog/"))
        missing = [e for e in self.events() if self._mirror_key(e["seq"]) not in have]
        for event in missing:
            self._mirror_one(event)
        return len(missing)

    def head(self) -> dict | None:
        """The last event's sequence number and hash: what a release manifest anchors."""
        self.refresh()
        last = self._last_event()
        return {"seq": last["seq"], "hash": last["hash"]} if last else None

    def events(self) -> list[dict]:
        """Every event. With a witness the chain and its end are checked first (once per version of the file), so
        what callers read (the policy in force, record digests, approvals) is the log memgov wrote, or LogTampered."""
        self.refresh()
        if not self.path.exists():
            if self.witness is not None and self.witness.read() is not None:
                raise LogTampered(f"{self.path} is missing but the witness kept with the secrets holds events")
            return []
        if self.witness is None:
            with open(self.path, encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        st = self.path.stat()
        ident = (st.st_ino, st.st_size, st.st_mtime_ns, self.witness.path.stat().st_mtime_ns
                 if self.witness.path.exists() else 0)
        if self._checked is None or self._checked.ident != ident:
            raw = self.path.read_bytes()
            events = self._grown(raw)
            if events is None:
                result = self.verify()
                if not result.ok:
                    raise LogTampered(f"{self.path}: {result.problem}; run `memgov log verify`")
                events = [json.loads(line) for line in raw.split(b"\n") if line.strip()]
            elif (problem := self.tail_problem()) is not None:
                raise LogTampered(f"{self.path}: {problem}; run `memgov log verify`")
            self._checked = _Checked(ident, events, len(raw), hashlib.sha256(raw).digest())
        return list(self._checked.events)

    def _grown(self, raw: bytes) -> list[dict] | None:
        """The events of a log that only grew since the last check: the bytes checked then are unchanged (their
        SHA-256 matches) and each new line chains on; None where a full check is needed. Keeps a long-running
        process (the UI, a cycle reading the log between its own appends) from re-hashing every event each time."""
        seen = self._checked
        if seen is None or len(raw) <= seen.size or not raw.endswith(b"\n"):
            return None
        if hashlib.sha256(raw[: seen.size]).digest() != seen.prefix:
            return None
        events, prev = list(seen.events), seen.events[-1]["hash"] if seen.events else GENESIS
        for i, line in enumerate((x for x in raw[seen.size :].split(b"\n") if x), start=len(events) + 1):
            if _check_line(line, i, prev):
                return None  # the full check names the problem
            event = json.loads(line)
            events.append(event)
            prev = event["hash"]
        return events

    def verify(self) -> VerifyResult:
        """Re-compute the chain; report the first line (1-based) where it breaks."""
        try:
            self.refresh()
        except RuntimeError as exc:  # the mirror's next event does not chain on, or the mirror is unreachable
            return VerifyResult(False, 0, None, str(exc))
        if not self.path.exists():
            return VerifyResult(True, 0)
        prev, n = GENESIS, 0
        with open(self.path, "rb") as fh:
            raw = fh.read()
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for i, line in enumerate(lines, start=1):
            problem = _check_line(line, i, prev)
            if problem:
                return VerifyResult(False, n, i, f"line {i}: {problem}")
            event = json.loads(line)
            prev, n = event["hash"], n + 1
        if raw and not raw.endswith(b"\n"):
            return VerifyResult(False, n - 1, len(lines), f"line {len(lines)}: incomplete (no newline; truncated?)")
        problem = self.tail_problem()
        if problem:
            return VerifyResult(False, n, n, problem)
        return VerifyResult(True, n)

    def verify_mirror(self) -> VerifyResult:
        """Compare every local line with every mirror version of its event; finds what the chain alone cannot."""
        problems = self.mirror_problems()
        n = len(self._raw_lines())
        if not problems:
            return VerifyResult(True, n)
        first = problems[0][0]
        return VerifyResult(False, n, first, problems[0][1], tuple(text for _, text in problems))

    def mirror_problems(self) -> list[tuple[int, str]]:
        """(sequence number, what is wrong) for each event where the local log and the mirror disagree."""
        if self.mirror is None:
            raise ValueError("this change log has no mirror; construct it with mirror=<ArtifactStore or LogMirror>")
        lines = self._raw_lines()
        by_seq = _versions_by_seq(self.mirror.versions("changelog/"))
        problems = []
        for seq, line in enumerate(lines, start=1):
            problems += [(seq, p) for p in _event_problems(seq, _normal(line), by_seq.get(seq, []))]
        extra = sorted(seq for seq in by_seq if seq > len(lines))
        if extra:
            span = f"event {extra[0]}" if len(extra) == 1 else f"events {extra[0]} to {extra[-1]}"
            problems.append((extra[0], f"{span} in the mirror but not in the local log, which ends at {len(lines)} "
                                       "(lines cut from the end or removed)"))
        return problems

    def _raw_lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_bytes().split(b"\n") if line.strip()]


@dataclass(frozen=True)
class _Checked:
    """The log as its last chain check read it: file identity, events, length and SHA-256 of the bytes checked."""

    ident: tuple
    events: list[dict]
    size: int
    prefix: bytes


def _normal(text: bytes | str) -> str:
    """Canonical JSON when the text parses, so a re-serialised but identical event still compares equal."""
    try:
        return _canonical(json.loads(text)).decode("utf-8")
    except ValueError:
        return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _versions_by_seq(versions: dict[str, list[MirrorVersion]]) -> dict[int, list[MirrorVersion]]:
    out = {}
    for key, found in versions.items():
        match = _MIRROR_KEY.match(key)
        if match:
            out[int(match.group(1))] = found
    return out


def _event_problems(seq: int, local: str, versions: list[MirrorVersion]) -> list[str]:
    """One event's findings: absent, more than one version or a delete marker, content differs, not locked."""
    if not versions:
        return [f"event {seq}: not in the mirror (a line inserted locally, or written while the mirror was down)"]
    bodies = [v for v in versions if v.body is not None]
    if not bodies:
        return [f"event {seq}: only delete markers in the mirror, no version holds it (deleted in the mirror)"]
    problems = []
    if len(versions) > 1:
        problems.append(f"event {seq}: the mirror holds {len(bodies)} versions and {len(versions) - len(bodies)} "
                        "delete markers of it where one version is written (overwritten or deleted in the mirror)")
    differing = [v.version_id for v in bodies if _normal(v.body) != local]
    if differing:
        which = "the mirror" if len(bodies) == 1 else f"mirror version(s) {', '.join(differing)}"
        problems.append(f"event {seq}: the local line differs from {which} (edited, moved, inserted or re-chained)")
    unlocked = [v.version_id for v in bodies if v.locked is False]
    if unlocked:
        problems.append(f"event {seq}: mirror version(s) {', '.join(unlocked)} not under {LOCK_MODE} retention")
    return problems


def _check_line(line: bytes, i: int, prev: str) -> str:
    try:
        event = json.loads(line)
    except ValueError:
        return "not valid JSON (truncated or corrupted)"
    if not isinstance(event, dict) or set(event) != set(FIELDS):
        return f"fields differ from {list(FIELDS)}"
    if event["seq"] != i:
        return f"seq is {event['seq']}, expected {i} (a line was removed, inserted or moved)"
    if event["prev_hash"] != prev:
        return "prev_hash does not match the previous event's hash (a line was removed, inserted or moved)"
    if event["hash"] != event_hash(event):
        return "hash does not match the event's content (the line was edited)"
    return ""
