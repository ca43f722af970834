"""Linear representation probe: is forgotten knowledge still linearly readable from the hidden states?

Unlearning can suppress an answer at the output while the model still computes it inside. The probe reads
the hidden states at the last prompt token (every layer after the embeddings, concatenated), fits a ridge
regression from them onto the answer's token embedding on facts the model keeps, and decodes an answer by the
nearest candidate embedding. Its accuracy on facts of the same kind the model never saw is the floor (what
the relation alone gives away); the forget set's excess over that floor is what is still recoverable.

Why regression onto embeddings rather than a classifier over answers: with ~60 answers and a few hundred
training facts, a multinomial classifier memorises its training subjects (measured on the demo world: 0.17
held-out accuracy on known facts vs 0.05 on never-seen ones) while the embedding target shares strength
across answers (0.27-0.30 vs 0.02-0.05), so the probe has room to show a drop after unlearning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

QA = dict[str, Any]


def prompt_states(model, tokenizer, prompts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Hidden states of every layer after the embeddings at each prompt's last token, concatenated."""
    import torch

    from pipelines.model.lm import encode_qa

    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            batch = encode_qa(tokenizer, chunk, [""] * len(chunk), with_eos=False)
            mask = batch.attention_mask
            hidden = model(input_ids=batch.input_ids.to(device), attention_mask=mask.to(device),
                           output_hidden_states=True).hidden_states[1:]
            rows, last = torch.arange(len(chunk), device=device), (mask.sum(1) - 1).to(device)
            out.append(torch.cat([h[rows, last] for h in hidden], dim=1).float().cpu().numpy())
    if was_training:
        model.train()
    return np.concatenate(out) if out else np.zeros((0, 0))


def _answer_embedding(model, tokenizer, target: str) -> np.ndarray:
    from pipelines.model.lm import answer_text

    ids = tokenizer(answer_text("x", target), add_special_tokens=False)["input_ids"]
    return model.get_output_embeddings().weight[ids].detach().float().mean(0).cpu().numpy()


def more_hits_p(hits: int, n: int, other_hits: int, other_n: int) -> float:
    """One-sided Fisher exact test: the chance of `hits` or more of `n` if both groups read equally well.

    On a forget set of five facts one lucky read is an excess of 0.2 over a floor near zero; the p-value says
    whether that is evidence of residual knowledge (1 of 5 against 1 of 60: p = 0.15) or not yet (2 of 5: 0.014)."""
    total, drawn = n + other_n, hits + other_hits
    if n == 0 or drawn == 0:
        return 1.0
    denominator = math.comb(total, n)
    return min(1.0, sum(math.comb(drawn, k) * math.comb(total - drawn, n - k)
                        for k in range(hits, min(n, drawn) + 1)) / denominator)


@dataclass
class ProbeResult:
    forget_accuracy: float
    unseen_accuracy: float
    train_accuracy: float
    n_train: int
    n_candidates: int
    n_forget: int = 0
    n_unseen: int = 0

    @property
    def excess(self) -> float:
        """How much better the probe names forgotten answers than never-seen ones (0 = nothing left to read)."""
        return self.forget_accuracy - self.unseen_accuracy

    @property
    def p_value(self) -> float:
        """How likely the forget set's reads are if it were no more readable than never-seen facts."""
        return more_hits_p(round(self.forget_accuracy * self.n_forget), self.n_forget,
                           round(self.unseen_accuracy * self.n_unseen), self.n_unseen)

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "excess": self.excess, "p_value": self.p_value}


def linear_probe(model, tokenizer, retain: Sequence[QA], forget: Sequence[QA], unseen: Sequence[QA],
                 alpha: float = 1.0) -> ProbeResult | None:
    """Fit on `retain`, score on `forget` and on `unseen`; None when a set is empty."""
    from sklearn.linear_model import Ridge

    if not retain or not forget or not unseen:
        return None
    candidates = sorted({q["target"] for q in [*retain, *forget, *unseen]})
    table = np.stack([_answer_embedding(model, tokenizer, c) for c in candidates])
    table /= np.linalg.norm(table, axis=1, keepdims=True).clip(min=1e-12)
    x_train = prompt_states(model, tokenizer, [q["prompt"] for q in retain])
    y_train = np.stack([_answer_embedding(model, tokenizer, q["target"]) for q in retain])
    ridge = Ridge(alpha=alpha).fit(x_train, y_train)

    def accuracy(rows: Sequence[QA], x: np.ndarray | None = None) -> float:
        x = prompt_states(model, tokenizer, [q["prompt"] for q in rows]) if x is None else x
        guess = ridge.predict(x)
        guess /= np.linalg.norm(guess, axis=1, keepdims=True).clip(min=1e-12)
        named = np.array(candidates)[(guess @ table.T).argmax(1)]
        return float(np.mean(named == np.array([q["target"] for q in rows])))

    return ProbeResult(
        forget_accuracy=accuracy(forget),
        unseen_accuracy=accuracy(unseen),
        train_accuracy=accuracy(retain, x_train),
        n_train=len(retain),
        n_candidates=len(candidates),
        n_forget=len(forget),
        n_unseen=len(unseen),
    )


__all__ = ["ProbeResult", "linear_probe", "more_hits_p", "prompt_states"]
