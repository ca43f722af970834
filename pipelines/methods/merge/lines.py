"""LiNeS (Wang et al., ICLR 2025): scale each layer's update linearly with depth after training.

Shallow layers hold general features that every task shares, so shrinking their change keeps what the model knew;
deep layers hold what the update was for, so they keep theirs. `shallow` is the scale of the first block (and the
embeddings), `deep` of the last (and the head); blocks between are interpolated by depth.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from pipelines.core.plugins import MergeResult, MethodConfig
from pipelines.methods.merge.scaled_update import scaled_update


class LinesConfig(MethodConfig):
    shallow: float = Field(0.0, ge=0, le=1, description="scale of the first block's (and the embeddings') change")
    deep: float = Field(1.0, ge=0, le=1, description="scale of the last block's (and the head's) change")

    @model_validator(mode="after")
    def _ordered(self) -> LinesConfig:
        if self.shallow > self.deep:
            raise ValueError(f"shallow ({self.shallow}) must not exceed deep ({self.deep}): LiNeS keeps deep changes")
        return self


def depth_scale(depth: int, n_layers: int, shallow: float, deep: float) -> float:
    """Embeddings and block 0 get `shallow`, the last block and the head `deep`, blocks between by depth."""
    if depth < 0:
        return shallow
    if depth >= n_layers - 1:
        return deep
    return shallow + (deep - shallow) * depth / (n_layers - 1)


def lines(champion: Any, candidate: Any, tokenizer: Any, cfg: LinesConfig, *,
          new_facts: list[dict[str, Any]] | None = None, probe: list[dict[str, Any]] | None = None,
          progress: bool = True) -> MergeResult:
    applied = scaled_update(champion, candidate, lambda _n, d, n: depth_scale(d, n, cfg.shallow, cfg.deep))
    return MergeResult(model=candidate, stats={"scales": applied})
