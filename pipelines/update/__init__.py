"""Update methods: turn selected samples (plus replay) into a new model through an adapter.

Methods are plugins of kind "update", chosen by name in a policy. Every method has the signature
`impl(model, tokenizer, samples, replay, cfg, probe=None, progress=True, texts=None) -> UpdateResult`:
samples and replay are QA dicts ({"prompt", "target"}, samples also "kind": "fact" or "instruction"), loss on the
target only; texts are documents for continued pre-training (loss on every token), passed when the policy's
training.documents is on and the batch has documents.
"""

from pipelines.plugins import register
from pipelines.update.common import default_target_modules
from pipelines.update.lora import LoraUpdateConfig, UpdateResult, train_lora

register("update", "lora", LoraUpdateConfig, train_lora)

__all__ = ["LoraUpdateConfig", "UpdateResult", "default_target_modules", "train_lora"]
