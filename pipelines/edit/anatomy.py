"""Where the editable weights live in common causal-LM families, and how to read their activations.

A rank-one edit writes into the output projection of one MLP (GPT-2 ``mlp.c_proj``, Llama
``mlp.down_proj``, NeoX ``mlp.dense_4h_to_h``, OPT ``fc2``). GPT-2 stores that weight as Conv1D
``[in, out]`` while the others use ``nn.Linear`` ``[out, in]``; :class:`MlpOut` hides the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipelines.update.common import is_conv1d

_OUT_NAMES = ("mlp.c_proj", "mlp.down_proj", "mlp.dense_4h_to_h", "fc2", "mlp.fc2", "feed_forward.w2")


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer blocks: the ModuleList whose length is the configured layer count."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} decoder layers of this {model.config.model_type} model")


@dataclass
class MlpOut:
    """The MLP output projection of one layer, with its weight layout."""

    layer: int
    name: str
    module: torch.nn.Module

    @property
    def transposed(self) -> bool:
        return is_conv1d(self.module)

    @property
    def in_features(self) -> int:
        w = self.module.weight
        return w.shape[0] if self.transposed else w.shape[1]

    def project(self, keys: torch.Tensor) -> torch.Tensor:
        """W k without bias, for a batch of keys [n, in] -> [n, out]."""
        w = self.module.weight
        return keys @ w if self.transposed else keys @ w.T

    @torch.no_grad()
    def add_rank_one(self, left_in: torch.Tensor, right_out: torch.Tensor) -> None:
        """W += outer(right_out, left_in) in the module's own layout ([out, in] Linear, [in, out] Conv1D)."""
        w = self.module.weight
        delta = torch.outer(left_in, right_out) if self.transposed else torch.outer(right_out, left_in)
        w.add_(delta.to(w.dtype))


def resolve_layer(model, layer: int) -> int:
    """Python-style index (negative counts from the end), checked against the model's depth."""
    n = len(decoder_layers(model))
    if not -n <= layer < n:
        raise ValueError(f"layer={layer} is out of range for a model with {n} layers (use 0..{n - 1} or -1..-{n})")
    return layer % n


def mlp_out(model, layer: int) -> MlpOut:
    idx = resolve_layer(model, layer)
    block = decoder_layers(model)[idx]
    for name in _OUT_NAMES:
        module = block.get_submodule(name) if _has(block, name) else None
        if module is not None:
            return MlpOut(idx, name, module)
    raise ValueError(f"no MLP output projection ({', '.join(_OUT_NAMES)}) in layer {idx} of this model")


def _has(block: torch.nn.Module, name: str) -> bool:
    try:
        block.get_submodule(name)
        return True
    except AttributeError:
        return False


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """bos + prompt tokens, exactly as pipelines.lm.encode_qa builds the prompt part."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def collect_keys(
    model,
    tokenizer,
    target: MlpOut,
    texts: Sequence[str],
    max_tokens: int,
    last_only: bool = False,
    batch_size: int = 64,
):
    """Inputs of the projection on real tokens (padding dropped), up to max_tokens rows [n, in].

    last_only keeps just each text's final token: the position where a prompt's answer is read.
    """
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    count = 0
    captured: dict[str, torch.Tensor] = {}
    handle = target.module.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
    try:
        for start in range(0, len(texts), batch_size):
            chunk = [prompt_ids(tokenizer, t) for t in texts[start : start + batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, c in enumerate(chunk):
                ids[i, : len(c)] = torch.tensor(c)
                mask[i, : len(c)] = 1
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            if last_only:
                last = torch.tensor([len(c) - 1 for c in chunk], device=device)
                keys = captured["x"][torch.arange(len(chunk), device=device), last].float()
            else:
                keys = captured["x"][mask.to(device).bool()].float()
            rows.append(keys)
            count += keys.shape[0]
            if count >= max_tokens:
                break
    finally:
        handle.remove()
    if not rows:
        raise ValueError("cov_texts gave no tokens: pass general text (a few hundred sentences) for the key covariance")
    return torch.cat(rows)[:max_tokens]
