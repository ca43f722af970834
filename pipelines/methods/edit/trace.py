"""Causal tracing: which layer's MLP carries a fact, read where an edit would write it (ROME, Meng et al. 2022, §2).

For each fact the model recalls, over `samples` noise draws:

- clean run: P(answer | prompt), the whole answer teacher-forced;
- corrupted run: Gaussian noise of `noise_scale` times the standard deviation of the token embeddings added to the
  embeddings of the subject's tokens, so the model no longer knows whom the prompt is about;
- corrupted run with one layer's MLP restored: that layer's MLP output at the traced position (the subject's last
  token, as in the paper, or the prompt's last token) replaced by its clean value.

The indirect effect of a layer is P(restored) - P(corrupted), averaged over draws and facts: how much of the fact
that MLP alone brings back. ROME writes at the layer where it peaks. As in the paper, a window of adjacent layers
can be restored together (`window`; the paper uses 10 on 48-layer models, 1 suits models of a few layers).

Where this deviates from the paper, and why: the noise scale is measured over the vocabulary's embedding matrix, not
over the subject tokens of a corpus (no corpus is assumed); the answer's probability is that of every answer token,
not only the first, because memgov scores exact match of the whole answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from pipelines.methods.edit.anatomy import decoder_layers, mlp_out, prompt_ids, subject_span
from pipelines.model.lm import encode_qa

Position = Literal["subject", "last"]


@dataclass
class LayerTrace:
    """Average indirect effect per decoder layer, and what it rests on."""

    effects: list[float]
    clean: float
    corrupted: float
    facts: int
    position: Position
    window: int
    skipped: list[str] = field(default_factory=list)  # prompts that could not be traced, with why

    @property
    def best_layer(self) -> int:
        return max(range(len(self.effects)), key=lambda i: self.effects[i])

    @property
    def informative(self) -> bool:
        """Some layer brings part of the answer back (else the peak is an artefact of ties at zero)."""
        return max(self.effects) > 0.0

    def to_dict(self) -> dict:
        return {"effects": [round(e, 6) for e in self.effects], "best_layer": self.best_layer,
                "informative": self.informative, "facts": self.facts,
                "clean": round(self.clean, 6), "corrupted": round(self.corrupted, 6), "position": self.position,
                "window": self.window, "skipped": self.skipped}


def embedding_noise_std(model) -> float:
    """Standard deviation of the token embedding matrix's entries (the scale noise is measured in)."""
    return float(model.get_input_embeddings().weight.detach().float().std())


@torch.no_grad()
def trace_fact(model, tokenizer, prompt: str, answer: str, subject: str, *, samples: int = 10,
               noise_scale: float = 3.0, window: int = 1, position: Position = "subject",
               seed: int = 0) -> tuple[list[float], float, float]:
    """(indirect effect per layer, clean probability, corrupted probability) of one fact.

    Raises ValueError when the prompt does not contain the subject (nothing to corrupt)."""
    span = subject_span(tokenizer, prompt, subject)
    if not span:
        raise ValueError(f"the prompt {prompt!r} does not contain its subject {subject!r}")
    n_prompt = len(prompt_ids(tokenizer, prompt))
    pos = span[-1] if position == "subject" else n_prompt - 1
    device = next(model.parameters()).device
    batch = encode_qa(tokenizer, [prompt], [answer], with_eos=False)
    ids = batch.input_ids.to(device)
    labels = batch.labels[:, 1:].to(device)
    layers = len(decoder_layers(model))
    projections = [mlp_out(model, layer).module for layer in range(layers)]

    def answer_prob(input_ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids).logits[:, :-1].float()
        lab = labels.expand(input_ids.shape[0], -1)
        valid = lab != -100
        logp = torch.log_softmax(logits, -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * valid).sum(1).exp()

    clean_out: dict[int, torch.Tensor] = {}
    hooks = [proj.register_forward_hook(lambda _m, _a, out, i=i: clean_out.__setitem__(i, out[0, pos].clone()))
             for i, proj in enumerate(projections)]
    try:
        clean = float(answer_prob(ids)[0])
    finally:
        for h in hooks:
            h.remove()

    generator = torch.Generator(device="cpu").manual_seed(seed)
    embed = model.get_input_embeddings()
    noise = torch.randn((samples, len(span), embed.embedding_dim), generator=generator)
    noise = (noise * noise_scale * embedding_noise_std(model)).to(device)
    positions = torch.tensor(span, device=device)

    def corrupt(_m, _a, out):
        out = out.clone()
        out[:, positions] += noise.to(out.dtype)
        return out

    many = ids.expand(samples, -1)
    handle = embed.register_forward_hook(corrupt)
    try:
        corrupted = float(answer_prob(many).mean())
        effects = []
        for layer in range(layers):
            lo, hi = max(0, layer - (window - 1) // 2), min(layers, layer + window // 2 + 1)
            restored = [projections[i].register_forward_hook(lambda _m, _a, out, i=i: _restored(out, pos, clean_out[i]))
                        for i in range(lo, hi)]
            try:
                effects.append(float(answer_prob(many).mean()) - corrupted)
            finally:
                for h in restored:
                    h.remove()
    finally:
        handle.remove()
    return effects, clean, corrupted


def _restored(out: torch.Tensor, pos: int, clean: torch.Tensor) -> torch.Tensor:
    """The projection's output with its clean value put back at `pos`."""
    out = out.clone()
    out[:, pos] = clean.to(out.dtype)
    return out


def trace_layers(model, tokenizer, facts: Sequence[Mapping], *, samples: int = 10, noise_scale: float = 3.0,
                 window: int = 1, position: Position = "subject", seed: int = 0) -> LayerTrace:
    """Indirect effect per layer averaged over `facts` (mappings with prompt, target and subject): the answer traced
    is the one the model gives now, so pass facts it recalls (for an edit: its previous_target)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    was_training = model.training
    model.eval()
    rows, skipped = [], []
    try:
        for n, fact in enumerate(facts):
            prompt, answer, subject = fact.get("prompt"), fact.get("target"), fact.get("subject")
            if not (isinstance(prompt, str) and isinstance(answer, str) and answer.strip()):
                skipped.append(f"{prompt!r}: no prompt or answer")
                continue
            try:
                rows.append(trace_fact(model, tokenizer, prompt, answer, subject or "", samples=samples,
                                       noise_scale=noise_scale, window=window, position=position, seed=seed + n))
            except ValueError as exc:
                skipped.append(str(exc))
    finally:
        if was_training:
            model.train()
    if not rows:
        raise ValueError("no fact could be traced: give facts whose prompts contain their subject ("
                         + "; ".join(skipped[:3]) + ")")
    layers = len(rows[0][0])
    effects = [sum(r[0][i] for r in rows) / len(rows) for i in range(layers)]
    return LayerTrace(effects, sum(r[1] for r in rows) / len(rows), sum(r[2] for r in rows) / len(rows), len(rows),
                      position, window, skipped)
