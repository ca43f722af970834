"""Fact recall: the share of facts a model reproduces exactly."""

import datasets
import evaluate

_DESCRIPTION = """
Fact recall is the fraction of facts whose target the model produces exactly (greedy decoding, which
`pipelines.model.lm.score_qa` checks by teacher forcing). It is the number behind new-fact recall, paraphrase
recall, retention, locality and forget recall: only the evaluation set differs.

Two input forms are accepted:
- strings: `predictions` are the model's answers and `references` the expected targets; they are compared
  after trimming, case folding and collapsing white space;
- booleans: `predictions` say whether the model produced the target of each item, `references` say whether
  the item counts (pass True for every item of an ordinary evaluation set).

recall = hits / n, where n is the number of counted items.

>>> from evals.metrics import load_metric
>>> recall = load_metric("fact_recall")
>>> recall.compute(predictions=["Paris", " rome "], references=["paris", "Rome"])
{'recall': 1.0, 'n': 2.0}
>>> recall.compute(predictions=[True, False, True, True], references=[True, True, True, True])
{'recall': 0.75, 'n': 4.0}
>>> recall.compute(predictions=[True, False, True], references=[True, True, False])
{'recall': 0.5, 'n': 2.0}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str or list of bool): answers of the model, or exact-match flags per item.
    references (list of str or list of bool): expected targets, or whether each item counts.
Returns:
    recall (float): share of counted items recalled exactly, in [0, 1].
    n (float): number of counted items.
"""


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


class FactRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Value("bool"), "references": datasets.Value("bool")}),
            ],
        )

    def _compute(self, predictions, references):
        if predictions and isinstance(predictions[0], str):
            hits = [_normalise(p) == _normalise(r) for p, r in zip(predictions, references, strict=True)]
        else:
            hits = [bool(p) for p, r in zip(predictions, references, strict=True) if r]
        n = len(hits)
        return {"recall": float(sum(hits) / n) if n else 0.0, "n": float(n)}
