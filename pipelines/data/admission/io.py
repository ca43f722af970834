"""Reading batch files into plain rows; a broken line becomes a quarantinable row instead of failing the batch.

JSONL parsing is bounded per line (size, nesting depth, strict UTF-8) so one poison line can neither crash the
reader nor hide the rest of the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")

MAX_LINE_BYTES = 1 << 20  # a JSONL row larger than this is not a plausible training row
MAX_DEPTH = 64  # json.loads recurses per nesting level; a deep line would exhaust the interpreter stack
MAX_RAW_CHARS = 2000  # how much of a bad line is kept for the person reviewing the quarantine
_TRUNCATED = " ...[truncated]"
_BOM = b"\xef\xbb\xbf"
# A JSON string (possibly unterminated, which runs to the end of the line) or one bracket outside strings.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON can spell them (\\ud800) but they are not text
_SNIFF_BYTES = 8192
# What a file that is not JSON lines usually is, by its first bytes, and what to do about it.
_SIGNATURES = (
    (b"\xff\xfe\x00\x00", "UTF-32 text", "save it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 text", "save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8"),
    (b"\x1f\x8b", "a gzip archive", "decompress it and send the .jsonl inside"),
    (b"PK\x03\x04", "a zip archive", "unzip it and send the .jsonl inside"),
    (b"\xfd7zXZ\x00", "an xz archive", "decompress it and send the .jsonl inside"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive", "decompress it and send the .jsonl inside"),
    (b"BZh", "a bzip2 archive", "decompress it and send the .jsonl inside"),
    (b"PAR1", "a Parquet file", "name it .parquet"),
)


def plain(value: Any) -> Any:
    """Turn numpy/pandas values into JSON-ready Python values (arrays to lists, NaN/NA to None)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and numpy scalars
        return plain(tolist())
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return value


def _truncate(text: str) -> str:
    """Keep a bad line reviewable without storing megabytes of it."""
    if len(text) <= MAX_RAW_CHARS:
        return text
    return text[: MAX_RAW_CHARS - len(_TRUNCATED)] + _TRUNCATED


def _error_row(raw: str, lineno: int, reason: str, unit: str = "line") -> dict[str, Any]:
    return {"id": None, "_raw": _truncate(raw), "_parse_error": f"{unit} {lineno}: {reason}"}


class _NotPlainJson(ValueError):
    """A line that json.loads would accept but that readers could disagree on (a key twice, NaN)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotPlainJson(f"field {key!r} appears more than once, so readers disagree on its value; "
                                    "fix: keep one")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _NotPlainJson(f"{name} is not JSON; fix: write null or a number")


def _surrogate_field(value: Any, path: str = "") -> str | None:
    """The path of the first key or string holding an unpaired surrogate (nesting is already bounded)."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if _SURROGATE.search(key):
                return where
            found = _surrogate_field(item, where)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_field(item, f"{path}[{index}]")
            if found:
                return found
    return None


def exceeds_depth(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """True when brackets outside JSON strings nest deeper than `max_depth` (a linear scan, no recursion)."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                return True
        elif token in ("]", "}"):
            depth = max(depth - 1, 0)
    return False


def _strip_line_ending(raw: bytes) -> bytes:
    return raw.removesuffix(b"\n").removesuffix(b"\r")


def parse_jsonl_line(
    raw: str | bytes, lineno: int, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """Parse one JSONL line into a row dict, or into an error row `{"id": None, "_raw", "_parse_error"}`.

    Never raises for bad input: size, UTF-8, nesting depth and JSON syntax are checked in that order, cheapest
    first, so nothing expensive runs on a line that is already known to be bad. A trailing newline is ignored.
    """
    if isinstance(raw, bytes):
        raw = _strip_line_ending(raw)
        size = len(raw)
        if size > max_line_bytes:
            head = raw[: MAX_RAW_CHARS * 4].decode("utf-8", errors="backslashreplace")
            return _error_row(head, lineno, f"line is {size} bytes, more than the limit of {max_line_bytes}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = raw.decode("utf-8", errors="backslashreplace")
            return _error_row(shown, lineno, f"not valid UTF-8 at byte {exc.start}")
    else:
        text = raw.removesuffix("\n").removesuffix("\r")
        size = len(text.encode("utf-8", errors="surrogatepass"))
        if size > max_line_bytes:
            return _error_row(text, lineno, f"line is {size} bytes, more than the limit of {max_line_bytes}")
    if exceeds_depth(text, max_depth):
        return _error_row(text, lineno, f"nested deeper than {max_depth} levels")
    try:
        obj = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        return _error_row(text, lineno, f"{exc.msg} at column {exc.colno}")
    except _NotPlainJson as exc:
        return _error_row(text, lineno, str(exc))
    except (RecursionError, ValueError) as exc:  # e.g. integers beyond Python's digit limit
        return _error_row(text, lineno, f"cannot be parsed as JSON ({exc})")
    if not isinstance(obj, dict):
        return _error_row(text, lineno, f"expected a JSON object, got {type(obj).__name__}")
    where = _surrogate_field(obj)
    if where:
        shown = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
        return _error_row(shown, lineno, f"field {where!r} holds an unpaired surrogate, which is not text; "
                          "fix: escape real characters only (e.g. \\u00e9 for é)")
    return obj


def iter_jsonl_lines(
    path: Path | str, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_DEPTH
) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Yield `(lineno, raw_bytes, row)` for every non-blank line, so a caller can rewrite a file line by line.

    `raw_bytes` is the whole line exactly as stored, without its line ending (and without a leading UTF-8 BOM);
    `row` is what `parse_jsonl_line` makes of it. Line numbers count blank lines too, like an editor does.
    """
    with Path(path).open("rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            raw = _strip_line_ending(line)
            if not raw.strip():
                continue
            yield lineno, raw, parse_jsonl_line(raw, lineno, max_line_bytes=max_line_bytes, max_depth=max_depth)


def _not_text(head: bytes) -> tuple[str, str] | None:
    """(what the file is, the fix) when its first bytes show it is not UTF-8 JSON lines at all."""
    for magic, what, fix in _SIGNATURES:
        if head.startswith(magic):
            return what, fix
    if b"\x00" in head:
        return "binary data", "send UTF-8 JSON lines (one object per line) or a .parquet file"
    return None


def sniff_not_text(head: bytes) -> tuple[str, str] | None:
    """What a file is when its first bytes show it is not UTF-8 JSON lines (None when they could be): the forget
    scrub reads such a file whole instead of line by line."""
    return _not_text(head)


def _read_jsonl(
    path: Path, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_DEPTH
) -> list[dict[str, Any]]:
    rows = [row for _, _, row in iter_jsonl_lines(path, max_line_bytes=max_line_bytes, max_depth=max_depth)]
    if rows and all("_parse_error" in r for r in rows):
        # Not one line parsed: a binary file is refused whole instead of as a heap of meaningless line errors.
        with path.open("rb") as fh:
            found = _not_text(fh.read(_SNIFF_BYTES))
        if found:
            raise ValueError(f"batch file {path} is {found[0]}, not JSON lines; fix: {found[1]}")
    return rows


def _bounded(record: dict[str, Any], number: int, max_bytes: int) -> dict[str, Any]:
    """A Parquet row as big as a JSONL line may be, or an error row like an oversized line's."""
    row = {str(k): plain(v) for k, v in record.items()}
    dumped = json.dumps(row, default=str, ensure_ascii=False)
    size = len(dumped.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        return _error_row(dumped, number, f"row is {size} bytes, more than the limit of {max_bytes}", unit="row")
    return row


def _read_parquet(path: Path, max_row_bytes: int = MAX_LINE_BYTES) -> list[dict[str, Any]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except ImportError:
        raise  # a missing engine is an installation problem, not a bad file
    except Exception as exc:  # pyarrow raises several unrelated types for damaged files
        raise ValueError(
            f"batch file {path} cannot be read as Parquet ({type(exc).__name__}: {exc}); "
            "fix: re-export it, or send it as .jsonl"
        ) from exc
    records = frame.to_dict(orient="records")
    return [_bounded(rec, number, max_row_bytes) for number, rec in enumerate(records, start=1)]


def read_batch(
    path: Path | str, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_DEPTH
) -> list[dict[str, Any]]:
    """Load a batch file as a list of row dicts (.jsonl or .parquet); the limits bound each line's or row's parse.

    Raises ValueError, naming the file and the fix, for a file that holds no rows or is not JSON lines at all."""
    path = Path(path)
    supported = ", ".join(SUPPORTED_SUFFIXES)
    if not path.is_file():
        raise ValueError(f"batch file {path} does not exist or is not a file (supported formats: {supported})")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _read_jsonl(path, max_line_bytes=max_line_bytes, max_depth=max_depth)
    elif suffix == ".parquet":
        rows = _read_parquet(path, max_row_bytes=max_line_bytes)
    else:
        raise ValueError(f"batch file {path} has unsupported suffix '{path.suffix}' (supported formats: {supported})")
    if not rows:
        raise ValueError(f"batch file {path} holds no rows; fix: write one JSON object per row, or leave the file out")
    return rows
