"""Token F1 and exact match of free-text answers, SQuAD-style: how close a response is to the reference."""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """
Scores a model's free-text answers (instruction responses) against reference answers. Both sides are normalised
as SQuAD's evaluation does: lowercase, punctuation removed, the articles a/an/the dropped, white space collapsed;
the answer is then split on white space into tokens.

- exact_match: 1 when the normalised answer equals the normalised reference, else 0;
- f1: harmonic mean of precision and recall of the answer's tokens against the reference's, counting each token
  as often as it occurs in both (multiset overlap). Two empty answers score 1, one empty answer scores 0.

Each number is the mean over the items; n is the number of items.

>>> from evals.metrics import load_metric
>>> f1 = load_metric("token_f1")
>>> f1.compute(predictions=["The refund takes 30 days."], references=["refund takes 30 days"])
{'f1': 1.0, 'exact_match': 1.0, 'n': 1.0}
>>> f1.compute(predictions=["Refunds within 30 days"], references=["refunds within 30 days, with a receipt"])
{'f1': 0.8, 'exact_match': 0.0, 'n': 1.0}
>>> f1.compute(predictions=["yes", ""], references=["no", ""])
{'f1': 0.5, 'exact_match': 0.5, 'n': 2.0}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the model's answers.
    references (list of str): the expected answers, one per prediction.
Returns:
    f1 (float): mean token F1, in [0, 1].
    exact_match (float): share of answers equal to their reference after normalisation, in [0, 1].
    n (float): number of items.
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _normalise(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def _tokens(text: str) -> list[str]:
    return _normalise(text).split()


def _exact(prediction: str, reference: str) -> float:
    return float(_normalise(prediction) == _normalise(reference))


def _f1(prediction: str, reference: str) -> float:
    """Token F1 of one answer: multiset overlap of normalised tokens."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


class TokenF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text (2016)",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        pairs = list(zip(predictions, references, strict=True))
        n = len(pairs)
        if not n:
            return {"f1": 0.0, "exact_match": 0.0, "n": 0.0}
        return {"f1": float(sum(_f1(p, r) for p, r in pairs) / n),
                "exact_match": float(sum(_exact(p, r) for p, r in pairs) / n), "n": float(n)}
