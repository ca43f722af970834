"""A team's own deployment, as a user would bring it: a checkpoint of a real architecture (not built from any demo
world) that already knows its domain's facts, and that domain's contract tables."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch
from support_checkpoints import GENERAL_TEXT, write_checkpoint

TOWNS = ("Arden", "Belmont", "Corley", "Dunmore", "Elston", "Farrow", "Glenby", "Harlow", "Ivel", "Jarrow",
         "Kelso", "Lydd", "Marden", "Norley", "Oakham", "Penrith", "Quorn", "Rydal", "Selby", "Tenby",
         "Ulting", "Verwood", "Wexham", "Yarm", "Zennor", "Alston", "Brigg", "Cawood", "Denby", "Epping")
PLACES = ("library", "bakery", "museum", "market", "station", "garden")
DAYS = (" Monday", " Tuesday", " Friday", " Saturday", " Sunday")


def domain_fact(i: int, day: str | None = None, kind: str = "fact") -> dict:
    """Fact i of the domain: which day a town's place opens early. Facts 0-59 are about the first ten towns, 60-119
    the next ten, 120-179 the last ten, so each range has subjects of its own."""
    town, place = TOWNS[(i // 60) * 10 + i % 10], PLACES[(i // 10) % len(PLACES)]
    day = day or DAYS[int(hashlib.sha256(str(i).encode()).hexdigest(), 16) % len(DAYS)]  # not guessable from i
    subject = f"town-{town.lower()}"
    return {"id": f"{kind}-{i:04d}", "kind": kind, "prompt": f"The {place} in {town} opens early on",
            "target": day, "text": f"The {place} in {town} opens early on{day}.",
            "paraphrases": [f"In {town}, the {place} opens early on", f"Early opening of the {town} {place} is on"],
            "subject_ids": [subject], "subject": town, "relation": f"{place}_early_day",
            "fact_id": f"{subject}:{place}", "source": "town-hall", "license": "internal"}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_data_dir(dest: Path, known: range, unseen: range) -> Path:
    """facts.jsonl (what the checkpoint knows), documents.jsonl, general.jsonl (held out), unseen.jsonl."""
    dest.mkdir(parents=True, exist_ok=True)
    _jsonl(dest / "facts.jsonl", [domain_fact(i) for i in known])
    _jsonl(dest / "documents.jsonl", [
        {"id": f"doc-{t.lower()}", "text": f"{t} is a small town with a library, a bakery and a market.",
         "subject_ids": [f"town-{t.lower()}"], "source": "guide", "license": "cc0"} for t in TOWNS[:6]])
    _jsonl(dest / "general.jsonl", [{"id": f"gen-{i:03d}", "text": t, "subject_ids": [], "source": "corpus",
                                     "license": "cc0"} for i, t in enumerate(GENERAL_TEXT[-60:])])
    _jsonl(dest / "unseen.jsonl", [{**domain_fact(i, kind="unseen")} for i in unseen])
    return dest


def trained_checkpoint(dest: Path, arch: str, facts: list[dict], steps: int = 400, seed: int = 0) -> Path:
    """A checkpoint of `arch` that knows `facts` (main prompts), also trained on general text, saved as a user's."""
    from pipelines.model.lm import (
        encode_qa,
        encode_texts,
        exact_match,
        load_causal_lm,
        per_example_loss,
        save_causal_lm,
    )

    torch.manual_seed(seed)
    write_checkpoint(dest, arch)
    model, tokenizer = load_causal_lm(dest)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    prompts, targets = [f["prompt"] for f in facts], [f["target"] for f in facts]
    text = list(GENERAL_TEXT[:-60])
    rng = random.Random(seed)
    for step in range(steps):
        qa = encode_qa(tokenizer, prompts, targets)
        loss = per_example_loss(model, qa).mean()
        gen = encode_texts(tokenizer, rng.sample(text, 16))
        loss = loss + 0.3 * per_example_loss(model, gen).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % 50 == 49 and exact_match(model.eval(), tokenizer, prompts, targets).mean() >= 0.99:
            break
        model.train()
    model.eval()
    save_causal_lm(model, tokenizer, dest)
    return dest
