"""Vet a base-model checkpoint before a deployment is built on it.

`memgov init --base-model PATH_OR_ID` must refuse a bad checkpoint before anything is written, with a
message that names the problem and the fix, instead of failing hours later inside a training job. Only
the config and the tokenizer are read (local files only, never the network); the module layout is checked
on an empty meta-device model, so no weights are loaded. The digest identifies a local folder by content.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.core.digests import dir_digest
from pipelines.model.architectures import (
    ARCHITECTURES,
    UnknownArchitecture,
    n_layers_of,
    resolve_architecture,
)

PAD_BORROWED = "eos (borrowed)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")


class CheckpointError(ValueError):
    """A checkpoint memgov cannot use; the message names the problem and the fix."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What init records about a base model, and what the engine will use on it."""

    path: str  # absolute folder, or the hub id as given when it came from the local Hugging Face cache
    model_type: str
    architecture: str  # entry of pipelines.model.architectures.ARCHITECTURES
    model_class: str  # the AutoModelForCausalLM class, e.g. LlamaForCausalLM
    n_layers: int
    hidden_size: int
    model_vocab_size: int  # rows of the input embedding
    tokenizer_vocab_size: int  # len(tokenizer), added tokens included
    pad_token: str  # the pad token, or PAD_BORROWED when eos stands in for it
    eos_token: str | None
    bos_token: str | None
    has_chat_template: bool
    prompt_format: str  # how prompts and answers reach the model (pipelines.model.lm.prompt_format)
    lora_targets: tuple[str, ...]
    default_edit_layer: int
    digest: str | None  # sha256 dir digest of a local folder (as the artifact store computes it), else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, for init reports and the change log."""
        out = asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _locate(path_or_id: str) -> tuple[str, Path | None]:
    """The folder to read, or (id, None) for a hub id that may be in the local cache."""
    if not isinstance(path_or_id, str) or not path_or_id.strip():
        raise CheckpointError("base model must be a folder path or a Hugging Face model id, got an empty value")
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve()
    if path.exists():
        raise CheckpointError(
            f"base model {path_or_id!r} is a file, not a model folder; fix: pass the folder written by "
            "save_pretrained (it holds config.json, the weights and the tokenizer files)"
        )
    looks_like_path = path.is_absolute() or path_or_id.startswith((".", "~")) or path_or_id.count("/") > 1
    if looks_like_path or not _HUB_ID.match(path_or_id):
        raise CheckpointError(
            f"base model path {path_or_id!r} does not exist; fix: pass an existing folder written by save_pretrained"
        )
    return path_or_id, None


def _load_config(source: str, folder: Path | None):
    from transformers import AutoConfig

    if folder is not None and not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{source} is not a model folder: it has no config.json; fix: pass the folder written by "
            "model.save_pretrained(...) and tokenizer.save_pretrained(...)"
        )
    try:
        return AutoConfig.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        if folder is None:
            raise CheckpointError(
                f"{source!r} is neither an existing folder nor a model in the local Hugging Face cache "
                f"({_first_line(exc)}); fix: pass the folder of a saved model, or download it first on a machine "
                f"with network access (huggingface-cli download {source}) and pass the downloaded folder"
            ) from exc
        raise CheckpointError(
            f"config.json in {source} cannot be loaded by transformers ({_first_line(exc)}); fix: it must be valid "
            "JSON with a model_type this transformers version knows (re-save it with config.save_pretrained, or "
            "upgrade transformers)"
        ) from exc


def _check_causal(source: str, config) -> str:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_class = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if model_class is None:
        raise CheckpointError(
            f"{source} holds a {config.model_type!r} model, which is not a causal language model "
            "(AutoModelForCausalLM has no class for it); fix: pass a decoder-only causal LM checkpoint such as "
            f"{', '.join(sorted(ARCHITECTURES))}"
        )
    return model_class


def _check_layout(source: str, config, arch) -> None:
    """The table's layer path, MLP output and LoRA targets exist in an empty (meta-device) model of this config."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:
        return
    names = {name for name, _ in model.named_modules()}
    suffixes = {name.rsplit(".", 1)[-1] for name in names}
    problems = [f"lora target {t!r}" for t in arch.lora_targets if t not in suffixes]
    if arch.layers_path not in names:
        problems.append(f"layers_path {arch.layers_path!r}")
    elif f"{arch.layers_path}.0.{arch.mlp_out}" not in names:
        problems.append(f"mlp_out {arch.mlp_out!r}")
    if problems:
        raise CheckpointError(
            f"{source}: this {config.model_type!r} model has no {', '.join(problems)} named by its line in "
            "pipelines/model/architectures.py; fix: correct that line for this checkpoint, or set "
            "update.params.target_modules and edit.params.layer in the policy"
        )


def _load_tokenizer(source: str, folder: Path | None):
    from transformers import AutoTokenizer

    fix = f"fix: save the model's tokenizer into the folder with tokenizer.save_pretrained({source!r})"
    if folder is not None and not any((folder / f).is_file() for f in _VOCAB_FILES) and not any(
        folder.glob("*.tiktoken")
    ):
        raise CheckpointError(f"{source} has no tokenizer files ({', '.join(_VOCAB_FILES)}); {fix}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"the tokenizer in {source} cannot be loaded ({_first_line(exc)}); {fix}") from exc
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        raise CheckpointError(f"the tokenizer in {source} has no vocabulary beyond its special tokens; {fix}")
    return tokenizer


def inspect_checkpoint(path_or_id: str, *, with_digest: bool = True) -> CheckpointInfo:
    """Check that a causal-LM checkpoint is usable by the engine and describe it; raises CheckpointError.

    with_digest=False skips hashing the weights (the slow part on a multi-gigabyte folder).
    """
    source, folder = _locate(path_or_id)
    config = _load_config(source, folder)
    model_class = _check_causal(source, config)
    try:
        arch = resolve_architecture(config)
    except UnknownArchitecture as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    _check_layout(source, config, arch)
    tokenizer = _load_tokenizer(source, folder)
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise CheckpointError(
            f"the tokenizer in {source} has neither a pad token nor an eos token, so batches cannot be padded and "
            "answers cannot end; fix: add one with tokenizer.add_special_tokens({'pad_token': '<pad>'}) (and "
            "model.resize_token_embeddings(len(tokenizer)) if it is new) and save both, or set pad_token in "
            "tokenizer_config.json"
        )
    from pipelines.model.lm import prompt_format

    text_config = config.get_text_config()
    model_vocab = int(text_config.vocab_size)
    if len(tokenizer) > model_vocab:
        raise CheckpointError(
            f"the tokenizer in {source} has {len(tokenizer)} tokens but the model's embedding has only {model_vocab} "
            "rows (config vocab_size), so some token ids have no embedding; fix: save the tokenizer that belongs to "
            "this model, or call model.resize_token_embeddings(len(tokenizer)) and save the model again"
        )
    return CheckpointInfo(
        path=source,
        model_type=config.model_type,
        architecture=arch.name,
        model_class=model_class,
        n_layers=n_layers_of(config),
        hidden_size=int(text_config.hidden_size),
        model_vocab_size=model_vocab,
        tokenizer_vocab_size=len(tokenizer),
        pad_token=tokenizer.pad_token if tokenizer.pad_token is not None else PAD_BORROWED,
        eos_token=tokenizer.eos_token,
        bos_token=tokenizer.bos_token,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        prompt_format=prompt_format(tokenizer),
        lora_targets=arch.lora_targets,
        default_edit_layer=arch.edit_layer(n_layers_of(config)),
        digest=dir_digest(folder) if folder is not None and with_digest else None,
    )
