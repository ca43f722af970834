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


def _error_row(raw: str, lineno: int, reason: str) -> dict[str, Any]:
    return {"id": None, "_raw": _truncate(raw), "_parse_error": f"line {lineno}: {reason}"}


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
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return _error_row(text, lineno, f"{exc.msg} at column {exc.colno}")
    except (RecursionError, ValueError) as exc:  # e.g. integers beyond Python's digit limit
        return _error_row(text, lineno, f"cannot be parsed as JSON ({exc})")
    if not isinstance(obj, dict):
        return _error_row(text, lineno, f"expected a JSON object, got {type(obj).__name__}")
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


def _read_jsonl(
    path: Path, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_DEPTH
) -> list[dict[str, Any]]:
    return [row for _, _, row in iter_jsonl_lines(path, max_line_bytes=max_line_bytes, max_depth=max_depth)]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
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
    return [{str(k): plain(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]


def read_batch(
    path: Path | str, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_DEPTH
) -> list[dict[str, Any]]:
    """Load a batch file as a list of row dicts (.jsonl or .parquet); the limits bound each JSONL line's parse."""
    path = Path(path)
    supported = ", ".join(SUPPORTED_SUFFIXES)
    if not path.is_file():
        raise ValueError(f"batch file {path} does not exist or is not a file (supported formats: {supported})")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, max_line_bytes=max_line_bytes, max_depth=max_depth)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise ValueError(f"batch file {path} has unsupported suffix '{path.suffix}' (supported formats: {supported})")
