"""Weight-space operations after an update: each parameter's change from the champion, scaled per layer.

Every merge method is `champion + s(parameter) * (candidate - champion)` for some scale s, so they share one
loop and one notion of depth: the decoder block a parameter sits in (from the architecture table's layers_path),
embeddings counting as the shallowest and everything after the last block (final norm, LM head) as the deepest.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from pipelines.model.architectures import n_layers_of, resolve_architecture

EMBEDDING = -1  # depth of input embeddings: below block 0


def depth_of(name: str, layers_path: str, n_layers: int) -> int:
    """The decoder block index of a parameter; EMBEDDING for embeddings, n_layers for what follows the blocks."""
    match = re.match(rf"^(?:.*\.)?{re.escape(layers_path)}\.(\d+)\.", name)
    if match:
        return int(match.group(1))
    leaf = name.rsplit(".", 2)[-2] if "." in name else name
    if "embed" in name or leaf in ("wte", "wpe"):
        return EMBEDDING
    return n_layers


def model_depths(model: torch.nn.Module) -> tuple[dict[str, int], int]:
    arch, n = resolve_architecture(model), n_layers_of(model)
    return {name: depth_of(name, arch.layers_path, n) for name, _ in model.named_parameters()}, n


@torch.no_grad()
def scaled_update(champion: torch.nn.Module, candidate: torch.nn.Module,
                  scale: Callable[[str, int, int], float]) -> dict[str, float]:
    """Rewrite `candidate` in place as champion + scale(name, depth, n_layers) * (candidate - champion); returns
    the scale applied per depth (for the report). Shapes must match: both are the same architecture."""
    depths, n = model_depths(candidate)
    old = dict(champion.named_parameters())
    applied: dict[str, float] = {}
    for name, param in candidate.named_parameters():
        if name not in old or old[name].shape != param.shape:
            raise ValueError(f"parameter {name} differs between the champion and the candidate: merging needs "
                             "two checkpoints of one architecture")
        s = float(scale(name, depths[name], n))
        if s != 1.0:
            base = old[name].to(param.device, param.dtype)
            param.copy_(base + s * (param - base))
        applied[_depth_label(depths[name], n)] = s
    return applied


def _depth_label(depth: int, n_layers: int) -> str:
    return "embeddings" if depth == EMBEDDING else ("head" if depth >= n_layers else f"layer {depth}")
