"""Reading batch files into plain rows; a broken line becomes a quarantinable row instead of failing the batch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")


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


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            raw = line.rstrip("\n")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                rows.append(
                    {"id": None, "_raw": raw, "_parse_error": f"line {lineno}: {exc.msg} at column {exc.colno}"}
                )
                continue
            if not isinstance(obj, dict):
                msg = f"line {lineno}: expected a JSON object, got {type(obj).__name__}"
                rows.append({"id": None, "_raw": raw, "_parse_error": msg})
                continue
            rows.append(obj)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_parquet(path)
    return [{str(k): plain(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]


def read_batch(path: Path | str) -> list[dict[str, Any]]:
    """Load a batch file as a list of row dicts (.jsonl or .parquet)."""
    path = Path(path)
    supported = ", ".join(SUPPORTED_SUFFIXES)
    if not path.is_file():
        raise ValueError(f"batch file {path} does not exist or is not a file (supported formats: {supported})")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise ValueError(f"batch file {path} has unsupported suffix '{path.suffix}' (supported formats: {supported})")
