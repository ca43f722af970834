"""Evaluation of release candidates: metric modules, suites, gates and evaluation cards.

Light on import: torch, evaluate and matplotlib load only inside the submodules that need them.
"""

from evals.names import KNOWN_METRICS, LOWER_IS_BETTER, STABILITY_METRICS, SUITE_METRICS

__all__ = ["KNOWN_METRICS", "LOWER_IS_BETTER", "STABILITY_METRICS", "SUITE_METRICS"]
