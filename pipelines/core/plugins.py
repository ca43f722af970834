"""Method registry: selection, update, edit and unlearning methods are plugins chosen by name in a policy.

A method is a typed pydantic config plus an implementation callable. Each kind has one Protocol below, so the
cycle calls every method of a kind the same way; `register` refuses an implementation whose parameters do not
match its kind's call shape (a method that cannot take documents or key texts fails when it is registered,
not in the middle of a cycle). Registering the same (kind, name) twice, or a name that is not a lowercase
identifier, is an error so that a policy name always resolves to exactly one implementation.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

KINDS = ("selection", "update", "edit", "unlearn", "merge")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MethodConfig(BaseModel):
    """Base for every method config: unknown keys are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid")


def require_config(cfg: Any, cls: type[MethodConfig]) -> None:
    """The one check every method makes of the config it is handed (a policy resolves it; a direct caller may not)."""
    if not isinstance(cfg, cls):
        raise ValueError(f"cfg must be a {cls.__name__}, got {type(cfg).__name__}")


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


# What each kind of method returns: the other half of its call shape.


@dataclass
class SelectionResult:
    """What a selector chose and why the rest was left out.

    samples: chosen rows, each with "score" (the current model's per-token NLL on the target, None when the
    method does not score) and "cluster"; pruned: left-out rows with "prune_reason"; replay: old rows drawn
    from the replay pool (with "cluster" and "replay": True); stats: counts for the UI and benchmarks.
    """

    samples: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[dict[str, Any]] = field(default_factory=list)
    replay: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def training_rows(self) -> list[dict[str, Any]]:
        """Selected samples followed by replay rows: what the trainer receives."""
        return self.samples + self.replay


@dataclass
class UpdateResult:
    model: Any  # merged plain transformers model
    adapter_dir: Path
    history: list[dict[str, float | None]] = field(default_factory=list)
    stats: dict[str, float | int | bool] = field(default_factory=dict)


@dataclass
class EditResult:
    model: Any
    per_edit: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, float | int | bool | str] = field(default_factory=dict)


@dataclass
class UnlearnResult:
    model: Any  # merged plain transformers model
    history: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeResult:
    model: Any  # the candidate, rewritten in place
    stats: dict[str, Any] = field(default_factory=dict)


class SelectionMethod(Protocol):
    """Choose training rows from a batch's candidates (facts and rendered instructions) and draw replay from the
    pool of earlier facts; `model` scores rows, methods that do not score ignore it."""

    def __call__(self, rows: list[dict[str, Any]], model: Any, tokenizer: Any, cfg: Any,
                 replay_pool: list[dict[str, Any]] | None) -> SelectionResult: ...


class UpdateMethod(Protocol):
    """Train from the champion: samples and replay are {"prompt", "target"} items (loss on the target), texts are
    documents for continued pre-training (loss on every token), probe is a held-out slice of known facts the
    method may watch for forgetting. Returns a merged model and the adapter it trained."""

    def __call__(self, model: Any, tokenizer: Any, samples: list[dict[str, Any]], replay: list[dict[str, Any]],
                 cfg: Any, *, probe: list[dict[str, Any]] | None = None, texts: Sequence[str] | None = None,
                 progress: bool = True) -> UpdateResult: ...


class EditMethod(Protocol):
    """Rewrite facts in place: edits are {"prompt", "target", "previous_target"}; key_texts sample the keys the
    model sees (general text, known prompts) for the edit's statistics; protect are facts ({"prompt", "target"})
    whose answers must not move at all (those the cycle just taught)."""

    def __call__(self, model: Any, tokenizer: Any, edits: list[dict[str, Any]], cfg: Any, key_texts: list[str],
                 *, protect: Sequence[dict[str, Any]] | None = None, progress: bool = True) -> EditResult: ...


class UnlearnMethod(Protocol):
    """Make the model forget the forget items while keeping the retain items."""

    def __call__(self, model: Any, tokenizer: Any, forget: list[dict[str, Any]], retain: list[dict[str, Any]],
                 cfg: Any, *, progress: bool = True) -> UnlearnResult: ...


class MergeMethod(Protocol):
    """After an update: rewrite the candidate (a merged model) from its change relative to the champion; the new
    facts it was trained on and the retention probe are there for methods that choose by measuring."""

    def __call__(self, champion: Any, candidate: Any, tokenizer: Any, cfg: Any, *,
                 new_facts: list[dict[str, Any]] | None = None, probe: list[dict[str, Any]] | None = None,
                 progress: bool = True) -> MergeResult: ...


PROTOCOLS: dict[str, type] = {"selection": SelectionMethod, "update": UpdateMethod, "edit": EditMethod,
                              "unlearn": UnlearnMethod, "merge": MergeMethod}


def _check_call_shape(kind: str, name: str, impl: Callable[..., Any]) -> None:
    """The implementation takes its kind's parameters under the same names, in the same order."""
    wanted = [p for p in inspect.signature(PROTOCOLS[kind].__call__).parameters.values() if p.name != "self"]
    try:
        have = inspect.signature(impl).parameters
    except (TypeError, ValueError):
        raise ValueError(f"{kind} method '{name}': its implementation has no inspectable signature") from None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in have.values()) and len(have) == 1:
        return
    positional = [p.name for p in have.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    expected_positional = [p.name for p in wanted if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    missing = [p.name for p in wanted if p.name not in have]
    if missing or positional[:len(expected_positional)] != expected_positional:
        shape = ", ".join(p.name if p.kind is not inspect.Parameter.KEYWORD_ONLY else f"{p.name}=" for p in wanted)
        raise ValueError(f"{kind} method '{name}' must be callable as ({shape}) like every {kind} method"
                         + (f"; it lacks: {', '.join(missing)}" if missing else f"; it takes ({', '.join(positional)})"))


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
    _check_call_shape(kind, name, impl)
    method = Method(kind, name, config_cls, impl)
    _REGISTRY[(kind, name)] = method
    return method


def _load_builtin() -> None:
    """Import the packages whose modules register the built-in methods."""
    import importlib

    for package in ("pipelines.methods.selection", "pipelines.methods.update", "pipelines.methods.edit", "pipelines.methods.unlearn",
                    "pipelines.methods.merge"):
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
