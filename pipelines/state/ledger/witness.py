"""The witness of the log's newest event, kept with the secrets: what anchors the tail where there is no mirror.

The chain alone proves nothing about the end of the file: lines cut off, re-chained or appended after the newest
release's anchor all chain. Each append therefore first writes the new event, signed by the system key, to a file
in the secrets folder (outside the home) as an intent, appends the line, then marks the witness committed. The last
line must then be the witnessed event; since every hash covers the one before it, that one comparison covers the
whole chain. A crash before the commit leaves an uncommitted witness one event ahead: the next append (or
`complete`) writes that line, so an interrupted append is finished; a committed witness ahead of the log means the
end was cut.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines.core.digests import canonical_json


class LogTampered(RuntimeError):
    """The log's end is not the event the witness holds; the message says what was cut, re-chained or appended."""


class Witness:
    def __init__(self, path: Path, signer):
        """`signer`: a callable returning the system key (created lazily: reading a log needs no key file)."""
        self.path = Path(path)
        self._signer = signer

    def _key(self) -> Ed25519PrivateKey:
        return self._signer()

    def read(self) -> dict | None:
        """The witnessed event with `committed` added, its signature checked; None when nothing was witnessed."""
        if not self.path.exists():
            return None
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            body = {"event": doc["event"], "committed": doc["committed"]}
            self._key().public_key().verify(base64.b64decode(doc["signature"]), canonical_json(body))
        except (ValueError, KeyError, TypeError, InvalidSignature):
            raise LogTampered(f"the log witness {self.path} is unreadable or not signed by the system key; restore "
                              "it from the secrets' backup") from None
        return {**body["event"], "committed": bool(body["committed"])}

    def reseal(self, signer) -> None:
        """Sign the witnessed event again under a new system key (a rotation), then use that key."""
        witnessed = self.read()
        self._signer = signer
        if witnessed is not None:
            committed = witnessed.pop("committed")
            self.write(witnessed, committed=committed)

    def write(self, event: dict, committed: bool) -> None:
        body = {"event": event, "committed": committed}
        signature = base64.b64encode(self._key().sign(canonical_json(body))).decode()
        data = json.dumps({**body, "signature": signature}, sort_keys=True).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)


def end_problem(witnessed: dict | None, last: dict | None, hash_at) -> str | None:
    """Why the log's end is not the witnessed event (None: it is, or the witness is one interrupted append ahead).

    `hash_at(seq)` gives the log's hash at a sequence number (None beyond its end)."""
    if witnessed is None:
        return None
    seq = witnessed["seq"]
    if last is not None and last["seq"] == seq and last["hash"] == witnessed["hash"]:
        return None
    if pending(witnessed, last):
        return None
    if last is None or last["seq"] < seq:
        ends = last["seq"] if last else 0
        return (f"the log ends at event {ends} but the witness kept with the secrets holds event {seq}: events were "
                "cut from the end")
    at = hash_at(seq)
    if at != witnessed["hash"]:
        return (f"event {seq} in the log differs from the one the witness holds: the log was rewritten or "
                "re-chained")
    span = f"event {seq + 1} was" if last["seq"] == seq + 1 else f"events {seq + 1} to {last['seq']} were"
    return f"{span} appended after the newest witnessed event {seq}, not by memgov"


def pending(witnessed: dict | None, last: dict | None) -> bool:
    """The witness is an uncommitted intent exactly one event ahead, chaining onto the last line: an append that
    was interrupted before its line was written."""
    if witnessed is None or witnessed.get("committed", True):
        return False
    prev = last["hash"] if last else "0" * 64
    return witnessed["seq"] == (last["seq"] if last else 0) + 1 and witnessed["prev_hash"] == prev
