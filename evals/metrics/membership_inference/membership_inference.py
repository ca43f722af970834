"""Loss-based membership inference: can an attacker tell the forget set from facts the model never saw?"""

import datasets
import evaluate

_DESCRIPTION = """
A loss-based membership-inference attack guesses "was trained on" for items the model finds likely. Its
success is the ROC AUC of the model's per-item log-likelihood as a score separating members (the forget set,
label 1) from non-members (facts of the same kind the model never saw, label 0):

    auc = P(score(member) > score(non-member)) + 0.5 * P(tie)

0.5 means the attacker cannot tell them apart, which is what forgetting should achieve. Well above 0.5 the
forget set still looks trained on; well below 0.5 it looks *less* likely than never-seen facts, which is
itself a tell (over-forgetting, the Streisand effect).

The same inputs feed `forget_quality`, so the two are computed together with `evaluate.combine`.

>>> from evals.metrics import load_metric
>>> mia = load_metric("membership_inference")
>>> mia.compute(predictions=[-0.1, -0.2, -3.0, -4.0], references=[1, 1, 0, 0])
{'auc': 1.0, 'n_members': 2, 'n_non_members': 2}
>>> mia.compute(predictions=[-1.0, -3.0, -1.0, -3.0], references=[1, 1, 0, 0])
{'auc': 0.5, 'n_members': 2, 'n_non_members': 2}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): per-item mean log-likelihood under the model (higher = more likely).
    references (list of int): 1 for a forget-set item, 0 for a never-seen item of the same kind.
Returns:
    auc (float): ROC AUC of the likelihood as a membership score; 0.5 is ideal.
    n_members, n_non_members (int): the group sizes.
"""


class MembershipInference(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Shokri et al. 2017; Maini et al. 2024 (TOFU) use the loss-based variant.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        members = [float(p) for p, r in zip(predictions, references, strict=True) if r == 1]
        others = [float(p) for p, r in zip(predictions, references, strict=True) if r == 0]
        if not members or not others:
            raise ValueError("membership_inference needs at least one item labelled 1 (forget) and one labelled 0 (unseen)")
        wins = sum((m > o) + 0.5 * (m == o) for m in members for o in others)
        return {"auc": float(wins / (len(members) * len(others))), "n_members": len(members), "n_non_members": len(others)}
