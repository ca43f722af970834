"""Metric names shared by suites, gates, policies and cards.

Kept in a module without heavy imports so that a policy can be validated without loading torch.
"""

from __future__ import annotations

SUITE_METRICS: tuple[str, ...] = (
    "new_fact_recall",
    "paraphrase_recall",
    "retention",
    "locality",
    "perplexity",
    "forget_recall",
    "forget_log_likelihood",
    "forget_quality",
    "forget_mia_auc",
    "forget_mia_reference",
    "forget_probe_excess",
    "forget_probe_p",
    "rag_support",
)
# The checks a forget request must pass before it is verified (gates on these cannot be waived).
FORGET_METRICS: frozenset[str] = frozenset(
    {"forget_recall", "forget_log_likelihood", "forget_quality", "forget_mia_auc", "forget_probe_excess",
     "forget_probe_p"}
)
STABILITY_METRICS: tuple[str, ...] = ("min_acc", "wc_acc", "final_acc", "stability_gap")
HISTORY_METRICS: tuple[str, ...] = ("backward_transfer",)
# Reported only when the batch has instruction rows (absent otherwise, so a gate on it cannot pass on nothing).
INSTRUCTION_METRICS: tuple[str, ...] = ("instruction_score",)
# How instruction_score scores a response (policy evaluation.instruction_metric): keys of the token_f1 module.
INSTRUCTION_SCORERS: tuple[str, ...] = ("exact_match", "token_f1")
KNOWN_METRICS: tuple[str, ...] = SUITE_METRICS + INSTRUCTION_METRICS + STABILITY_METRICS + HISTORY_METRICS

# Lower values are better for these; used to colour deltas, never to flip a gate's direction.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"perplexity", "forget_recall", "forget_log_likelihood", "forget_probe_excess", "stability_gap"}
)
