"""An exponential moving average of the weights across cycles: the new champion is
decay * champion + (1 - decay) * candidate, so each cycle moves the served weights only part of the way and
a change must recur to take hold. The champion is itself the average of the cycles before it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pipelines.core.plugins import MergeResult, MethodConfig
from pipelines.methods.merge.scaled_update import scaled_update


class EmaConfig(MethodConfig):
    decay: float = Field(0.5, ge=0, lt=1, description="weight kept from the champion (0 keeps the candidate as is)")


def ema(champion: Any, candidate: Any, tokenizer: Any, cfg: EmaConfig, *,
        new_facts: list[dict[str, Any]] | None = None, probe: list[dict[str, Any]] | None = None,
        progress: bool = True) -> MergeResult:
    applied = scaled_update(champion, candidate, lambda _n, _d, _l: 1.0 - cfg.decay)
    return MergeResult(model=candidate, stats={"decay": cfg.decay, "scales": applied})
