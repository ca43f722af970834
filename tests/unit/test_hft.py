"""HFT and k-FPF on LoRA: HFT's frozen half comes out bit-identical to the champion; k-FPF repairs only the modules
that drifted most, on the replay buffer."""

from __future__ import annotations

import pytest
import torch
from support_checkpoints import build_tokenizer, model_config

from pipelines.core.plugins import get


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


def test_kfpf_repairs_only_the_most_drifted_modules_it_names():
    import random

    from pipelines.methods.update.lora import module_drift, repair_forgetting_prone
    from pipelines.methods.update.lora_tools import wrap_lora

    tokenizer = build_tokenizer()
    peft_model = wrap_lora(_tiny(tokenizer), 4, 8, 0.0, None)
    torch.manual_seed(1)
    with torch.no_grad():  # an update happened: every adapter moved, some more than others
        for name, p in peft_model.named_parameters():
            if ".lora_B" in name:
                p.normal_(0, 0.05 * (1 + hash(name) % 5))
    drift = module_drift(peft_model)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    cfg = get("update", "kfpf").config({"fpf_share": 0.25, "k": 3, "batch_size": 2})
    replay = [(f"old {i} is", f" w{i}") for i in range(4)]
    chosen = repair_forgetting_prone(peft_model, tokenizer, [p for p, _ in replay], [t for _, t in replay], cfg,
                                     random.Random(0))
    assert len(chosen) == round(0.25 * len(drift))
    assert set(chosen) == set(sorted(drift, key=drift.get, reverse=True)[:len(chosen)]), "the most drifted ones"
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(any(n.startswith(m + ".lora_") for m in chosen) for n in changed), sorted(changed)[:5]


def test_a_kfpf_update_reports_the_modules_it_repaired():
    tokenizer = build_tokenizer()
    method = get("update", "kfpf")
    cfg = method.config({"max_epochs": 2, "k": 2, "learning_rate": 1e-2})
    facts = [{"prompt": f"fact {i} is", "target": f" v{i}", "kind": "fact"} for i in range(4)]
    replay = [{"prompt": f"old {i} is", "target": f" w{i}"} for i in range(4)]
    result = method.impl(_tiny(tokenizer), tokenizer, facts, replay, cfg, progress=False)
    assert result.stats["forgetting_prone_modules"] >= 1
