"""Local Hugging Face `evaluate` modules: each number of an evaluation card is defined in exactly one of them.

Modules are loaded by absolute path, never from the hub. The library is imported lazily (it costs seconds)
and is pointed at the project's state folder so that nothing is written under the user's home cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent
_CACHE: dict[str, Any] = {}


def available_metrics() -> list[str]:
    """Names of the metric modules shipped in this folder."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def memgov_home() -> Path:
    """State folder of the project (env MEMGOV_HOME, default ./.memgov), made absolute."""
    return Path(os.environ.get("MEMGOV_HOME", ".memgov")).expanduser().resolve()


_MODULES: list[Path] = []


def _prepare_environment() -> Path:
    """Force offline mode and keep every evaluate cache inside MEMGOV_HOME.

    The modules folder is fixed for the process at the first load: Python imports the `evaluate_modules` package
    from it once, so a module copied into another home's folder later (a process that opens a second home) could
    not be imported."""
    home = memgov_home()
    for flag in ("HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ[flag] = "1"
    if not _MODULES:
        _MODULES.append(home / "hf_modules")
    modules = _MODULES[0]
    os.environ["HF_MODULES_CACHE"] = str(modules)
    os.environ.setdefault("HF_EVALUATE_CACHE", str(home / "hf_evaluate"))
    os.environ.setdefault("HF_METRICS_CACHE", str(home / "hf_evaluate" / "metrics"))
    return modules


def load_metric(name: str):
    """Load (once per process) the local metric module `evals/metrics/<name>/<name>.py`."""
    if name in _CACHE:
        return _CACHE[name]
    script = METRICS_DIR / name / f"{name}.py"
    if not script.is_file():
        raise ValueError(f"unknown metric '{name}'; available: {', '.join(available_metrics())}")
    modules = _prepare_environment()
    import evaluate
    from evaluate import config as ev_config

    # The library reads these at import time: if something imported it earlier, redirect it here too.
    ev_config.HF_MODULES_CACHE = modules
    ev_config.HF_METRICS_CACHE = Path(os.environ["HF_METRICS_CACHE"])
    ev_config.HF_EVALUATE_OFFLINE = True
    metric = evaluate.load(str(script), keep_in_memory=True)
    _CACHE[name] = metric
    return metric


__all__ = ["METRICS_DIR", "available_metrics", "load_metric", "memgov_home"]
