"""Method registry: selection, update, edit and unlearning methods are plugins chosen by name in a policy.

A method is a typed pydantic config plus an implementation callable. Registering the same
(kind, name) twice, or a name that is not a lowercase identifier, is an error so that a policy
name always resolves to exactly one implementation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

KINDS = ("selection", "update", "edit", "unlearn")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MethodConfig(BaseModel):
    """Base for every method config: unknown keys are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Method:
    kind: str
    name: str
    config_cls: type[MethodConfig]
    impl: Callable[..., Any]

    def config(self, raw: dict[str, Any] | None = None) -> MethodConfig:
        """Validate a policy's raw parameters for this method, naming the method on failure."""
        try:
            return self.config_cls(**(raw or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"invalid parameters for {self.kind} method '{self.name}': {problems}") from exc


_REGISTRY: dict[tuple[str, str], Method] = {}


def register(kind: str, name: str, config_cls: type[MethodConfig], impl: Callable[..., Any]) -> Method:
    """Add a method; rejects unknown kinds, malformed names and duplicates."""
    if kind not in KINDS:
        raise ValueError(f"unknown method kind '{kind}'; allowed: {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise ValueError(f"method name '{name}' must be a lowercase identifier like 'lora' or 'grad_diff'")
    if (kind, name) in _REGISTRY:
        raise ValueError(f"{kind} method '{name}' is already registered")
    if not (isinstance(config_cls, type) and issubclass(config_cls, MethodConfig)):
        raise ValueError(f"{kind} method '{name}': config_cls must subclass MethodConfig")
    method = Method(kind, name, config_cls, impl)
    _REGISTRY[(kind, name)] = method
    return method


def _load_builtin() -> None:
    """Import the packages whose modules register the built-in methods."""
    import importlib

    for package in ("pipelines.selection", "pipelines.update", "pipelines.edit", "pipelines.unlearn"):
        importlib.import_module(package)


def get(kind: str, name: str) -> Method:
    """Resolve a policy's method name, listing the alternatives when it is unknown."""
    _load_builtin()
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        raise ValueError(
            f"unknown {kind} method '{name}'; available: {', '.join(available(kind)) or 'none'}"
        ) from None


def available(kind: str) -> list[str]:
    _load_builtin()
    return sorted(n for k, n in _REGISTRY if k == kind)
