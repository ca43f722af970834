"""Unlearning methods: remove chosen facts from a model while keeping the rest."""

from pipelines.core.plugins import UnlearnResult, register
from pipelines.methods.unlearn.adapter_loop import AdapterUnlearnConfig
from pipelines.methods.unlearn.grad_ascent import GradAscentConfig, grad_ascent
from pipelines.methods.unlearn.grad_diff import GradDiffConfig, grad_diff
from pipelines.methods.unlearn.npo import NpoConfig, npo
from pipelines.methods.unlearn.ssd import SsdConfig, ssd

register("unlearn", "grad_diff", GradDiffConfig, grad_diff)
register("unlearn", "grad_ascent", GradAscentConfig, grad_ascent)
register("unlearn", "npo", NpoConfig, npo)
register("unlearn", "ssd", SsdConfig, ssd)

__all__ = [
    "AdapterUnlearnConfig",
    "GradAscentConfig",
    "GradDiffConfig",
    "NpoConfig",
    "SsdConfig",
    "UnlearnResult",
    "grad_ascent",
    "grad_diff",
    "npo",
    "ssd",
]
