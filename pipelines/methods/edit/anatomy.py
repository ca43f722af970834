"""Where the editable weights live in a causal LM, and how to read their activations.

A rank-one edit writes into the output projection of one MLP (GPT-2 ``mlp.c_proj``, Llama
``mlp.down_proj``, NeoX ``mlp.dense_4h_to_h``, OPT ``fc2``), located through the architecture table
in pipelines/model/architectures.py. GPT-2 stores that weight as Conv1D ``[in, out]`` while the others use
``nn.Linear`` ``[out, in]``; :class:`MlpOut` hides the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipelines.methods.update.lora_tools import is_conv1d
from pipelines.model.architectures import GUESS_MLP_OUT, UnknownArchitecture, resolve_architecture
from pipelines.model.architectures import decoder_layers as _table_layers


def decoder_layers(model, allow_guess: bool = False) -> torch.nn.ModuleList:
    """The stack of transformer blocks, at the path the architecture table gives for this family.

    allow_guess: for a family missing from the table, the ModuleList whose length is the configured layer count.
    """
    return _table_layers(model, allow_guess=allow_guess)


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


def resolve_layer(model, layer: int, allow_guess: bool = False) -> int:
    """Python-style index (negative counts from the end), checked against the model's depth."""
    n = len(decoder_layers(model, allow_guess))
    if not -n <= layer < n:
        raise ValueError(f"layer={layer} is out of range for a model with {n} layers (use 0..{n - 1} or -1..-{n})")
    return layer % n


def mlp_out(model, layer: int, allow_guess: bool = False) -> MlpOut:
    """The MLP output projection of one decoder layer, named by the architecture table.

    allow_guess: for a family missing from the table, the first of GUESS_MLP_OUT present in the block.
    """
    idx = resolve_layer(model, layer, allow_guess)
    block = decoder_layers(model, allow_guess)[idx]
    try:
        names: tuple[str, ...] = (resolve_architecture(model).mlp_out,)
    except UnknownArchitecture:
        names = GUESS_MLP_OUT
    for name in names:
        if _has(block, name):
            return MlpOut(idx, name, block.get_submodule(name))
    model_type = model.config.model_type
    raise ValueError(
        f"no MLP output projection ({', '.join(names)}) in layer {idx} of this {model_type!r} model; "
        f"fix: set mlp_out of the {model_type!r} line in pipelines/model/architectures.py to the projection's name"
    )


def _has(block: torch.nn.Module, name: str) -> bool:
    try:
        block.get_submodule(name)
        return True
    except AttributeError:
        return False


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids exactly as pipelines.model.lm.encode_qa builds the prompt part (the tokenizer's own specials)."""
    from pipelines.model.lm import prompt_ids as lm_prompt_ids

    return lm_prompt_ids(tokenizer, prompt)


def subject_span(tokenizer, prompt: str, subject: str | None) -> list[int] | None:
    """Indices, in `prompt_ids(tokenizer, prompt)`, of the tokens of the subject's first mention in the prompt, or
    None when the prompt does not contain it or the tokenizer gives no character offsets."""
    if not subject or not subject.strip() or subject not in prompt:
        return None
    start = prompt.index(subject)
    end = start + len(subject)
    try:
        offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, KeyError, ValueError):  # a slow tokenizer: no offsets
        return None
    inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if not inside:
        return None
    lead = len(prompt_ids(tokenizer, prompt)) - len(offsets)
    return [lead + i for i in inside]


def subject_position(tokenizer, prompt: str, subject: str | None) -> int | None:
    """Index of the last token of the subject's first mention in the prompt (where ROME reads the key that names the
    subject), or None (see `subject_span`)."""
    span = subject_span(tokenizer, prompt, subject)
    return span[-1] if span else None


@torch.no_grad()
def keys_at(model, tokenizer, target: MlpOut, prompts: Sequence[str], positions: Sequence[int | None]) -> torch.Tensor:
    """The projection's input at one position of each prompt (None: its last token), [n, in]: the keys of facts
    an edit must leave alone, read where their own edit would read them."""
    device = next(model.parameters()).device
    captured: dict[str, torch.Tensor] = {}
    handle = target.module.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
    rows = []
    try:
        for prompt, pos in zip(prompts, positions, strict=True):
            ids = prompt_ids(tokenizer, prompt)
            model(input_ids=torch.tensor([ids], device=device))
            rows.append(captured["x"][0, len(ids) - 1 if pos is None else pos].float())
    finally:
        handle.remove()
    return torch.stack(rows) if rows else torch.zeros(0, target.in_features, device=device)


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
            if captured["x"].dim() != 3:
                raise ValueError(
                    f"rank-one edits read per-token activations [batch, tokens, features] at {target.name}, but this "
                    f"{model.config.model_type!r} model feeds it {list(captured['x'].shape)}; fix: use "
                    "edit.method finetune_edit for this model"
                )
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
        raise ValueError("key_texts gave no tokens: pass general text (a few hundred sentences) for the key covariance")
    return torch.cat(rows)[:max_tokens]
