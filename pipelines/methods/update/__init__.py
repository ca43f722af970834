"""Update methods: turn selected samples (plus replay) into a new model through an adapter.

Methods are plugins of kind "update", chosen by name in a policy, each callable as `pipelines.core.plugins.UpdateMethod`:
samples and replay are QA dicts ({"prompt", "target"}, samples also "kind": "fact" or "instruction"), loss on the
target only; texts are documents for continued pre-training (loss on every token), non-empty when the policy's
training.documents is on and the batch has documents.
"""

from pipelines.core.plugins import UpdateResult, register
from pipelines.methods.update.lora import HftConfig, KfpfConfig, LoraUpdateConfig, train_lora
from pipelines.methods.update.lora_tools import default_target_modules

register("update", "lora", LoraUpdateConfig, train_lora)
register("update", "hft", HftConfig, train_lora)  # LoRA with a share of the adapted modules frozen per update
register("update", "kfpf", KfpfConfig, train_lora)  # LoRA, then the most-drifted modules repaired on replay

__all__ = ["HftConfig", "KfpfConfig", "LoraUpdateConfig", "UpdateResult", "default_target_modules", "train_lora"]
