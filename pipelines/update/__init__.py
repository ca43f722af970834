"""Update methods: turn selected samples (plus replay) into a new model through an adapter."""

from pipelines.plugins import register
from pipelines.update.common import default_target_modules
from pipelines.update.lora import LoraUpdateConfig, UpdateResult, train_lora

register("update", "lora", LoraUpdateConfig, train_lora)

__all__ = ["LoraUpdateConfig", "UpdateResult", "default_target_modules", "train_lora"]
