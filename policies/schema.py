"""Policy schema: every key is typed, unknown keys are refused, and errors name the file, the key and what is allowed."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evals.gates import Gate
from pipelines.core import plugins
from pipelines.data.admission import AdmissionConfig

POLICY_DIR = Path(__file__).resolve().parent


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _bounded(field) -> bool:
    """Whether a config field's value is confined: a closed set (bool, Literal) or numbers bounded on both sides."""
    if field.annotation is bool or getattr(field.annotation, "__origin__", None) is Literal:
        return True
    kinds = {type(m).__name__ for m in field.metadata}
    return bool(kinds & {"Ge", "Gt", "Interval"}) and bool(kinds & {"Le", "Lt", "Interval"})


class MethodChoice(_Strict):
    """A plugin chosen by name plus its parameters, validated by the plugin's own config class."""

    method: str
    params: dict[str, Any] = Field(default_factory=dict)

    def resolve(self, kind: str) -> tuple[plugins.Method, plugins.MethodConfig]:
        method = plugins.get(kind, self.method)
        return method, method.config(self.params)


class BaseModelSection(_Strict):
    """The deployment's checkpoint: a Hugging Face folder or cached id (what `memgov init --base-model` takes)."""

    path: str | None = None
    data: str | None = Field(None, description="folder of contract tables for the first start (`--data`)")
    tiny: dict[str, Any] | None = Field(
        None, description="a client's own model recipe (the demo's tiny model); the engine never reads it")


class UnlearningSection(MethodChoice):
    sla_hours: float = Field(72, gt=0)
    max_forget_recall: float = Field(0.05, ge=0, le=1)
    min_retain_recall: float = Field(0.85, ge=0, le=1)
    max_mia_auc_gap: float = Field(0.25, ge=0, le=0.5)
    min_forget_quality: float = Field(0.05, ge=0, le=1)
    max_probe_excess: float = Field(0.15, ge=-1, le=1)
    probe_alpha: float = Field(0.05, gt=0, lt=1, description="an excess above max_probe_excess fails the probe check "
                               "only when it is significant: one-sided Fisher exact p-value below this")
    reference: Literal["auto", "retrain", "unseen"] = "auto"
    calibrate_to_unseen: bool = True
    # A request whose plan removes more than this share of the rows, subjects or documents waits for a
    # confirmation by one of `confirm_roles` (not the requester): `.*` must not empty a deployment on its own.
    max_share: float = Field(0.10, gt=0, le=1)
    confirm_roles: list[str] = Field(default_factory=lambda: ["governance"], min_length=1)
    max_scrub_attempts: int = Field(5, ge=1, le=100)


class RagSection(_Strict):
    top_k: int = Field(3, ge=1, le=50)


class TrainingSection(_Strict):
    """Which admitted row kinds feed the update method besides facts (edits never do: they go to the edit method)."""

    instructions: bool = True
    documents: bool = Field(False, description="continued pre-training on the batch's documents (loss on every token)")


class ReplaySection(_Strict):
    """Replay the engine adds to every update whatever the selection method, budgeted in tokens (not a share of all
    that is known, which grows until replay is joint retraining)."""

    old_tokens: int | None = Field(None, ge=0, description="token budget of old-fact replay per cycle; null = the "
                                   "selection method's own replay (its replay_ratio)")
    recall_interval: int = Field(1, ge=1, le=1000, description="cycles before a replayed fact comes back (1 = every "
                                 "cycle); the most overdue come first")
    general_tokens: int = Field(0, ge=0, description="token budget of general-text replay (GeRe) per cycle, drawn from "
                                "the deployment's `general_replay` table, never from the `general` evaluation split")


class EvaluationSection(_Strict):
    instruction_metric: Literal["exact_match", "token_f1"] = "exact_match"
    retention_sample: int = Field(300, ge=10)
    probe_size: int = Field(100, ge=10)
    canary_size: int = Field(50, ge=5)
    canary_min_recall: float = Field(0.8, ge=0, le=1.01)


class ApprovalSection(_Strict):
    mode: Literal["human", "auto"] = "human"
    auto_approver: str = "policy:auto"
    roles: list[str] = Field(default_factory=lambda: ["ml-lead", "governance"])
    forbid_self_approval: bool = True
    two_approvers_above_facts: int = Field(200, ge=0)
    expiry_hours: float = Field(72, gt=0)
    waiver_roles: list[str] = Field(default_factory=lambda: ["governance"])
    rollback_roles: list[str] = Field(default_factory=lambda: ["ml-lead", "governance"],
                                      description="who may put an earlier release back in service")
    policy_roles: list[str] = Field(default_factory=lambda: ["governance"],
                                    description="who may change the deployment's policy (`memgov policy adopt`)")


class LegalHold(_Strict):
    """Releases whose weights stay when a forget request taints them (litigation, a regulator's order)."""

    name: str = Field(min_length=1, description="the hold's name, recorded in every request's evidence it affects")
    releases: list[str] = Field(min_length=1)
    reason: str = Field(min_length=1)


class RetentionSection(_Strict):
    keep_index_snapshots: int = Field(10, ge=1)
    keep_releases: int = Field(50, ge=1)
    legal_holds: list[LegalHold] = Field(default_factory=list)


class Policy(_Strict):
    version: str
    description: str = ""
    seed: int = Field(0, description="seed of every sample the engine draws (retention, probes, replay)")
    world: dict[str, Any] | None = Field(
        None, description="a client's own section (the demo world's seed and size); the engine never reads it")
    base_model: BaseModelSection = Field(default_factory=BaseModelSection)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    selection: MethodChoice = Field(default_factory=lambda: MethodChoice(method="cluster_score"))
    update: MethodChoice = Field(default_factory=lambda: MethodChoice(method="lora"))
    merge: list[MethodChoice] = Field(
        default_factory=list, description="weight-space steps after the update, in order (lines, average, ema)")
    training: TrainingSection = Field(default_factory=TrainingSection)
    replay: ReplaySection = Field(default_factory=ReplaySection)
    edit: MethodChoice = Field(default_factory=lambda: MethodChoice(method="rome"))
    unlearning: UnlearningSection = Field(default_factory=lambda: UnlearningSection(method="grad_diff"))
    rag: RagSection = Field(default_factory=RagSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    gates: list[Gate]
    approval: ApprovalSection = Field(default_factory=ApprovalSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    batch_overrides: list[str] = Field(
        default_factory=list, description="the training hyper-parameters a batch's <batch>.policy.json may set, as "
        "dotted keys (update.params.learning_rate); nothing else of the policy can be changed by data")

    @field_validator("batch_overrides")
    @classmethod
    def _training_only(cls, keys: list[str]) -> list[str]:
        bad = [k for k in keys if not re.fullmatch(r"(selection|update)\.params\.[a-z][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"batch_overrides may name training hyper-parameters only (selection.params.<name> or "
                             f"update.params.<name>), not: {', '.join(bad)}")
        return keys

    @model_validator(mode="after")
    def _methods_exist(self) -> Policy:
        for kind, section in (
            ("selection", self.selection),
            ("update", self.update),
            ("edit", self.edit),
            ("unlearn", self.unlearning),
        ):
            section.resolve(kind)
        for step in self.merge:
            step.resolve("merge")
        return self

    @model_validator(mode="after")
    def _overrides_bounded(self) -> Policy:
        """A batch may only move a hyper-parameter the chosen method bounds on both sides: an unbounded one (1e9
        epochs) would let data hold the cycle lock while forget requests wait."""
        for key in self.batch_overrides:
            kind, _, name = key.split(".")
            section = self.selection if kind == "selection" else self.update
            _, config = section.resolve(kind)
            field = type(config).model_fields.get(name)
            if field is None:
                raise ValueError(f"batch_overrides: {key} is not a parameter of the {kind} method "
                                 f"'{section.method}'; its parameters: {', '.join(sorted(type(config).model_fields))}")
            if not _bounded(field):
                raise ValueError(f"batch_overrides: {key} has no lower and upper bound in the {kind} method "
                                 f"'{section.method}', so a batch could set any value; bound it in the method's "
                                 "config or remove it from batch_overrides")
        return self

    def fingerprint(self) -> str:
        """Short hash of the effective policy: recorded in every release and card."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.version}@{self.fingerprint()}"


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"key '{loc}' is not allowed here; check the spelling against the schema in policies/schema.py"
    if err["type"] == "missing":
        return f"key '{loc}' is required"
    msg = err["msg"]
    if "input" in err and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return f"key '{loc}': {msg}"


def parse_policy(raw: dict[str, Any], source: str) -> Policy:
    """Validate a policy mapping; every problem is listed with its key path and the source name."""
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: a policy must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Policy(**raw)
    except ValidationError as exc:
        lines = [f"  - {_describe(e)}" for e in exc.errors()]
        raise PolicyError(f"{source}: invalid policy\n" + "\n".join(lines)) from None
    except ValueError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def resolve_policy_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = POLICY_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in POLICY_DIR.glob("*.yaml")))
    raise PolicyError(f"policy '{name_or_path}' not found: give a YAML path or one of: {known}")


def load_policy(name_or_path: str | Path = "default") -> Policy:
    path = resolve_policy_path(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start}); fix: save the policy as UTF-8 YAML") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:  # the YAML composer recurses per nesting level
        raise PolicyError(f"{path}: nested too deeply to read; fix: a policy is a few levels of sections") from None
    return parse_policy(raw, str(path))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def merge_overrides(policy: Policy, overrides: dict[str, Any] | None, source: str) -> Policy:
    """Apply a batch's policy overrides; the result is validated like a file, so a bad override is named."""
    if not overrides:
        return policy
    merged = _deep_merge(policy.model_dump(mode="python"), overrides)
    result = parse_policy(merged, source)
    return result.model_copy(update={"version": f"{policy.version}+{Path(source).stem}"})
