"""Dynamic sample selection: which admitted rows a cycle trains on, and which old rows it replays.

Methods are plugins of kind "selection", chosen by name in a policy, each callable as
`pipelines.core.plugins.SelectionMethod`.
"""

from pipelines.core.plugins import SelectionResult, register
from pipelines.methods.selection.adapt import AdaptConfig, select_adaptive
from pipelines.methods.selection.cluster_score import SelectionConfig, select_samples
from pipelines.methods.selection.everything import AllSelectionConfig, select_all
from pipelines.methods.selection.row_rules import assign_clusters, replay_count

METHODS = {
    "cluster_score": register("selection", "cluster_score", SelectionConfig, select_samples),
    "all": register("selection", "all", AllSelectionConfig, select_all),
    "adapt": register("selection", "adapt", AdaptConfig, select_adaptive),
}

__all__ = [
    "METHODS",
    "AdaptConfig",
    "AllSelectionConfig",
    "SelectionConfig",
    "SelectionResult",
    "assign_clusters",
    "replay_count",
    "select_adaptive",
    "select_all",
    "select_samples",
]
