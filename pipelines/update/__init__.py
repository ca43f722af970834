"""Update methods: turn selected samples (plus replay) into a new model through an adapter.

Methods are plugins of kind "update", chosen by name in a policy, each callable as `pipelines.plugins.UpdateMethod`:
samples and replay are QA dicts ({"prompt", "target"}, samples also "kind": "fact" or "instruction"), loss on the
target only; texts are documents for continued pre-training (loss on every token), non-empty when the policy's
training.documents is on and the batch has documents.
"""

from pipelines.plugins import UpdateResult, register
from pipelines.update.common import default_target_modules
from pipelines.update.lora import LoraUpdateConfig, train_lora

register("update", "lora", LoraUpdateConfig, train_lora)

__all__ = ["LoraUpdateConfig", "UpdateResult", "default_target_modules", "train_lora"]
