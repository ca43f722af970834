"""Causal-LM helpers shared by training, editing, unlearning and evaluation.

Facts are (prompt, target) pairs, encoded the way a plain `transformers` caller uses the model: the prompt's ids
are what ``tokenizer(prompt)`` gives (the tokenizer's own leading special tokens, a BOS only where the tokenizer
adds one), and the answer is the continuation that follows them (`answer_text`: one rule for spacing). Only the
answer (and eos, when training) carries loss. Exact match is checked by teacher forcing: when every answer token is
the argmax given the gold prefix, a greedy ``generate`` on ``tokenizer(prompt)`` produces exactly the answer, and
the check costs one batched forward pass instead of a generation loop.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def pick_device() -> torch.device:
    """GPU when present (production jobs), CPU otherwise; MEMGOV_DEVICE overrides."""
    forced = os.environ.get("MEMGOV_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it (half the memory, same code path), float32 elsewhere; MEMGOV_DTYPE overrides
    (e.g. float32 on a GPU for bit-comparable runs)."""
    forced = os.environ.get("MEMGOV_DTYPE", "").strip()
    if forced:
        dtype = getattr(torch, forced, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"MEMGOV_DTYPE={forced!r} is not a floating-point torch dtype; use float32, bfloat16 or "
                             "float16")
        return dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_causal_lm(path_or_id: str | Path, device: torch.device | None = None):
    """Load any Hugging Face causal LM and its tokenizer, the same way for a folder or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or pick_device()
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
    model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=pick_dtype(device))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer


def save_causal_lm(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass
class EncodedQA:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # -100 outside the target
    target_len: torch.Tensor  # number of target tokens (eos excluded)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


_LEADING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def leading_specials(tokenizer) -> list[int]:
    """The special tokens the tokenizer itself puts in front of a text (Llama's BOS; none for GPT-2's byte-level
    BPE), read from what ``tokenizer(text)`` returns rather than assumed from `bos_token`: a tokenizer that defines
    a BOS but never adds one is used without it. Trailing specials some tokenizers append (an EOS, BERT's [SEP])
    are left off: a prompt is continued, not closed."""
    try:
        return list(_LEADING[tokenizer])
    except (KeyError, TypeError):
        pass
    lead: list[int] = []
    for probe in ("a", "Hello world", "0"):  # the first text the tokenizer gives tokens for
        full, plain = tokenizer(probe)["input_ids"], _ids(tokenizer, probe)
        if plain:
            lead = next((full[:i] for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), [])
            break
    try:
        _LEADING[tokenizer] = tuple(lead)
    except TypeError:
        pass
    return list(lead)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The ids a plain caller feeds the model for `prompt`: ``tokenizer(prompt)`` without trailing specials. A text
    that already opens with the BOS token's text (a chat template writes it) is not given a second one, as
    ``apply_chat_template(..., tokenize=True)`` does not."""
    bos = getattr(tokenizer, "bos_token", None)
    lead = [] if isinstance(bos, str) and bos and prompt.startswith(bos) else leading_specials(tokenizer)
    return lead + _ids(tokenizer, prompt)


def answer_text(prompt: str, target: str) -> str:
    """The one spacing rule: the answer is the target with its surrounding whitespace removed, and it continues the
    prompt after one space, unless the prompt already ends with whitespace (a chat template's generation prompt,
    "Q: …\nA: "). So "Paris" and " Paris" are the same answer, and a README-style leading space never doubles."""
    answer = target.strip()
    return answer if not prompt or prompt[-1].isspace() else " " + answer


def answer_ids(tokenizer, prompt: str, target: str) -> list[int]:
    """The answer's tokens as they follow the prompt's: the tokens of prompt + answer beyond those of the prompt
    alone (a SentencePiece or WordPiece tokenizer splits a word differently at the start of a text than after
    another word). Where the two tokenizations disagree at the boundary, the answer is tokenized on its own."""
    alone = _ids(tokenizer, prompt)
    whole = _ids(tokenizer, prompt + answer_text(prompt, target))
    if whole[: len(alone)] == alone and len(whole) > len(alone):
        return whole[len(alone) :]
    return _ids(tokenizer, answer_text(prompt, target))


def prompt_format(tokenizer) -> str:
    """How prompts reach the model, in words for `memgov init` and the card: the leading specials the tokenizer
    adds, the spacing rule, and whether instruction rows go through a chat template."""
    lead = leading_specials(tokenizer)
    names = " ".join(tokenizer.convert_ids_to_tokens(lead)) if lead else ""
    head = f"tokenizer(prompt) puts {names} in front" if lead else "tokenizer(prompt) adds no special token"
    chat = ("; instruction rows through its chat template" if getattr(tokenizer, "chat_template", None)
            else "; instruction rows as written (no chat template)")
    return f"{head}; the answer follows after one space unless the prompt ends with whitespace{chat}"


def encode_qa(tokenizer, prompts: Sequence[str], targets: Sequence[str], with_eos: bool = True) -> EncodedQA:
    """Right-padded batch where labels cover the answer tokens (and eos when asked)."""
    rows, label_rows, tlens = [], [], []
    eos = [tokenizer.eos_token_id] if with_eos and tokenizer.eos_token_id is not None else []
    for prompt, target in zip(prompts, targets, strict=True):
        p = prompt_ids(tokenizer, prompt)
        t = answer_ids(tokenizer, prompt, target) if target.strip() else []
        ids = p + t + eos
        rows.append(ids)
        label_rows.append([-100] * len(p) + t + eos)
        tlens.append(len(t))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, label_rows, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return EncodedQA(input_ids, mask, labels, torch.tensor(tlens))


def encode_texts(tokenizer, texts: Sequence[str]) -> EncodedQA:
    """Plain language-modelling batch: the tokenizer's leading specials, the text, eos; every token after the
    first carries loss."""
    lead = leading_specials(tokenizer)
    return encode_token_rows(tokenizer, [lead + _ids(tokenizer, t) + [tokenizer.eos_token_id] for t in texts])


def text_windows(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each text as leading specials + tokens + eos, cut into windows of at most max_tokens (each window after the
    first gets the leading specials again), so that a long document trains within the model's context."""
    bos = leading_specials(tokenizer)
    step = max(1, max_tokens - len(bos))
    windows: list[list[int]] = []
    for text in texts:
        ids = _ids(tokenizer, text) + [tokenizer.eos_token_id]
        windows += [bos + ids[i : i + step] for i in range(0, len(ids), step)]
    return windows


def encode_token_rows(tokenizer, rows: Sequence[list[int]]) -> EncodedQA:
    """Right-padded language-modelling batch of token id rows: every token after the first carries loss."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, 1 : len(ids)] = torch.tensor(ids[1:])
        mask[i, : len(ids)] = 1
    return EncodedQA(input_ids, mask, labels, torch.tensor([len(r) - 1 for r in rows]))


def per_example_loss(model, batch: EncodedQA) -> torch.Tensor:
    """Mean next-token cross-entropy over each example's labelled tokens (differentiable)."""
    device = next(model.parameters()).device
    logits = model(
        input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
    ).logits
    logits = logits[:, :-1].float()
    labels = batch.labels[:, 1:].to(device)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    valid = (labels != -100).float()
    return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)


@dataclass
class QAScores:
    exact_match: np.ndarray  # bool per example
    logprob: np.ndarray  # summed log-probability of the target tokens
    n_tokens: np.ndarray
    n_correct: np.ndarray | None = None  # target tokens that are the argmax given the gold prefix

    @property
    def mean_logprob(self) -> np.ndarray:
        return self.logprob / np.maximum(self.n_tokens, 1)

    @property
    def token_accuracy(self) -> np.ndarray:
        """Share of each target's tokens predicted given the gold prefix: exact match's partial credit."""
        correct = self.n_correct if self.n_correct is not None else self.exact_match * self.n_tokens
        return correct / np.maximum(self.n_tokens, 1)


@torch.no_grad()
def score_qa(model, tokenizer, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 256) -> QAScores:
    """Exact match and target log-likelihood for each (prompt, target), eos excluded."""
    was_training = model.training
    model.eval()
    em, lp, nt, nc = [], [], [], []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = encode_qa(tokenizer, prompts[start : start + batch_size], targets[start : start + batch_size], with_eos=False)
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).logits[:, :-1].float()
        labels = batch.labels[:, 1:].to(device)
        valid = labels != -100
        logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        hit = (logits.argmax(-1) == labels) | ~valid
        em.append(hit.all(1).cpu().numpy())
        lp.append((logp * valid).sum(1).cpu().numpy())
        nt.append(valid.sum(1).cpu().numpy())
        nc.append((hit & valid).sum(1).cpu().numpy())
    if was_training:
        model.train()
    if not em:
        return QAScores(np.zeros(0, bool), np.zeros(0), np.zeros(0, int), np.zeros(0, int))
    return QAScores(np.concatenate(em), np.concatenate(lp), np.concatenate(nt), np.concatenate(nc))


def exact_match(model, tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    return score_qa(model, tokenizer, prompts, targets).exact_match


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int | Sequence[int] = 4) -> list[str]:
    """Greedy continuation of each prompt up to eos: what a user of the model would see. max_new_tokens is one
    budget for all prompts or one per prompt (a long reference answer needs a longer budget)."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts):
        raise ValueError(f"max_new_tokens: {len(budgets)} budgets for {len(prompts)} prompts")
    was_training = model.training
    model.eval()
    answers = [_greedy(model, tokenizer, prompt, budget) for prompt, budget in zip(prompts, budgets, strict=True)]
    if was_training:
        model.train()
    return answers


def _greedy(model, tokenizer, prompt: str, budget: int) -> str:
    """One greedy decode, the whole sequence re-read each step (no key/value cache: its call shape differs across
    transformers releases, and answers are short)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=device)
    out: list[int] = []
    for _ in range(budget):
        nxt = int(model(input_ids=ids).logits[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], 1)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def answer_budget(tokenizer, reference: str, slack: int = 2) -> int:
    """Tokens to generate for an answer scored against `reference`: its length plus a little, so a model that
    runs on past the reference is caught while one that stops at eos is never cut short."""
    return len(_ids(tokenizer, answer_text("x", reference))) + slack


@torch.no_grad()
def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 128) -> float:
    """Token-weighted perplexity on general text: the utility check of a candidate."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        batch = encode_texts(tokenizer, texts[start : start + batch_size])
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).logits[:, :-1].float()
        labels = batch.labels[:, 1:].to(device)
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(nll)
        count += int((labels != -100).sum())
    return math.exp(total / max(count, 1))
