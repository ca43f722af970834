"""Tiny local checkpoints of real transformers architectures, for tests that must not touch a model hub.

Each checkpoint is a 2-layer, 64-wide model written with ``save_pretrained`` from its Config class, next
to a byte-level BPE tokenizer trained on GENERAL_TEXT (plain everyday English, unrelated to any test world).
Weights are random: these checkpoints test that the engine finds and drives the right modules, not what
a model knows. Each (arch, with_pad, chat_template) is built once per process and copied to the caller.
"""

from __future__ import annotations

import atexit
import itertools
import json
import random
import shutil
import tempfile
from functools import cache
from pathlib import Path

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
MAX_POSITIONS = 256
CHAT_TEMPLATE = (
    "{% for message in messages %}" + BOS + "{{ message['role'] }}: {{ message['content'] }}" + EOS + "{% endfor %}"
    "{% if add_generation_prompt %}" + BOS + "assistant:{% endif %}"
)

_TEMPLATES = (
    "The {food} at the {place} was {adj} this {time}.",
    "We walked to the {place} in the {time} and bought some {food}.",
    "My neighbour has a {animal} that likes to sleep next to the {thing}.",
    "It rained all {time}, so we stayed at home and {activity}.",
    "The {vehicle} was late again, so everyone waited outside the {place}.",
    "On {day} I usually {activity} before dinner.",
    "She left her {thing} on the {vehicle} and had to call the {place}.",
    "A {adj} {animal} sat quietly under the old {thing}.",
    "After work on {day} we {activity} and ate {food}.",
    "The {place} opens early on {day}, but the {food} sells out by noon.",
)
_SLOTS = {
    "food": ("bread", "soup", "coffee", "cake", "apples", "rice", "tea", "cheese"),
    "place": ("market", "library", "station", "bakery", "park", "museum", "post office", "garden"),
    "adj": ("fresh", "warm", "quiet", "small", "bright", "cold", "busy", "pleasant"),
    "time": ("morning", "afternoon", "evening", "weekend", "week"),
    "animal": ("cat", "dog", "rabbit", "parrot", "tortoise"),
    "thing": ("window", "table", "chair", "lamp", "bookshelf", "umbrella"),
    "activity": ("read a book", "cooked a meal", "cleaned the kitchen", "played cards", "wrote letters"),
    "vehicle": ("bus", "train", "tram", "ferry"),
    "day": ("Monday", "Tuesday", "Friday", "Saturday", "Sunday"),
}


def _general_text(n_per_template: int = 32, seed: int = 0) -> list[str]:
    """n_per_template distinct sentences from each template, sampled reproducibly from its slot fillers."""
    rng = random.Random(seed)
    out: list[str] = []
    for template in _TEMPLATES:
        keys = [k for k in _SLOTS if "{" + k + "}" in template]
        combos = list(itertools.product(*(_SLOTS[k] for k in keys)))
        for combo in rng.sample(combos, min(n_per_template, len(combos))):
            out.append(template.format(**dict(zip(keys, combo, strict=True))))
    return out


GENERAL_TEXT: list[str] = _general_text()

ARCHS = ("gpt2", "llama", "qwen2", "gpt_neox", "mistral", "qwen3", "gemma", "opt", "phi")


@cache
def _bpe_json(vocab_size: int = 600) -> str:
    """A byte-level BPE tokenizer trained on GENERAL_TEXT, serialised (training is deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(GENERAL_TEXT, trainer)
    return tok.to_str()


# Families whose own tokenizers put a BOS in front of every text (Llama, Mistral, Gemma; OPT's GPT-2 tokenizer adds
# one too); GPT-2, GPT-NeoX, Qwen and Phi add none. The test checkpoints behave like their family.
ADDS_BOS = frozenset({"llama", "mistral", "gemma", "opt"})


def build_tokenizer(with_pad: bool = True, chat_template: bool = False, add_bos: bool = False):
    """PreTrainedTokenizerFast with bos/eos (and pad unless with_pad=False) over the trained BPE; with add_bos it
    puts the BOS in front of every text itself, as a Llama tokenizer does."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    specials = {"bos_token": BOS, "eos_token": EOS} | ({"pad_token": PAD} if with_pad else {})
    backend = Tokenizer.from_str(_bpe_json())
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, backend.token_to_id(BOS))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=MAX_POSITIONS, **specials)
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def model_config(arch: str, vocab_size: int, bos_id: int, eos_id: int, pad_id: int | None):
    """Config of a tiny `arch` model: 2 layers, hidden 64, 4 heads, intermediate 128."""
    import transformers as tf

    ids = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id, "vocab_size": vocab_size}
    common = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "max_position_embeddings": MAX_POSITIONS, **ids}
    gated = {**common, "intermediate_size": 128, "num_key_value_heads": 2, "head_dim": 16}
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=MAX_POSITIONS, **ids)
    builders = {
        "llama": lambda: tf.LlamaConfig(**gated),
        "qwen2": lambda: tf.Qwen2Config(**gated),
        "qwen3": lambda: tf.Qwen3Config(**gated),
        "mistral": lambda: tf.MistralConfig(**gated),
        "gemma": lambda: tf.GemmaConfig(**gated),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**common, intermediate_size=128),
        "phi": lambda: tf.PhiConfig(**common, intermediate_size=128),
        "opt": lambda: tf.OPTConfig(**common, ffn_dim=128, word_embed_proj_dim=64),
    }
    if arch not in builders:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return builders[arch]()


_ROOT: Path | None = None
_BUILT: dict[tuple[str, bool, bool], Path] = {}


def _cache_root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="memgov-checkpoints-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def _pin_unset_specials(path: Path, with_pad: bool) -> None:
    """Write unset special tokens as null: a family tokenizer class (e.g. Qwen2Tokenizer, which AutoTokenizer picks
    for qwen2 whatever tokenizer_class says) otherwise fills them with its own defaults and grows the vocabulary."""
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["unk_token"] = None
    if not with_pad:
        config["pad_token"] = None
    config_file.write_text(json.dumps(config, indent=2))


def _build(arch: str, with_pad: bool, chat_template: bool) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    key = (arch, with_pad, chat_template)
    if key not in _BUILT:
        tokenizer = build_tokenizer(with_pad, chat_template, add_bos=arch in ADDS_BOS)
        config = model_config(arch, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                              tokenizer.pad_token_id)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        path = _cache_root() / f"{arch}-pad{int(with_pad)}-chat{int(chat_template)}"
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        _pin_unset_specials(path, with_pad)
        _BUILT[key] = path
    return _BUILT[key]


def write_checkpoint(dest: Path, arch: str, *, with_pad: bool = True, chat_template: bool = False) -> Path:
    """Write a tiny `arch` checkpoint (model + tokenizer) into the folder dest and return it."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    dest = Path(dest)
    shutil.copytree(_build(arch, with_pad, chat_template), dest, dirs_exist_ok=True)
    return dest


def write_unknown_architecture(dest: Path) -> Path:
    """A real transformers causal LM family that the architecture table does not know (BLOOM), config only."""
    from transformers import BloomConfig

    BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4).save_pretrained(dest)
    return Path(dest)


def write_without_pad_or_eos(dest: Path) -> Path:
    """A Llama checkpoint whose tokenizer names neither a pad nor an eos token."""
    path = write_checkpoint(dest, "llama")
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.update(pad_token=None, eos_token=None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path
