"""Append-only change log: JSON lines, each event hash-chained to the one before it.

Anyone can re-compute the chain (`verify`), so an edited, removed, inserted or reordered line is found and
located. A chain alone cannot notice lines cut off the end; the optional mirror (one write-once object per
event, on S3 with Object Lock in production) can, through `verify_mirror`. The log is permanent, so callers
put ids and `redact`-ed hashes in it, never personal data in clear.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import ArtifactStore

GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "object", "reason", "run_id", "details", "prev_hash", "hash")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


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


class ChangeLog:
    def __init__(self, path: str | Path, mirror: ArtifactStore | None = None):
        self.path = Path(path)
        self.mirror = mirror
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._salt_path = self.path.with_name(self.path.name + ".salt")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

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
            last = self._last_event()
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
            with open(self.path, "ab") as fh:
                fh.write(_canonical(event) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            if self.mirror is not None:
                self._mirror_one(event)
        return event

    def _mirror_key(self, seq: int) -> str:
        return f"changelog/{seq:08d}.json"

    def _mirror_one(self, event: dict) -> None:
        """Write-once: the object is created only if absent; an existing one must hold this very event."""
        text = _canonical(event).decode("utf-8")
        key = self._mirror_key(event["seq"])
        if not self.mirror.compare_and_swap(key, None, text) and self.mirror.read_text(key) != text:
            raise RuntimeError(f"mirror {self.mirror.uri}/{key} holds a different event than the local log")

    def sync_mirror(self) -> int:
        """Copy events the mirror lacks (e.g. after the mirror was unreachable); returns how many were written."""
        if self.mirror is None:
            raise ValueError("this change log has no mirror; construct it with mirror=<ArtifactStore>")
        have = set(self.mirror.list_keys("changelog/"))
        missing = [e for e in self.events() if self._mirror_key(e["seq"]) not in have]
        for event in missing:
            self._mirror_one(event)
        return len(missing)

    def head(self) -> dict | None:
        """The last event's sequence number and hash: what a release manifest anchors."""
        last = self._last_event()
        return {"seq": last["seq"], "hash": last["hash"]} if last else None

    def events(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def verify(self) -> VerifyResult:
        """Re-compute the chain; report the first line (1-based) where it breaks."""
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
        return VerifyResult(True, n)

    def verify_mirror(self) -> VerifyResult:
        """Compare the local log with the mirror: finds lines cut from the end, which the chain alone cannot."""
        if self.mirror is None:
            raise ValueError("this change log has no mirror; construct it with mirror=<ArtifactStore>")
        local = self.verify()
        if not local.ok:
            return local
        events = self.events()
        for i, event in enumerate(events, start=1):
            if self.mirror.read_text(self._mirror_key(i)) != _canonical(event).decode("utf-8"):
                return VerifyResult(False, len(events), i, f"line {i}: differs from or is missing in the mirror")
        extra = self.mirror.read_text(self._mirror_key(len(events) + 1))
        if extra is not None:
            return VerifyResult(
                False,
                len(events),
                len(events) + 1,
                f"line {len(events) + 1}: present in the mirror but missing locally (log truncated?)",
            )
        return VerifyResult(True, len(events))


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
