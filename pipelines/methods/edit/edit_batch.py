"""Edit inputs, results and scoring shared by every knowledge editor."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pipelines.model.lm import pick_device, score_qa


def check_edits(edits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate edit dicts (prompt, target, optional previous_target), naming the faulty row."""
    if not isinstance(edits, Sequence) or isinstance(edits, str | bytes) or not edits:
        raise ValueError("edits must be a non-empty list of dicts with 'prompt', 'target' and 'previous_target'")
    out = []
    for i, e in enumerate(edits):
        if not isinstance(e, Mapping):
            raise ValueError(f"edits[{i}] must be a dict, got {type(e).__name__}")
        for key in ("prompt", "target"):
            if not isinstance(e.get(key), str) or not e[key].strip():
                raise ValueError(f"edits[{i}].{key} must be a non-empty string")
        prev = e.get("previous_target")
        if prev is not None and not isinstance(prev, str):
            raise ValueError(f"edits[{i}].previous_target must be a string or null")
        if prev is not None and prev.strip() == e["target"].strip():
            raise ValueError(f"edits[{i}]: target equals previous_target ({prev!r}); nothing to edit")
        subject = e.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise ValueError(f"edits[{i}].subject must be a string or null")
        out.append({"prompt": e["prompt"], "target": e["target"], "previous_target": prev, "subject": subject})
    return out


def target_scores(model, tokenizer, edits: Sequence[dict[str, Any]]) -> tuple[list[bool], list[float]]:
    """Exact match and probability of each edit's new target under the model."""
    scores = score_qa(model, tokenizer, [e["prompt"] for e in edits], [e["target"] for e in edits])
    return [bool(x) for x in scores.exact_match], [math.exp(float(x)) for x in scores.logprob]


def edit_report(
    edits: Sequence[dict[str, Any]], before: list[float], after_hit: list[bool], after_prob: list[float]
) -> list[dict[str, Any]]:
    return [
        {
            "prompt": e["prompt"],
            "target": e["target"],
            "previous_target": e["previous_target"],
            "success": hit,
            "target_prob_before": round(pb, 6),
            "target_prob_after": round(pa, 6),
        }
        for e, pb, hit, pa in zip(edits, before, after_hit, after_prob, strict=True)
    ]


@contextmanager
def frozen_copy(model, tokenizer, edits: Sequence[dict[str, Any]],
                layer: int | None) -> Iterator[tuple[Any, Any, list[float]]]:
    """A copy of the model with every parameter frozen while editing (flags restored on exit), the projection to edit,
    and each edit's target probability before any change. The input model is never touched.

    `layer` None is the architecture's default edit layer; a layer the policy names also works for a family the
    architecture table does not know."""
    from pipelines.methods.edit.anatomy import mlp_out
    from pipelines.model.architectures import default_edit_layer

    edited = copy.deepcopy(model).to(pick_device()).eval()
    target = mlp_out(edited, default_edit_layer(edited) if layer is None else layer, allow_guess=layer is not None)
    _, prob_before = target_scores(edited, tokenizer, edits)
    flags = [p.requires_grad for p in edited.parameters()]
    for p in edited.parameters():
        p.requires_grad_(False)
    try:
        yield edited, target, prob_before
    finally:
        for p, flag in zip(edited.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def base_stats(started: float, edits: Sequence[dict[str, Any]], hits: Sequence[bool], target) -> dict[str, Any]:
    """The numbers every edit method reports; methods add their own."""
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "n_edits": len(edits),
        "success_rate": sum(hits) / len(hits),
        "layer": target.layer,
        "module": target.name,
    }
