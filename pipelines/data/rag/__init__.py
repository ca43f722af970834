"""Retrieval: MiniLM embeddings and a FAISS document index that supports incremental upsert and exact deletion.

torch, transformers and faiss are imported on first use, so importing this package stays cheap.
"""

from pipelines.data.rag.embedder import Embedder, default_model_path, text_hash
from pipelines.data.rag.index import DocumentIndex, Hit, UpsertReport, doc_key
from pipelines.data.rag.qa import answer_with_support, retrieval_hits

__all__ = [
    "DocumentIndex",
    "Embedder",
    "Hit",
    "UpsertReport",
    "answer_with_support",
    "default_model_path",
    "doc_key",
    "retrieval_hits",
    "text_hash",
]
