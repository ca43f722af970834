"""Stability of old knowledge while an update trains, after De Lange et al. (2023)."""

import datasets
import evaluate

_CITATION = """\
@inproceedings{delange2023continual,
  title={Continual evaluation for lifelong learning: Identifying the stability gap},
  author={De Lange, Matthias and van de Ven, Gido M. and Tuytelaars, Tinne},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2023},
  url={https://arxiv.org/abs/2205.13452}
}
"""

_DESCRIPTION = """
Evaluating only before and after an update hides how far old knowledge dropped while the update trained
(the "stability gap"): a candidate can look fine at the end after having forgotten, then relearned, most
old facts. Old-knowledge probe accuracy is therefore measured during training, and these numbers are
computed from that curve, following De Lange, van de Ven and Tuytelaars, "Continual evaluation for
lifelong learning: Identifying the stability gap" (ICLR 2023).

Notation: A(E_i, f_t) is the accuracy of the model at training step t on the evaluation data of task i.
The update being trained is task k; tasks 1..k-1 are old knowledge (here, one probe set per old task,
usually a single retention probe, so k = 2).

- min-ACC (average minimum accuracy): for each old task, the lowest accuracy observed during the
  update's training, averaged over the old tasks:
      min_acc = 1/(k-1) * sum_{i<k} min_t A(E_i, f_t)
  It is a worst-case lower bound on how much old knowledge survived at any time.
- WC-ACC (worst-case accuracy): a trade-off between learning the current task and the worst case on
  old tasks:
      wc_acc = (1/k) * A(E_k, f_end) + (1 - 1/k) * min_acc
  where A(E_k, f_end) is `current_acc`, the accuracy on the update's own data at the end of training
  (new-fact recall). wc_acc is None when current_acc is not given.
- final_acc: mean over old tasks of the last value of the curve (the usual after-training accuracy).
- stability_gap: mean over old tasks of max(0, acc_before - min_t A(E_i, f_t)): how far accuracy fell
  below its value before the update at its worst moment.

A task whose curve is empty (nothing measured during training) counts as [acc_before]: no drop observed.
k defaults to the number of old tasks + 1; pass `n_tasks` to override it.

>>> from evals.metrics import load_metric
>>> stab = load_metric("stability")
>>> out = stab.compute(curve=[[0.9, 0.6, 0.8, 0.85]], acc_before=[0.95], current_acc=0.9)
>>> {k: round(v, 4) for k, v in out.items()}
{'min_acc': 0.6, 'wc_acc': 0.75, 'final_acc': 0.85, 'stability_gap': 0.35}
>>> stab.compute(curve=[[]], acc_before=[0.8])
{'min_acc': 0.8, 'wc_acc': None, 'final_acc': 0.8, 'stability_gap': 0.0}
"""

_KWARGS_DESCRIPTION = """
Args:
    curve (list of list of float): per old task, its probe accuracy at each evaluation during training.
    acc_before (list of float): per old task, its accuracy before the update started.
    current_acc (float, optional): accuracy on the update's own data after training.
    n_tasks (int, optional): k, the number of tasks including the current one.
Returns:
    min_acc, wc_acc (None without current_acc), final_acc, stability_gap (floats).
"""


class Stability(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"curve": datasets.List(datasets.Value("float64")), "acc_before": datasets.Value("float64")}
            ),
            reference_urls=["https://arxiv.org/abs/2205.13452"],
        )

    def _compute(self, curve, acc_before, current_acc=None, n_tasks=None):
        if not acc_before:
            raise ValueError("stability needs at least one old task (one curve and its acc_before)")
        curves = [list(c) if c else [b] for c, b in zip(curve, acc_before, strict=True)]
        mins = [min(c) for c in curves]
        n_old = len(curves)
        min_acc = sum(mins) / n_old
        final_acc = sum(c[-1] for c in curves) / n_old
        gap = sum(max(0.0, b - m) for b, m in zip(acc_before, mins, strict=True)) / n_old
        k = n_old + 1 if n_tasks is None else int(n_tasks)
        if k < 2:
            raise ValueError(f"n_tasks must be at least 2 (one old task and the current one), got {k}")
        wc_acc = None if current_acc is None else float(current_acc) / k + (1.0 - 1.0 / k) * min_acc
        return {
            "min_acc": float(min_acc),
            "wc_acc": None if wc_acc is None else float(wc_acc),
            "final_acc": float(final_acc),
            "stability_gap": float(gap),
        }
