"""Adapt-∞ building blocks: gradient sketches of facts, pseudo-skill clusters, and the selector experts.

A sketch is the gradient of a fact's training loss with respect to the B matrices of a fresh rank-r LoRA adapter on a
few MLP output projections. At init B = 0, so dL/dB = (dL/dW) A^T for the adapter's random A: the direction the first
LoRA step would move for this fact. For a linear layer y = W x the per-sample gradient is sum_t delta_t x_t^T, so one
batched forward and backward (an additive zero probe on each layer's output gives delta, a forward hook gives x)
yields every sample's exact gradient on any causal LM, with no per-sample loop and no functional rewrite of the model.
A seeded Gaussian projection brings the flattened B gradients down to `sketch_dim` numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch

EXPERTS = ("loss", "el2n", "grad_norm", "density")


@dataclass
class Sketches:
    vectors: np.ndarray  # (n, sketch_dim) float32: projected LoRA-B gradients
    grad_norm: np.ndarray  # (n,) Frobenius norm of the unprojected LoRA-B gradients
    modules: list[str] = field(default_factory=list)  # the layers the adapter stands on
    lora_a: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> the adapter's A (rank x in features)
    projection: torch.Tensor | None = None  # (sum over modules of out features x rank, sketch_dim)


def _linear_like(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def adapter_sites(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The MLP output projection of the middle and of the last decoder block (the family's table entry, else the usual
    names, else the block's last linear layer): middle layers carry skills, the last one the answer itself."""
    from pipelines.model.architectures import GUESS_MLP_OUT, UnknownArchitecture, decoder_layers, resolve_architecture

    layers = decoder_layers(model, allow_guess=True)
    try:
        names: tuple[str, ...] = (resolve_architecture(model).mlp_out, *GUESS_MLP_OUT)
    except UnknownArchitecture:
        names = GUESS_MLP_OUT
    where = {id(m): n for n, m in model.named_modules()}
    sites: list[tuple[str, torch.nn.Module]] = []
    for i in sorted({len(layers) // 2, len(layers) - 1}):
        block = layers[i]
        module = None
        for name in names:
            try:
                module = block.get_submodule(name)
                break
            except AttributeError:
                continue
        if module is None or not _linear_like(module):
            linear = [m for _, m in block.named_modules() if _linear_like(m)]
            if not linear:
                raise ValueError(f"decoder block {i} of this {type(model).__name__} has no linear layer to sketch")
            module = linear[-1]
        sites.append((where[id(module)], module))
    return sites


def _gaussian(gen: torch.Generator, rows: int, cols: int, scale: float) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen, dtype=torch.float32) * scale


def gradient_sketches(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], *, sketch_dim: int = 64,
                      lora_rank: int = 8, seed: int = 0, batch_size: int = 32) -> Sketches:
    """Per-fact projected LoRA-B gradients of the training loss (target and eos, as the trainer sees it).

    The same seed gives the same adapter A and projection, hence the same sketch for the same fact."""
    from pipelines.model.lm import encode_qa, per_example_loss

    sites = adapter_sites(model)
    device = next(model.parameters()).device
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def fn(_module, args, output):
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"layer {name} returns {type(output).__name__}, not a tensor")
            probe = torch.zeros_like(output, requires_grad=True)
            captured[name] = (args[0].detach(), probe)
            return output + probe

        return fn

    gen = torch.Generator().manual_seed(int(seed))
    lora_a: dict[str, torch.Tensor] = {}
    projection: torch.Tensor | None = None
    vectors: list[np.ndarray] = []
    norms: list[np.ndarray] = []
    handles = [module.register_forward_hook(hook(name)) for name, module in sites]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            batch = encode_qa(tokenizer, list(prompts[start:start + batch_size]), list(targets[start:start + batch_size]))
            b = batch.input_ids.shape[0]
            captured.clear()
            with torch.enable_grad():
                losses = per_example_loss(model, batch)
                probes = [captured[name][1] for name, _ in sites]
                deltas = torch.autograd.grad(losses.sum(), probes, allow_unused=True)
            parts = []
            for (name, _), delta, probe in zip(sites, deltas, probes, strict=True):
                x = captured[name][0].float()
                x = x.reshape(b, -1, x.shape[-1])
                d = (torch.zeros_like(probe) if delta is None else delta).float().reshape(b, -1, probe.shape[-1])
                if name not in lora_a:  # drawn in site order on the first batch: fixed by the seed
                    lora_a[name] = _gaussian(gen, lora_rank, x.shape[-1], x.shape[-1] ** -0.5).to(device)
                xa = x @ lora_a[name].T  # (b, tokens, r)
                parts.append(torch.einsum("bto,btr->bor", d, xa).reshape(b, -1))
            grads = torch.cat(parts, 1)
            if projection is None:
                projection = _gaussian(gen, grads.shape[1], sketch_dim, sketch_dim ** -0.5).to(device)
            norms.append(grads.norm(dim=1).cpu().numpy())
            vectors.append((grads @ projection).cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
        captured.clear()
        if was_training:
            model.train()
    names = [n for n, _ in sites]
    if not vectors:
        return Sketches(np.zeros((0, sketch_dim), np.float32), np.zeros(0, np.float32), names)
    return Sketches(np.concatenate(vectors).astype(np.float32), np.concatenate(norms).astype(np.float32), names,
                    lora_a, projection)


def kmeans_skills(vectors: np.ndarray, k: int | None, seed: int) -> list[str]:
    """Pseudo-skill per row: spherical FAISS k-means on the unit-length sketches (the gradient's direction, not its
    size, says which skill a fact exercises). k defaults to round(sqrt(n / 2)). Labels are numbered in order of first
    appearance, so they do not depend on FAISS's centroid order."""
    n = len(vectors)
    if n == 0:
        return []
    k = min(n, k or max(1, round((n / 2) ** 0.5)))
    if k == 1:
        return ["skill_0"] * n
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = faiss.Kmeans(x.shape[1], k, niter=25, nredo=5, seed=int(seed), spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, n))
    km.train(x)
    _, assign = km.index.search(x, 1)
    names: dict[int, str] = {}
    return [names.setdefault(int(c), f"skill_{len(names)}") for c in assign[:, 0]]


@torch.no_grad()
def el2n_scores(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """EL2N: ||softmax - one_hot(target)||_2 per target token, averaged over the target (eos excluded)."""
    from pipelines.model.lm import encode_qa

    out: list[np.ndarray] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        batch = encode_qa(tokenizer, list(prompts[start:start + batch_size]), list(targets[start:start + batch_size]),
                          with_eos=False)
        logits = model(input_ids=batch.input_ids.to(device),
                       attention_mask=batch.attention_mask.to(device)).logits[:, :-1].float()
        labels = batch.labels[:, 1:].to(device)
        valid = labels != -100
        p = torch.softmax(logits, -1)
        p_y = p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        err = ((p * p).sum(-1) - 2 * p_y + 1).clamp(min=0).sqrt()
        out.append(((err * valid).sum(1) / valid.sum(1).clamp(min=1)).cpu().numpy())
    if was_training:
        model.train()
    return np.concatenate(out) if out else np.zeros(0)


def density_scores(vectors: np.ndarray, k: int = 5) -> np.ndarray:
    """Minus the mean cosine to a row's k nearest other rows (FAISS inner product on unit vectors): isolated rows,
    which add what the others do not, score high."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n)
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    kk = min(k, n - 1)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, ids = index.search(x, kk + 1)
    out = np.empty(n)
    for i in range(n):
        others = sims[i][ids[i] != i][:kk]
        out[i] = -float(others.mean())
    return out


@cache
def _shared_embedder() -> Any:
    """One MiniLM per process; its text cache is off so no vector of a later-forgotten text stays behind."""
    from pipelines.data.rag.embedder import Embedder

    return Embedder(cache_size=0)


def embed_texts(texts: Sequence[str]) -> np.ndarray:
    """Unit-length MiniLM sentence vectors (the project's embedder)."""
    return _shared_embedder().encode(list(texts))


def expert_quality(scores: np.ndarray, sketches: np.ndarray, fit: np.ndarray, held: np.ndarray, k: int) -> float:
    """How much training on the expert's picks would lower the loss of rows it did not see.

    The expert ranks the fit rows and picks its top k; one LoRA step on them lowers the held-out rows' mean NLL by
    about lr * <mean gradient of the picks, mean gradient of the held-out rows> (first order), measured in sketch
    space. Known held-out rows have small gradients and count little; picks the model already knows move nothing."""
    top = fit[np.argsort(-scores[fit], kind="stable")[:k]]
    return float(sketches[top].mean(0) @ sketches[held].mean(0))


def choose_expert(scores: dict[str, np.ndarray], sketches: np.ndarray, rows: np.ndarray, holdout_share: float,
                  select_share: float, rng: np.random.Generator) -> tuple[str, dict[str, float]] | None:
    """The expert with the highest `expert_quality` on a held-out slice of `rows` (ties: the first listed);
    None when fewer than two rows leave nothing to hold out."""
    n = len(rows)
    if n < 2:
        return None
    order = rows[rng.permutation(n)]
    n_held = min(n - 1, max(1, round(holdout_share * n)))
    held, fit = order[:n_held], np.sort(order[n_held:])
    k = min(len(fit), max(1, round(select_share * len(fit))))
    qualities = {name: expert_quality(s, sketches, fit, held, k) for name, s in scores.items()}
    best = max(qualities, key=lambda name: qualities[name])  # max keeps the first of equal values
    return best, qualities


__all__ = ["EXPERTS", "Sketches", "adapter_sites", "choose_expert", "density_scores", "el2n_scores", "embed_texts",
           "expert_quality", "gradient_sketches", "kmeans_skills"]
