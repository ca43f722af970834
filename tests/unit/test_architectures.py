"""Architecture matrix: the engine finds its LoRA targets and edit sites on every supported family, and
`inspect_checkpoint` refuses bad base models by naming the problem and the fix.

Each family is a tiny random checkpoint (2 layers, hidden 64) written locally by tests/support_checkpoints.py;
nothing here needs a model hub or a trained model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from support_checkpoints import (
    ARCHS,
    GENERAL_TEXT,
    write_checkpoint,
    write_unknown_architecture,
    write_without_pad_or_eos,
)

from pipelines.core import plugins
from pipelines.core.digests import dir_digest
from pipelines.methods.edit.anatomy import mlp_out
from pipelines.methods.update.lora_tools import default_target_modules, is_conv1d, wrap_lora
from pipelines.model.architectures import (
    ARCHITECTURES,
    Architecture,
    UnknownArchitecture,
    decoder_layers,
    default_edit_layer,
    resolve_architecture,
)
from pipelines.model.checkpoint import PAD_BORROWED, CheckpointError, inspect_checkpoint
from pipelines.model.lm import encode_qa, load_causal_lm, per_example_loss, score_qa

_GATED = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# (LoRA targets, decoder ModuleList path, MLP output projection in a block), written out independently of the table.
EXPECTED = {
    "gpt2": (["c_attn", "c_proj", "c_fc"], "transformer.h", "mlp.c_proj"),
    "llama": (_GATED, "model.layers", "mlp.down_proj"),
    "qwen2": (_GATED, "model.layers", "mlp.down_proj"),
    "qwen3": (_GATED, "model.layers", "mlp.down_proj"),
    "mistral": (_GATED, "model.layers", "mlp.down_proj"),
    "gemma": (_GATED, "model.layers", "mlp.down_proj"),
    "gpt_neox": (["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"], "gpt_neox.layers", "mlp.dense_4h_to_h"),
    "opt": (["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], "model.decoder.layers", "fc2"),
    "phi": (["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], "model.layers", "mlp.fc2"),
}
PAIRS = [
    ("The cat likes to sleep next to the", "window"),
    ("We walked to the market and bought some", "bread"),
    ("On Sunday I usually", "read a book"),
    ("The train was late again, so everyone waited outside the", "station"),
]


@pytest.fixture(scope="module", params=ARCHS)
def ckpt(request, tmp_path_factory) -> SimpleNamespace:
    arch = request.param
    path = write_checkpoint(tmp_path_factory.mktemp(arch) / "model", arch)
    model, tokenizer = load_causal_lm(path, torch.device("cpu"))
    return SimpleNamespace(arch=arch, path=path, model=model, tokenizer=tokenizer)


def _logits(model, tokenizer) -> torch.Tensor:
    batch = encode_qa(tokenizer, [p for p, _ in PAIRS], [t for _, t in PAIRS])
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def _loss(model, tokenizer) -> torch.Tensor:
    return per_example_loss(model, encode_qa(tokenizer, [p for p, _ in PAIRS], [t for _, t in PAIRS])).mean()


def test_every_table_entry_is_a_causal_lm_and_is_exercised():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert set(ARCHITECTURES) == set(ARCHS) == set(EXPECTED)
    assert {"gpt2", "llama", "qwen2", "gpt_neox", "mistral"} <= set(ARCHITECTURES)
    assert all(name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES for name in ARCHITECTURES)
    assert all(key == arch.name for key, arch in ARCHITECTURES.items())


def test_checkpoint_loads_and_is_described(ckpt):
    targets, _, _ = EXPECTED[ckpt.arch]
    before = dir_digest(ckpt.path)
    info = inspect_checkpoint(str(ckpt.path))
    assert dir_digest(ckpt.path) == before, "inspecting must not write into the checkpoint"
    assert (info.model_type, info.architecture) == (ckpt.arch, ckpt.arch)
    assert info.model_class == type(ckpt.model).__name__
    assert (info.n_layers, info.hidden_size) == (2, 64)
    assert info.model_vocab_size == info.tokenizer_vocab_size == len(ckpt.tokenizer)
    assert (info.pad_token, info.eos_token, info.bos_token) == ("<pad>", "</s>", "<s>")
    assert list(info.lora_targets) == targets and info.default_edit_layer == 1
    assert info.path == str(ckpt.path.resolve()) and info.digest == before and before.startswith("sha256:")
    assert not info.has_chat_template
    json.dumps(info.to_dict(), allow_nan=False)
    assert inspect_checkpoint(str(ckpt.path), with_digest=False).digest is None


def test_targets_and_layers_come_from_the_table(ckpt):
    targets, layers_path, _ = EXPECTED[ckpt.arch]
    assert resolve_architecture(ckpt.model).name == ckpt.arch
    assert default_target_modules(ckpt.model) == targets
    found = {n.rsplit(".", 1)[-1]: m for n, m in ckpt.model.named_modules() if n.rsplit(".", 1)[-1] in targets}
    assert set(found) == set(targets)
    assert all(isinstance(m, torch.nn.Linear) or is_conv1d(m) for m in found.values())
    layers = decoder_layers(ckpt.model)
    assert layers is ckpt.model.get_submodule(layers_path) and len(layers) == 2


def test_one_lora_step_lowers_the_loss(ckpt):
    torch.manual_seed(0)
    peft_model = wrap_lora(copy.deepcopy(ckpt.model), r=4, alpha=8, dropout=0.0, target_modules=None)
    assert resolve_architecture(peft_model).name == ckpt.arch
    assert len(decoder_layers(peft_model)) == 2
    adapted = {n.rsplit(".", 2)[-2] for n, _ in peft_model.named_modules() if n.endswith(".lora_A")}
    assert adapted == set(EXPECTED[ckpt.arch][0])
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    peft_model.train()
    loss = _loss(peft_model, ckpt.tokenizer)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        after = _loss(peft_model, ckpt.tokenizer)
    assert float(after) < float(loss.detach())


def test_rank_one_write_lands_in_the_mlp_output(ckpt):
    _, layers_path, out_name = EXPECTED[ckpt.arch]
    model = copy.deepcopy(ckpt.model)
    layer = default_edit_layer(model)
    target = mlp_out(model, layer)
    assert (target.layer, target.name) == (1, out_name)
    assert target.module is model.get_submodule(f"{layers_path}.1.{out_name}")
    assert target.transposed == (ckpt.arch == "gpt2")
    before = _logits(model, ckpt.tokenizer)
    gen = torch.Generator().manual_seed(0)
    out_dim = target.module.weight.shape[1] if target.transposed else target.module.weight.shape[0]
    target.add_rank_one(torch.randn(target.in_features, generator=gen), torch.randn(out_dim, generator=gen))
    assert not torch.allclose(before, _logits(model, ckpt.tokenizer))


def test_rome_edit_runs_and_moves_the_target(ckpt):
    """Where ROME cannot apply (flattened MLP activations) it says so and the fine-tuning editor still works."""
    rome = plugins.get("edit", "rome")
    edits = [{"prompt": "The cat likes to sleep next to the", "target": "lamp", "previous_target": "window"}]
    cfg = rome.config({"layer": default_edit_layer(ckpt.model), "v_steps": 8, "n_cov_tokens": 256})
    weights = {k: v.clone() for k, v in ckpt.model.state_dict().items()}
    if ARCHITECTURES[ckpt.arch].rank_one_edits:
        res = rome.impl(ckpt.model, ckpt.tokenizer, edits, cfg, key_texts=GENERAL_TEXT, progress=False)
    else:
        with pytest.raises(ValueError, match=rf"'{ckpt.arch}' model.*fix: use edit.method finetune_edit"):
            rome.impl(ckpt.model, ckpt.tokenizer, edits, cfg, key_texts=GENERAL_TEXT, progress=False)
        finetune = plugins.get("edit", "finetune_edit")
        res = finetune.impl(ckpt.model, ckpt.tokenizer, edits, finetune.config({"layer": 1, "max_steps": 5}),
                            progress=False)
    assert all(torch.equal(v, weights[k]) for k, v in ckpt.model.state_dict().items()), "input model changed"
    assert (res.stats["layer"], res.stats["module"]) == (1, EXPECTED[ckpt.arch][2])
    prompts, targets = [edits[0]["prompt"]], [edits[0]["target"]]
    lp_before = score_qa(ckpt.model, ckpt.tokenizer, prompts, targets).logprob[0]
    lp_after = score_qa(res.model, ckpt.tokenizer, prompts, targets).logprob[0]
    assert lp_after != pytest.approx(lp_before, abs=1e-4)


@pytest.mark.parametrize(
    ("n_layers", "expected"), [(1, 0), (2, 1), (3, 1), (4, 1), (6, 2), (12, 4), (24, 8), (32, 11), (48, 16)]
)
def test_default_edit_layer_is_a_third_deep_and_never_the_first(n_layers, expected):
    from transformers import LlamaConfig

    assert ARCHITECTURES["llama"].edit_layer(n_layers) == expected
    assert default_edit_layer(LlamaConfig(num_hidden_layers=n_layers)) == expected


def test_unknown_architecture_is_named_with_the_fix():
    from transformers import BloomConfig, BloomForCausalLM

    model = BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4))
    for call in (resolve_architecture, default_target_modules, decoder_layers, default_edit_layer,
                 lambda m: mlp_out(m, -1)):
        with pytest.raises(UnknownArchitecture) as err:
            call(model)
        message = str(err.value)
        assert "'bloom'" in message and "gpt2" in message and "llama" in message
        assert "update.params.target_modules" in message and "edit.params.layer" in message
        assert "add a line for 'bloom' to ARCHITECTURES in pipelines/model/architectures.py" in message
    assert decoder_layers(model, allow_guess=True) is model.transformer.h
    guessed = mlp_out(model, -1, allow_guess=True)
    assert (guessed.layer, guessed.name) == (1, "mlp.dense_4h_to_h")


def test_architecture_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ARCHITECTURES["gpt2"].layers_path = "h"  # type: ignore[misc]
    assert isinstance(ARCHITECTURES["gpt2"], Architecture)


def test_eos_stands_in_for_a_missing_pad_and_chat_templates_are_seen(tmp_path):
    path = write_checkpoint(tmp_path / "m", "llama", with_pad=False, chat_template=True)
    info = inspect_checkpoint(str(path))
    assert info.pad_token == PAD_BORROWED and info.eos_token == "</s>" and info.has_chat_template
    _, tokenizer = load_causal_lm(path, torch.device("cpu"))
    assert tokenizer.pad_token == "</s>"


# --- refusals --------------------------------------------------------------------------------------


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _missing(tmp: Path) -> str:
    return str(tmp / "no-such-model")


def _no_config(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("weights go here")
    return str(tmp / "empty")


def _bad_config(tmp: Path) -> str:
    path = write_checkpoint(tmp / "m", "gpt2")
    (path / "config.json").write_text("{not json")
    return str(path)


def _not_causal(tmp: Path) -> str:
    from transformers import T5Config

    T5Config(d_model=32, num_layers=1, num_heads=2, vocab_size=64).save_pretrained(tmp / "t5")
    return str(tmp / "t5")


def _unknown_arch(tmp: Path) -> str:
    return str(write_unknown_architecture(tmp / "bloom"))


def _no_tokenizer(tmp: Path) -> str:
    path = write_checkpoint(tmp / "m", "gpt2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        os.remove(path / name)
    return str(path)


def _broken_tokenizer(tmp: Path) -> str:
    path = write_checkpoint(tmp / "m", "llama")
    (path / "tokenizer.json").write_text("{not json")
    return str(path)


def _no_pad_no_eos(tmp: Path) -> str:
    return str(write_without_pad_or_eos(tmp / "m"))


def _vocab_too_big(tmp: Path) -> str:
    path = write_checkpoint(tmp / "m", "qwen2")
    _edit_json(path / "config.json", vocab_size=500)
    return str(path)


def _not_cached_id(tmp: Path) -> str:
    return "memgov-tests/no-such-model"


REFUSALS = [
    (_missing, ["does not exist", "fix: pass an existing folder"]),
    (_no_config, ["no config.json", "fix: pass the folder written by", "save_pretrained"]),
    (_bad_config, ["config.json", "cannot be loaded", "fix:"]),
    (_not_causal, ["'t5'", "not a causal language model", "fix: pass a decoder-only"]),
    (_unknown_arch, ["'bloom'", "llama", "update.params.target_modules", "edit.params.layer",
                     "add a line for 'bloom' to ARCHITECTURES in pipelines/model/architectures.py"]),
    (_no_tokenizer, ["no tokenizer files", "fix: save the model's tokenizer", "save_pretrained"]),
    (_broken_tokenizer, ["tokenizer", "cannot be loaded", "fix: save the model's tokenizer"]),
    (_no_pad_no_eos, ["neither a pad token nor an eos token", "add_special_tokens({'pad_token'",
                      "pad_token in tokenizer_config.json"]),
    (_vocab_too_big, ["584 tokens", "only 500 rows", "resize_token_embeddings"]),
    (_not_cached_id, ["neither an existing folder nor a model in the local Hugging Face cache",
                      "huggingface-cli download"]),
]


@pytest.mark.parametrize(("build", "phrases"), REFUSALS, ids=[b.__name__.lstrip("_") for b, _ in REFUSALS])
def test_bad_checkpoint_is_refused_with_the_problem_and_the_fix(tmp_path, build, phrases):
    with pytest.raises(CheckpointError) as err:
        inspect_checkpoint(build(tmp_path))
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} missing from: {message}"


def test_table_line_that_does_not_match_the_checkpoint_is_refused(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "m", "mistral")
    wrong = dataclasses.replace(ARCHITECTURES["mistral"], lora_targets=("wq", "wo"), mlp_out="mlp.w2")
    monkeypatch.setitem(ARCHITECTURES, "mistral", wrong)
    with pytest.raises(CheckpointError, match=r"no lora target 'wq', lora target 'wo', mlp_out 'mlp.w2'.*fix:"):
        inspect_checkpoint(str(path))


def test_the_dtype_follows_the_device_and_bf16_takes_the_same_path(monkeypatch, tmp_path):
    """float32 on CPU; bf16 where the device supports it (what a GPU job gets), through the same loader and LoRA
    step: forced here with MEMGOV_DTYPE, which also lets a GPU deployment insist on float32."""
    from pipelines.model.lm import pick_dtype

    monkeypatch.delenv("MEMGOV_DTYPE", raising=False)
    assert pick_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setenv("MEMGOV_DTYPE", "bfloat16")
    path = write_checkpoint(tmp_path / "model", "llama")
    model, tokenizer = load_causal_lm(path, torch.device("cpu"))
    assert next(model.parameters()).dtype == torch.bfloat16
    peft_model = wrap_lora(model, r=4, alpha=8, dropout=0.0, target_modules=None)
    loss = _loss(peft_model, tokenizer)
    loss.backward()
    assert torch.isfinite(loss)
    monkeypatch.setenv("MEMGOV_DTYPE", "int8")
    with pytest.raises(ValueError, match="MEMGOV_DTYPE='int8' is not a floating-point torch dtype"):
        pick_dtype(torch.device("cpu"))
