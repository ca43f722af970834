"""A checkpoint's own training recipe: train a causal LM from its config on facts (and text) to a recall target.

Whoever builds a small base model from scratch (the demo does) trains it with `train_on_facts` and writes the
recipe beside the weights (`write_recipe`). A checkpoint that carries its recipe can then be retrained from
scratch without a forget set, the gold-standard comparison for forgetting (pipelines/forget/reference.py);
a checkpoint without one (any hub model) cannot, and forgetting is compared with never-seen facts instead.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.model.knowledge import qa, trainable_paraphrase
from pipelines.model.lm import encode_qa, encode_texts, pick_device, score_qa

RECIPE_FILE = "training_recipe.json"
TEXTS_FILE = "training_texts.jsonl"
GRAD_CLIP = 1.0
MIN_LR_FRACTION = 0.05
CHECK_MARGIN = 0.05  # run the full recall check once running training accuracy is this close to the target
CURRICULUM_GROWTH = 3  # each curriculum stage holds this many times the subjects of the one before
STAGE_RECALL = 0.9  # a curriculum stage ends once its subjects are recalled this well
STAGE_EVAL_ROWS = 500  # a stage's recall check samples at most this many of its rows


class TrainingRecipe(BaseModel):
    """How a from-scratch model was trained: optimiser settings, stopping rule, which prompts of a fact it saw."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    learning_rate: float = Field(3e-3, gt=0, le=1)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(80, ge=1)
    target_recall: float = Field(0.97, gt=0, le=1.01)
    paraphrases_in_training: list[int] = Field(
        default_factory=lambda: [0, 1],
        description="0 = a fact's prompt, k = its k-th paraphrase; a fact's last paraphrase is held out for evaluation "
                    "and never trained on, so k reaching it (or past the fact's paraphrases) adds nothing for that fact")
    curriculum_start: int | None = Field(
        None, ge=1, description="train first on this many subjects, then 3x as many, ..., then on all of them")

    @model_validator(mode="after")
    def _check(self) -> TrainingRecipe:
        if not self.paraphrases_in_training or 0 not in self.paraphrases_in_training:
            raise ValueError("paraphrases_in_training must include 0 (the fact's own prompt), e.g. [0, 1]")
        if any(k < 0 for k in self.paraphrases_in_training):
            raise ValueError("paraphrases_in_training holds prompt indices: 0 = the prompt, k >= 1 = paraphrase k")
        if len(set(self.paraphrases_in_training)) != len(self.paraphrases_in_training):
            raise ValueError("paraphrases_in_training must not repeat an index")
        return self


def write_recipe(folder: Path, recipe: TrainingRecipe, texts: Sequence[str]) -> None:
    """Record beside a checkpoint how it was trained: the recipe and the plain texts it saw besides its facts."""
    folder = Path(folder)
    (folder / RECIPE_FILE).write_text(json.dumps({"recipe": recipe.model_dump(mode="json"), "texts": TEXTS_FILE,
                                                  "facts": "the deployment's admitted fact rows"}, indent=1) + "\n")
    (folder / TEXTS_FILE).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def read_recipe(folder: Path) -> tuple[TrainingRecipe, list[str]] | None:
    """(recipe, texts) a checkpoint folder carries, or None when it carries none (it cannot be retrained)."""
    folder = Path(folder)
    if not (folder / RECIPE_FILE).is_file():
        return None
    spec = json.loads((folder / RECIPE_FILE).read_text())
    texts_path = folder / spec.get("texts", TEXTS_FILE)
    texts = [json.loads(line)["text"] for line in texts_path.read_text().splitlines() if line.strip()] \
        if texts_path.is_file() else []
    return TrainingRecipe(**spec["recipe"]), texts


def recipe_qas(facts: Sequence[dict[str, Any]], recipe: TrainingRecipe) -> list[dict[str, Any]]:
    """The QA rows `recipe` trains on for these fact rows: each fact under its prompt (0) and under each paraphrase
    `paraphrases_in_training` names, never under its held-out last paraphrase (`pipelines.deployment.evalsets.paraphrases`
    scores that one). Ordered by index, then by fact."""
    rows = []
    for k in recipe.paraphrases_in_training:
        for fact in facts:
            prompt = fact["prompt"] if k == 0 else trainable_paraphrase(fact, k)
            if prompt:
                rows.append({**qa(fact), "prompt": prompt})
    return rows


def fresh_from_config(folder: Path, seed: int):
    """(untrained model, tokenizer) of a checkpoint's own architecture and tokenizer, initialised from `seed`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return model, AutoTokenizer.from_pretrained(folder)


def _pool(tokenizer, qa_rows: Sequence[dict], texts: Sequence[str]):
    """One padded tensor set holding QA examples (loss on target + eos) and plain texts (loss on all)."""
    parts = []
    if qa_rows:
        parts.append(encode_qa(tokenizer, [q["prompt"] for q in qa_rows], [q["target"] for q in qa_rows]))
    if texts:
        parts.append(encode_texts(tokenizer, list(texts)))
    width = max(p.input_ids.shape[1] for p in parts)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    ids = torch.cat([pad(p.input_ids, tokenizer.pad_token_id) for p in parts])
    mask = torch.cat([pad(p.attention_mask, 0) for p in parts])
    labels = torch.cat([pad(p.labels, -100) for p in parts])
    return ids, mask, labels


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over one epoch, then linear decay to MIN_LR_FRACTION at max_epochs.

    Measured on the default world: with a constant rate recall oscillates and needs 2-3x the steps;
    the decay (with gradient clipping) lets the last epochs settle on the memorised answers.
    """
    return min(1.0, (step + 1) / warmup) * max(MIN_LR_FRACTION, 1.0 - step / total)


def curriculum(qa_rows: Sequence[dict], cfg: TrainingRecipe) -> list[list[dict]]:
    """Row sets of growing subject subsets, the last one being every row.

    Why: a tiny model sits at chance for a long plateau before it learns to tell thousands of
    syllable-built names apart; on a few hundred subjects it learns that in a few epochs, and later
    subjects are then memorised quickly. Measured at 2,000 subjects (10,000 facts, 2x256 at lr 1e-3,
    2 CPU threads): without stages recall was 0.45 after 120 epochs (53 min); with stages of 200 and
    600 subjects it reached 0.972 after 63 epochs in all (18 min). At 600 subjects: 362 s -> 172 s.
    Rows group by `subject_id` (by `fact_id`, then `id`, where a row has none).
    """
    def subject(row: dict) -> str:
        return str(row.get("subject_id") or row.get("fact_id") or row["id"])

    order = list(dict.fromkeys(subject(r) for r in qa_rows))
    sizes = []
    size = cfg.curriculum_start
    while size is not None and size * CURRICULUM_GROWTH <= len(order):
        sizes.append(size)
        size *= CURRICULUM_GROWTH
    stages = []
    for n in sizes:
        keep = set(order[:n])
        stages.append([r for r in qa_rows if subject(r) in keep])
    return [*stages, list(qa_rows)]


def train_on_facts(
    model,
    tokenizer,
    qa_rows: Sequence[dict],
    texts: Sequence[str],
    cfg: TrainingRecipe,
    progress: bool = True,
    eval_qas: Sequence[dict] | None = None,
) -> dict[str, Any]:
    """Train in place until exact match on `eval_qas` (default: `qa_rows`) reaches cfg.target_recall.

    Also the "retrain from scratch without the forget set" reference: pass a fresh `from_config`
    model and the retained QAs. With `cfg.curriculum_start` the rows are first learnt in growing subject
    subsets (`curriculum`), each to STAGE_RECALL. Returns epochs, steps, seconds, final recall,
    whether the target was met and, for a curriculum, each stage's figures.
    """
    if not qa_rows:
        raise ValueError("qa_rows is empty: give at least one {'prompt', 'target'} dict to train on")
    eval_qas = list(eval_qas) if eval_qas is not None else list(qa_rows)
    device = pick_device()
    model.to(device)
    start = time.perf_counter()
    *warmups, _ = curriculum(qa_rows, cfg)
    stages = []
    for rows in warmups:
        keep = {(r["prompt"], r["target"]) for r in rows}
        check = [q for q in eval_qas if (q["prompt"], q["target"]) in keep] or rows
        check = check[:: max(1, len(check) // STAGE_EVAL_ROWS)][:STAGE_EVAL_ROWS]
        stage = _train_stage(model, tokenizer, rows, texts, cfg, STAGE_RECALL, check, progress, device)
        stages.append({"rows": len(rows), **stage})
    report = _train_stage(model, tokenizer, qa_rows, texts, cfg, cfg.target_recall, eval_qas, progress, device)
    model.eval()
    if stages:
        report["stages"] = stages
        report["epochs"] += sum(s["epochs"] for s in stages)
        report["steps"] += sum(s["steps"] for s in stages)
    report["seconds"] = round(time.perf_counter() - start, 2)
    return {**report, "device": str(device)}


def _train_stage(model, tokenizer, qa_rows, texts, cfg: TrainingRecipe, target: float, eval_qas, progress: bool,
                 device) -> dict[str, Any]:
    """One run of the optimiser over `qa_rows` + `texts`, until exact match on `eval_qas` reaches `target`.

    The full recall check runs only once the running training accuracy is close to the target,
    since on a small CPU it costs a sizeable share of an epoch.
    """
    from tqdm.auto import tqdm

    prompts, targets = [q["prompt"] for q in eval_qas], [q["target"] for q in eval_qas]
    ids, mask, labels = _pool(tokenizer, qa_rows, texts)
    is_qa = torch.arange(ids.shape[0]) < len(qa_rows)
    n = ids.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.max_epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps_per_epoch, total))
    steps, recall, epochs, checks, loss_value = 0, 0.0, 0, 0, float("nan")
    bar = tqdm(range(cfg.max_epochs), desc=f"base model ({len(qa_rows)} QAs)", unit="epoch", disable=not progress,
               leave=False)
    for _ in bar:
        epochs += 1
        model.train()
        order = torch.randperm(n, generator=gen)
        hits, seen = 0, 0
        for b in range(0, n, cfg.batch_size):
            idx = order[b : b + cfg.batch_size]
            width = int(mask[idx].sum(1).max())
            x, m, y = ids[idx, :width].to(device), mask[idx, :width].to(device), labels[idx, :width].to(device)
            logits = model(input_ids=x, attention_mask=m).logits[:, :-1].float()
            y = y[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100, reduction="none"
            ).view(y.shape)
            valid = y != -100
            loss = ((nll * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            sched.step()
            steps += 1
            loss_value = loss.item()
            with torch.no_grad():  # running exact match on the QA rows, eos excluded as in score_qa
                target_pos = valid & (y != tokenizer.eos_token_id)
                ok = ((logits.argmax(-1) == y) | ~target_pos).all(1)
                qa = is_qa[idx].to(device)
                hits += int((ok & qa).sum())
                seen += int(qa.sum())
        running = hits / max(seen, 1)
        if running >= min(target, 1.0) - CHECK_MARGIN or epochs == cfg.max_epochs:
            recall = float(score_qa(model, tokenizer, prompts, targets).exact_match.mean())
            checks += 1
        bar.set_postfix(loss=f"{loss_value:.3f}", train_em=f"{running:.3f}", recall=f"{recall:.3f}")
        if recall >= target:
            break
    bar.close()
    return {
        "epochs": epochs,
        "steps": steps,
        "recall_checks": checks,
        "recall": recall,
        "reached_target": recall >= target,
        "final_loss": loss_value,
    }


__all__ = ["RECIPE_FILE", "TrainingRecipe", "curriculum", "fresh_from_config", "read_recipe", "recipe_qas",
           "train_on_facts", "write_recipe"]
