"""Evaluation suites: run a candidate model over the evaluation sets and report one number per metric.

The model work (exact match, log-probabilities, retrieval) happens here; every reported number is then
computed by a metric module in `evals/metrics/`, the single place where each number is defined.
A set that is empty yields None for its metric: "not measured" must never read as 0.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evals.metrics import load_metric
from evals.names import INSTRUCTION_SCORERS, SUITE_METRICS

QA = dict[str, Any]


@dataclass
class EvalSets:
    """The evaluation data of one cycle. QA dicts carry "prompt", "target" and "id"."""

    new_facts: list[QA] = field(default_factory=list)
    paraphrases: list[QA] = field(default_factory=list)
    retention: list[QA] = field(default_factory=list)
    forget: list[QA] = field(default_factory=list)
    locality: list[QA] = field(default_factory=list)
    general_text: list[str] = field(default_factory=list)
    rag_queries: list[QA] = field(default_factory=list)
    unseen: list[QA] = field(default_factory=list)  # facts of the forget set's kind that no model was trained on
    probe_train: list[QA] = field(default_factory=list)  # kept facts the representation probe is fitted on
    instructions: list[QA] = field(default_factory=list)  # rendered prompt and expected response per instruction

    def __post_init__(self) -> None:
        for name in ("new_facts", "paraphrases", "retention", "forget", "locality", "rag_queries", "unseen",
                     "probe_train", "instructions"):
            for i, row in enumerate(getattr(self, name)):
                if not isinstance(row, Mapping) or not isinstance(row.get("prompt"), str) or not isinstance(
                    row.get("target"), str
                ):
                    raise ValueError(f"EvalSets.{name}[{i}] must be a dict with string 'prompt' and 'target'")
        for i, text in enumerate(self.general_text):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"EvalSets.general_text[{i}] must be a non-empty string")

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in asdict(self).items()}


@dataclass
class SuiteResults:
    metrics: dict[str, float | None]
    details: dict[str, Any]


def _ids(rows: Sequence[QA]) -> list[str]:
    return [str(r.get("id", i)) for i, r in enumerate(rows)]


def _recall_suite(model, tokenizer, rows: Sequence[QA]) -> tuple[float | None, dict[str, Any], Any]:
    from pipelines.model.lm import score_qa

    if not rows:
        return None, {"n": 0}, None
    scores = score_qa(model, tokenizer, [r["prompt"] for r in rows], [r["target"] for r in rows])
    hits = [bool(h) for h in scores.exact_match]
    out = load_metric("fact_recall").compute(predictions=hits, references=[True] * len(hits))
    ids = _ids(rows)
    detail = {
        "n": len(rows),
        "recalled": [i for i, h in zip(ids, hits, strict=True) if h],
        "missed": [i for i, h in zip(ids, hits, strict=True) if not h],
    }
    return out["recall"], detail, scores


def _text_log_likelihood(model, tokenizer, texts: Sequence[str], batch_size: int = 64) -> tuple[list[float], list[int]]:
    """Per-text mean token log-probability and token count, as `pipelines.model.lm.perplexity` scores them."""
    import torch

    from pipelines.model.lm import encode_texts, per_example_loss

    means: list[float] = []
    counts: list[int] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = encode_texts(tokenizer, texts[start : start + batch_size])
            nll = per_example_loss(model, batch)
            means.extend((-nll).cpu().tolist())
            counts.extend(int(n) for n in (batch.labels[:, 1:] != -100).sum(1))
    if was_training:
        model.train()
    return means, counts


def instruction_suite(model, tokenizer, rows: Sequence[QA], scorer: str = "exact_match") -> tuple[float, dict]:
    """Greedy responses to the instruction prompts, scored against the expected responses by the policy's scorer
    (normalised exact match or token F1, both from the token_f1 module); the detail keeps both and each item's F1."""
    from pipelines.model.lm import answer_budget, greedy_answers

    if scorer not in INSTRUCTION_SCORERS:
        raise ValueError(f"instruction scorer must be one of {', '.join(INSTRUCTION_SCORERS)}, got {scorer!r}")
    references = [r["target"] for r in rows]
    budgets = [answer_budget(tokenizer, ref) for ref in references]
    answers = greedy_answers(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=budgets)
    metric = load_metric("token_f1")
    out = metric.compute(predictions=answers, references=references)
    per_item = sys.modules[type(metric).__module__]._f1
    detail = {"n": len(rows), "metric": scorer, "f1": out["f1"], "exact_match": out["exact_match"],
              "per_item_f1": {i: per_item(a, ref) for i, a, ref in zip(_ids(rows), answers, references, strict=True)}}
    return out["f1" if scorer == "token_f1" else "exact_match"], detail


COMPARISON_REFERENCE = "forget set under a reference model retrained without it"
COMPARISON_UNSEEN = "facts of the same kind the model never saw"


def forgetting_evidence(model, tokenizer, sets: EvalSets, forget_ll: Sequence[float],
                        reference_forget_ll: Sequence[float] | None = None,
                        reference_mia_auc: float | None = None) -> tuple[dict[str, float | None], dict]:
    """Forget quality (KS p-value), membership-inference AUC and the linear probe's excess for one model.

    MIA always compares the forget set with never-seen facts under the same model; forget quality compares
    with the retrained reference when one is given, else with the never-seen facts, and says which.
    """
    from evals.probe import linear_probe
    from pipelines.model.lm import score_qa

    metrics: dict[str, float | None] = {"forget_quality": None, "forget_mia_auc": None, "forget_mia_reference": None,
                                        "forget_probe_excess": None, "forget_probe_p": None}
    if not sets.forget or not sets.unseen:
        return metrics, {"skipped": "no forget set" if not sets.forget else "no never-seen facts to compare with"}
    import evaluate

    unseen_ll = [float(x) for x in score_qa(model, tokenizer, [q["prompt"] for q in sets.unseen],
                                            [q["target"] for q in sets.unseen]).mean_logprob]
    forget_ll = [float(x) for x in forget_ll]
    labels = [1] * len(forget_ll) + [0] * len(unseen_ll)
    both = evaluate.combine([load_metric("membership_inference"), load_metric("forget_quality")])
    vs_unseen = both.compute(predictions=forget_ll + unseen_ll, references=labels)
    metrics["forget_mia_auc"] = vs_unseen["auc"]
    # What the attack sees on a model that never learned the forget set: 0.5 unless a retrained reference says
    # otherwise (forgotten subjects can look less likely than never-seen ones even to a model that never saw them).
    metrics["forget_mia_reference"] = reference_mia_auc if reference_mia_auc is not None else 0.5
    detail: dict[str, Any] = {"mia": {"auc": vs_unseen["auc"], "n_forget": len(forget_ll), "n_unseen": len(unseen_ll)}}
    if reference_forget_ll:
        # Both sides relative to their own model's mean on never-seen facts: two differently trained models
        # need not share a likelihood scale (TOFU's truth ratio normalises per model for the same reason).
        ref = [float(x) for x in reference_forget_ll]
        level = sum(unseen_ll) / len(unseen_ll)
        ours = [x - level for x in forget_ll]
        fq = load_metric("forget_quality").compute(predictions=ours + ref, references=[1] * len(ours) + [0] * len(ref))
        detail["forget_quality"] = {"comparison": COMPARISON_REFERENCE, **fq, "p_value_vs_unseen": vs_unseen["p_value"]}
    else:
        fq = {k: vs_unseen[k] for k in ("p_value", "ks_statistic")}
        detail["forget_quality"] = {"comparison": COMPARISON_UNSEEN, **fq, "n_forget": len(forget_ll),
                                    "n_reference": len(unseen_ll)}
    metrics["forget_quality"] = fq["p_value"]
    probe = linear_probe(model, tokenizer, sets.probe_train, sets.forget, sets.unseen)
    if probe is not None:
        metrics["forget_probe_excess"] = probe.excess
        metrics["forget_probe_p"] = probe.p_value
        detail["probe"] = probe.as_dict()
    return metrics, detail


def run_suites(
    model,
    tokenizer,
    sets: EvalSets,
    index=None,
    embedder=None,
    rag_k: int = 3,
    reference_forget_ll: Sequence[float] | None = None,
    reference_mia_auc: float | None = None,
    instruction_metric: str = "exact_match",
) -> SuiteResults:
    """Measure every suite metric (names in `evals.names.SUITE_METRICS`) for one model.

    `index` is duck-typed: `index.search(queries, embedder, k) -> list[list[hit]]` with hits carrying
    `doc_id`, `score` and `text`. Without an index, rag_support is None. `reference_forget_ll` holds the
    forget set's per-item log-likelihoods under a model retrained without it, when one could be trained, each
    minus that model's mean log-likelihood on `sets.unseen` (see `pipelines.forget.reference`), and
    `reference_mia_auc` the membership-inference AUC that model shows (the target for ours).
    With instruction rows, `instruction_score` is added, scored by `instruction_metric` ("exact_match" or
    "token_f1"); without them it is absent, so that a gate on it fails instead of passing on nothing.
    """
    metrics: dict[str, float | None] = dict.fromkeys(SUITE_METRICS)
    details: dict[str, Any] = {"sizes": sets.sizes()}

    for metric, name in (
        ("new_fact_recall", "new_facts"),
        ("paraphrase_recall", "paraphrases"),
        ("retention", "retention"),
        ("locality", "locality"),
    ):
        metrics[metric], details[name], _ = _recall_suite(model, tokenizer, getattr(sets, name))

    metrics["forget_recall"], details["forget"], forget_scores = _recall_suite(model, tokenizer, sets.forget)
    if forget_scores is not None:
        ll = load_metric("log_likelihood").compute(predictions=[float(x) for x in forget_scores.mean_logprob])
        metrics["forget_log_likelihood"] = ll["mean_log_likelihood"]
        evidence, details["forgetting"] = forgetting_evidence(model, tokenizer, sets, forget_scores.mean_logprob,
                                                              reference_forget_ll, reference_mia_auc)
        metrics.update(evidence)

    if sets.instructions:
        metrics["instruction_score"], details["instructions"] = instruction_suite(model, tokenizer, sets.instructions,
                                                                                  instruction_metric)
    else:
        details["instructions"] = {"n": 0, "metric": instruction_metric}

    if sets.general_text:
        means, counts = _text_log_likelihood(model, tokenizer, sets.general_text)
        ll = load_metric("log_likelihood").compute(predictions=means, n_tokens=counts)
        metrics["perplexity"] = ll["perplexity"]
        details["general_text"] = {"n": len(means), "n_tokens": int(sum(counts)), **ll}
    else:
        details["general_text"] = {"n": 0}

    if index is not None and sets.rag_queries:
        rows = sets.rag_queries
        hits = index.search([r["prompt"] for r in rows], embedder, rag_k)
        if len(hits) != len(rows):
            raise ValueError(f"index.search returned {len(hits)} result lists for {len(rows)} queries")
        snippets = [" \n".join(str(h.text) for h in row_hits) for row_hits in hits]
        out = load_metric("retrieval_support").compute(predictions=snippets, references=[r["target"] for r in rows])
        metrics["rag_support"] = out["support_rate"]
        # Per-query verdicts from the same module function that defines the rate.
        contains = sys.modules[type(load_metric("retrieval_support")).__module__]._contains
        supported = [contains(s, r["target"]) for s, r in zip(snippets, rows, strict=True)]
        ids = _ids(rows)
        details["rag"] = {
            "n": len(rows),
            "k": rag_k,
            "unsupported": [i for i, ok in zip(ids, supported, strict=True) if not ok],
            "top_doc_ids": {i: [str(h.doc_id) for h in row_hits] for i, row_hits in zip(ids, hits, strict=True)},
        }
    else:
        details["rag"] = {"n": len(sets.rag_queries), "skipped": "no index" if index is None else "no queries"}

    return SuiteResults(metrics=metrics, details=details)


__all__ = ["EvalSets", "SuiteResults", "forgetting_evidence", "instruction_suite", "run_suites"]
