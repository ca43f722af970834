"""HFT on LoRA: the frozen half of the adapted modules comes out bit-identical to the champion, the rest moves."""

from __future__ import annotations

import pytest
import torch
from support_checkpoints import build_tokenizer, model_config

from pipelines.plugins import get


def _tiny(tokenizer):
    import transformers as tf

    config = model_config("llama", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                          tokenizer.pad_token_id)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("choose", ["random", "alternate"])
def test_the_frozen_half_is_bit_identical_and_the_trained_half_moves(choose):
    tokenizer = build_tokenizer()
    champion = _tiny(tokenizer)
    before = {k: v.detach().clone() for k, v in champion.state_dict().items()}
    method = get("update", "hft")
    cfg = method.config({"max_epochs": 2, "choose": choose, "learning_rate": 1e-2})
    facts = [{"prompt": f"fact {i} is", "target": f" v{i}", "kind": "fact"} for i in range(4)]
    result = method.impl(champion, tokenizer, facts, [], cfg, progress=False)
    adapted = [n for n, m in result.model.named_modules() if n.rsplit(".", 1)[-1] in
               ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")]
    after = result.model.state_dict()
    unchanged = [n for n in adapted if torch.equal(after[f"{n}.weight"], before[f"{n}.weight"])]
    assert result.stats["frozen_modules"] == len(unchanged) == len(adapted) // 2, (len(unchanged), len(adapted))
    assert all(not torch.equal(after[f"{n}.weight"], before[f"{n}.weight"]) for n in adapted if n not in unchanged)


def test_a_frozen_share_outside_zero_and_one_is_refused_by_name():
    with pytest.raises(ValueError, match="invalid parameters for update method 'hft': frozen_share"):
        get("update", "hft").config({"frozen_share": 1.0})
