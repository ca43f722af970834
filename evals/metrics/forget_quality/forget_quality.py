"""Forget quality: is the forget set's likelihood distribution indistinguishable from a reference's?"""

import datasets
import evaluate

_DESCRIPTION = """
Forget quality (as in TOFU, Maini et al. 2024) is the p-value of a two-sample Kolmogorov-Smirnov test between
two distributions of per-item log-likelihoods:
- label 1: the forget set under the unlearned model;
- label 0: the comparison, either the forget set under a reference model retrained without it (the gold
  standard, affordable for small models), or facts of the same kind that the unlearned model never saw
  (the fallback for models too large to retrain).

A high p-value (>= 0.05 is the usual bar) means the test cannot tell the unlearned model's view of the
forget set from a model that never learned it. Very small sets give coarse p-values; the card shows n.

>>> from evals.metrics import load_metric
>>> fq = load_metric("forget_quality")
>>> out = fq.compute(predictions=[-1.0, -1.1, -0.9, -1.2, -1.0, -1.05], references=[1, 1, 1, 0, 0, 0])
>>> out["p_value"] > 0.05, out["n_forget"], out["n_reference"]
(True, 3, 3)
>>> out = fq.compute(predictions=[-0.1] * 8 + [-5.0] * 8, references=[1] * 8 + [0] * 8)
>>> out["p_value"] < 0.01, out["ks_statistic"]
(True, 1.0)
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): per-item mean log-likelihoods.
    references (list of int): 1 for the forget set under the unlearned model, 0 for the comparison sample.
Returns:
    p_value (float): two-sided KS-test p-value; higher means closer to the comparison.
    ks_statistic (float): the largest gap between the two empirical distribution functions.
    n_forget, n_reference (int): the sample sizes.
"""


class ForgetQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Maini et al. 2024, TOFU: A Task of Fictitious Unlearning for LLMs.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        from scipy.stats import ks_2samp

        forget = [float(p) for p, r in zip(predictions, references, strict=True) if r == 1]
        other = [float(p) for p, r in zip(predictions, references, strict=True) if r == 0]
        if not forget or not other:
            raise ValueError("forget_quality needs items labelled 1 (forget set) and 0 (comparison sample)")
        test = ks_2samp(forget, other)
        return {"p_value": float(test.pvalue), "ks_statistic": float(test.statistic),
                "n_forget": len(forget), "n_reference": len(other)}
