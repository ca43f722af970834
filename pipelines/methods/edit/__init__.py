"""Knowledge editors: change individual facts in place, each edit reported with before/after scores."""

from pipelines.core.plugins import EditResult, register
from pipelines.methods.edit.finetune import FinetuneEditConfig, finetune_edits
from pipelines.methods.edit.rome import RomeConfig, apply_edits

register("edit", "rome", RomeConfig, apply_edits)
register("edit", "finetune_edit", FinetuneEditConfig, finetune_edits)

__all__ = ["EditResult", "FinetuneEditConfig", "RomeConfig", "apply_edits", "finetune_edits"]
