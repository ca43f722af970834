"""Where LoRA adapters and rank-one edits attach in each causal-LM family, keyed by ``config.model_type``.

Guessing module names from shapes silently adapts the wrong layers on a family nobody checked, so the
engine resolves them from this table and names the architecture when it is missing. Supporting a new
family is one line: its LoRA targets (attention and MLP projections), the dotted path of the decoder
ModuleList inside the causal-LM model, and the MLP output projection inside one block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Architecture:
    """How one model family is laid out.

    lora_targets: module-name suffixes PEFT adapts (attention + MLP projections).
    layers_path: dotted path from the causal-LM model to the ModuleList of decoder blocks.
    mlp_out: path inside one block of the MLP output projection, the weight a rank-one edit writes.
    edit_depth: fraction of the depth where the default edit layer sits (mid-early MLPs hold facts).
    rank_one_edits: whether ROME applies: it reads per-token activations, so the MLP must see [batch, tokens, features]
        (OPT flattens them to [tokens, features]; fine-tuning edits of mlp_out still work there).
    """

    name: str
    lora_targets: tuple[str, ...]
    layers_path: str
    mlp_out: str
    edit_depth: float = 1 / 3
    rank_one_edits: bool = True

    def edit_layer(self, n_layers: int) -> int:
        """The layer at about edit_depth of n_layers; never the embedding-adjacent layer 0 unless it is the only one."""
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if n_layers == 1:
            return 0
        return min(n_layers - 1, max(1, round(n_layers * self.edit_depth)))


_GATED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("gpt2", ("c_attn", "c_proj", "c_fc"), "transformer.h", "mlp.c_proj"),
        Architecture("llama", _GATED, "model.layers", "mlp.down_proj"),
        Architecture("mistral", _GATED, "model.layers", "mlp.down_proj"),
        Architecture("qwen2", _GATED, "model.layers", "mlp.down_proj"),
        Architecture("qwen3", _GATED, "model.layers", "mlp.down_proj"),
        Architecture("gemma", _GATED, "model.layers", "mlp.down_proj"),
        Architecture(
            "gpt_neox", ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"), "gpt_neox.layers",
            "mlp.dense_4h_to_h",
        ),
        Architecture(
            "opt", ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"), "model.decoder.layers", "fc2",
            rank_one_edits=False,
        ),
        Architecture("phi", ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"), "model.layers", "mlp.fc2"),
    )
}

# Output-projection names tried, in order, on a family missing from the table when the caller allows a guess.
GUESS_MLP_OUT = ("mlp.c_proj", "mlp.down_proj", "mlp.dense_4h_to_h", "fc2", "mlp.fc2", "feed_forward.w2")


class UnknownArchitecture(ValueError):
    """A model family missing from ARCHITECTURES; the message says how to proceed."""

    def __init__(self, model_type: str | None) -> None:
        self.model_type = model_type
        super().__init__(
            f"unknown model architecture {model_type!r} (config.model_type): memgov knows where to attach LoRA "
            f"adapters and edits only for {', '.join(sorted(ARCHITECTURES))}. Fix: set update.params.target_modules "
            "(and unlearning.params.target_modules) and edit.params.layer in the policy, or add a line for "
            f"{model_type!r} to ARCHITECTURES in pipelines/model/architectures.py (its lora_targets, layers_path and mlp_out)"
        )


def model_type_of(model_or_config: Any) -> str | None:
    """config.model_type of a model (plain or PEFT-wrapped), a config, or a model_type string."""
    if isinstance(model_or_config, str):
        return model_or_config
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None)


def resolve_architecture(model_or_config: Any) -> Architecture:
    """The table entry for this model or config; UnknownArchitecture names the type and the fix."""
    model_type = model_type_of(model_or_config)
    if model_type not in ARCHITECTURES:
        raise UnknownArchitecture(model_type)
    return ARCHITECTURES[model_type]


def n_layers_of(model_or_config: Any) -> int:
    """Configured number of decoder layers (num_hidden_layers, or GPT-2's n_layer)."""
    config = getattr(model_or_config, "config", model_or_config)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"config of model type {model_type_of(config)!r} has no num_hidden_layers / n_layer")
    return n


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper, where layers_path applies."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _guess_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    n = n_layers_of(model)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} decoder layers of this {model_type_of(model)!r} model")


def decoder_layers(model: torch.nn.Module, allow_guess: bool = False) -> torch.nn.ModuleList:
    """The ModuleList of decoder blocks at the family's layers_path.

    allow_guess: for a family missing from the table, take the first ModuleList whose length is the configured
    layer count instead of raising UnknownArchitecture (for callers given explicit settings by the policy).
    """
    base = _unwrapped(model)
    try:
        arch = resolve_architecture(base)
    except UnknownArchitecture:
        if allow_guess:
            return _guess_layers(base)
        raise
    try:
        layers = base.get_submodule(arch.layers_path)
    except AttributeError:
        raise ValueError(
            f"this {arch.name} model has no {arch.layers_path!r}: load it with AutoModelForCausalLM, or fix "
            f"layers_path for {arch.name!r} in pipelines/model/architectures.py"
        ) from None
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{arch.layers_path!r} of this {arch.name} model is a {type(layers).__name__}, not a ModuleList")
    return layers


def default_edit_layer(model_or_config: Any) -> int:
    """The decoder layer a rank-one edit targets when the policy names none (about 1/3 of the depth)."""
    return resolve_architecture(model_or_config).edit_layer(n_layers_of(model_or_config))
