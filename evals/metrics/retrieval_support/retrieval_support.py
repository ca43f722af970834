"""Retrieval support: does the retrieved context contain the answer?"""

import re

import datasets
import evaluate

_DESCRIPTION = """
For each query, the text the retriever returned (one snippet, or the top-k hits joined) is checked for
the reference answer. An answer counts as supported when it occurs in the snippet as a whole word
sequence, ignoring case and white-space differences. support_rate = supported / n.

This is the retrieval side of a fact: after a forget request it should fall to zero for the forgotten
facts, and after an index refresh it should stay high for the facts still served.

>>> from evals.metrics import load_metric
>>> support = load_metric("retrieval_support")
>>> support.compute(
...     predictions=["Vela Koran was born in Tessamir.", "Orin lives in Pald.", ""],
...     references=["Tessamir", "Paldora", "Nowhere"],
... )
{'support_rate': 0.3333333333333333, 'n': 3.0}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): retrieved text per query.
    references (list of str): reference answer per query.
Returns:
    support_rate (float): share of queries whose retrieved text contains the answer.
    n (float): number of queries.
"""


def _contains(snippet: str, answer: str) -> bool:
    answer = " ".join(answer.split())
    if not answer:
        return False
    words = [re.escape(w) for w in answer.split(" ")]
    pattern = r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"
    return re.search(pattern, snippet, flags=re.IGNORECASE) is not None


class RetrievalSupport(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        hits = [_contains(s or "", a or "") for s, a in zip(predictions, references, strict=True)]
        n = len(hits)
        return {"support_rate": float(sum(hits) / n) if n else 0.0, "n": float(n)}
