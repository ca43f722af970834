"""Log-likelihood and perplexity from per-item mean token log-probabilities."""

import math

import datasets
import evaluate

_DESCRIPTION = """
Summarises how likely a model finds a set of token sequences. Each prediction is one item's mean
log-probability per token (natural log). Without weights the items count equally:

    mean_log_likelihood = (1/N) * sum_i lp_i

With `n_tokens` (number of scored tokens per item) the mean is token-weighted, which makes
perplexity the usual corpus perplexity over all tokens:

    mean_log_likelihood = sum_i n_i * lp_i / sum_i n_i
    perplexity = exp(-mean_log_likelihood)

It measures utility on general text (perplexity) and how firmly a model still holds facts it was asked
to forget (the forget log-likelihood should fall after unlearning).

>>> from evals.metrics import load_metric
>>> ll = load_metric("log_likelihood")
>>> ll.compute(predictions=[-1.0, -3.0])
{'mean_log_likelihood': -2.0, 'perplexity': 7.38905609893065}
>>> ll.compute(predictions=[-1.0, -3.0], n_tokens=[3, 1])
{'mean_log_likelihood': -1.5, 'perplexity': 4.4816890703380645}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): mean log-probability per token of each item (values <= 0).
    n_tokens (list of int, optional): scored tokens per item, to weight items by length.
Returns:
    mean_log_likelihood (float): (weighted) mean per-token log-probability.
    perplexity (float): exp(-mean_log_likelihood).
"""


class LogLikelihood(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64")}),
        )

    def _compute(self, predictions, n_tokens=None):
        if not predictions:
            raise ValueError("log_likelihood needs at least one prediction")
        if n_tokens is None:
            weights = [1.0] * len(predictions)
        else:
            if len(n_tokens) != len(predictions):
                raise ValueError(
                    f"n_tokens has {len(n_tokens)} entries for {len(predictions)} predictions; give one count per item"
                )
            weights = [float(n) for n in n_tokens]
        total = sum(weights)
        if total <= 0:
            raise ValueError("n_tokens must contain at least one positive count")
        mean = sum(w * float(p) for w, p in zip(weights, predictions, strict=True)) / total
        return {"mean_log_likelihood": float(mean), "perplexity": float(math.exp(-mean))}
