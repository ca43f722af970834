"""Knowledge editors: change individual facts in place, each edit reported with before/after scores."""

from pipelines.edit.finetune import FinetuneEditConfig, finetune_edits
from pipelines.edit.rome import RomeConfig, apply_edits
from pipelines.plugins import EditResult, register

register("edit", "rome", RomeConfig, apply_edits)
register("edit", "finetune_edit", FinetuneEditConfig, finetune_edits)

__all__ = ["EditResult", "FinetuneEditConfig", "RomeConfig", "apply_edits", "finetune_edits"]
