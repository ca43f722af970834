"""RAG engine: real MiniLM embeddings and a FAISS index with incremental upsert, deletion and snapshots."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from pipelines.data.rag import DocumentIndex, Embedder, Hit, answer_with_support, doc_key, retrieval_hits

DOCS = [
    {
        "id": "eiffel",
        "text": "The Eiffel Tower is a wrought-iron tower in Paris.",
        "subject_ids": ["s-eiffel"],
        "fact_id": "f1",
    },
    {
        "id": "penguin",
        "text": "Emperor penguins breed during the Antarctic winter.",
        "subject_ids": ["s-penguin"],
        "fact_id": "f2",
    },
    {
        "id": "violin",
        "text": "Mira Tolven plays the violin in the Karsk orchestra.",
        "subject_ids": ["s-mira"],
        "fact_id": "f3",
    },
    {
        "id": "bread",
        "text": "Sourdough bread rises thanks to wild yeast and bacteria.",
        "subject_ids": ["s-bread"],
        "fact_id": "f4",
    },
    {
        "id": "python",
        "text": "Python is a programming language created by Guido van Rossum.",
        "subject_ids": ["s-python", "s-guido"],
        "fact_id": "f5",
    },
]


class CountingEmbedder:
    """Wraps the real embedder and records every text the index asks it to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seen: list[str] = []
        self.calls: list[int] = []  # texts per call

    def encode(self, texts):
        texts = list(texts)
        self.seen.extend(texts)
        self.calls.append(len(texts))
        return self.inner.encode(texts)


class HashEmbedder:
    """Deterministic stand-in for fast structural tests (no semantic meaning)."""

    dim = 8

    def encode(self, texts):
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
            vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(vec / np.linalg.norm(vec))
        return np.stack(rows)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def index(embedder) -> DocumentIndex:
    idx = DocumentIndex(embedder.dim)
    idx.upsert(DOCS, embedder)
    return idx


def test_embedder_shape_norm_and_cache(embedder):
    vecs = embedder.encode(["a cat sits on the mat", "stock markets fell sharply"])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32 and embedder.dim == 384
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    before = embedder.texts_embedded
    again = embedder.encode(["stock markets fell sharply", "a cat sits on the mat"])
    assert embedder.texts_embedded == before
    assert np.array_equal(again, vecs[::-1])
    related, unrelated = embedder.encode(["a kitten rests on the rug", "the bond market crashed"]) @ vecs[0]
    assert related > unrelated
    assert embedder.texts_embedded == before + 2
    assert embedder.forget_texts(["a cat sits on the mat", "never seen"]) == 1
    embedder.encode(["a cat sits on the mat", "stock markets fell sharply"])
    assert embedder.texts_embedded == before + 3
    with pytest.raises(ValueError, match="item 0 is a int"):
        embedder.encode([3])


def test_paraphrased_query_finds_the_right_doc(index, embedder):
    results = index.search(
        ["Which Paris landmark is made of iron?", "Who invented the Python language?", "Which bird breeds in winter?"],
        embedder,
        k=2,
    )
    assert [hits[0].doc_id for hits in results] == ["eiffel", "python", "penguin"]
    assert all(len(hits) == 2 and hits[0].score >= hits[1].score for hits in results)
    assert isinstance(results[0][0], Hit) and results[0][0].text == DOCS[0]["text"]


def test_retrieval_hits_and_support(index, embedder):
    qas = [
        {"prompt": "What instrument does Mira Tolven play?", "target": "violin"},
        {"prompt": "What instrument does Mira Tolven play?", "target": "cello"},
    ]
    assert retrieval_hits(index, embedder, qas, k=1) == [True, False]
    support = answer_with_support(index, embedder, qas[:1], k=2)
    assert support[0]["supported"] and support[0]["support_ids"] == ["violin"]
    with pytest.raises(ValueError, match="needs 'prompt' and 'target'"):
        retrieval_hits(index, embedder, [{"question": "x"}])


def test_delete_removes_from_results_and_faiss(embedder):
    idx = DocumentIndex(embedder.dim)
    idx.upsert(DOCS, embedder)
    query = ["Which Paris landmark is made of iron?"]
    assert idx.search(query, embedder, k=1)[0][0].doc_id == "eiffel"
    assert idx.delete(["eiffel", "not-there"]) == 1
    assert len(idx) == 4 and idx.ntotal == 4 and not idx.contains("eiffel")
    assert "eiffel" not in [h.doc_id for h in idx.search(query, embedder, k=10)[0]]
    assert idx.select_where(subject_ids=["s-guido"], fact_ids=["f2"]) == ["penguin", "python"]
    assert idx.delete_where(subject_ids=["s-guido"], fact_ids=["f2"]) == 2
    assert idx.doc_ids() == ["bread", "violin"] and idx.ntotal == 2
    assert idx.delete(["eiffel"]) == 0


def test_serialization_round_trip_gives_identical_results(index, embedder):
    payload = index.to_bytes()
    copy = DocumentIndex.from_bytes(payload)
    queries = ["iron tower", "wild yeast", "orchestra musician", "Antarctic birds"]
    a, b = index.search(queries, embedder, k=3), copy.search(queries, embedder, k=3)
    assert [[h.doc_id for h in hs] for hs in a] == [[h.doc_id for h in hs] for hs in b]
    assert np.allclose([[h.score for h in hs] for hs in a], [[h.score for h in hs] for hs in b])
    assert copy.fingerprint() == index.fingerprint() and copy.get("python") == index.get("python")
    assert copy.get("python")["subject_ids"] == ["s-python", "s-guido"]
    assert copy.to_bytes() == payload
    with pytest.raises(ValueError, match="bad header"):
        DocumentIndex.from_bytes(b"garbage")


def test_a_snapshot_streamed_to_a_file_is_the_same_payload(index, tmp_path):
    """`write` (how snapshots are saved) and `to_bytes` give identical bytes, wherever the file starts."""
    path = tmp_path / "snap"
    with open(path, "wb") as fh:
        fh.write(b"prefix")
        index.write(fh)
    assert path.read_bytes() == b"prefix" + index.to_bytes()
    empty = io.BytesIO()
    DocumentIndex(8).write(empty)
    assert empty.getvalue() == DocumentIndex(8).to_bytes()
    assert DocumentIndex.from_bytes(path.read_bytes()[6:]).fingerprint() == index.fingerprint()


def test_incremental_upsert_embeds_only_changed_docs(embedder):
    counting = CountingEmbedder(embedder)
    idx = DocumentIndex(embedder.dim)
    first = idx.upsert(DOCS, counting)
    assert (first.added, first.updated, first.unchanged, first.embedded) == (5, 0, 0, 5)
    fp = idx.fingerprint()
    counting.seen.clear()
    changed = [dict(d) for d in DOCS]
    changed[3]["text"] = "Rye bread is dense and dark."
    changed[1]["subject_ids"] = ["s-penguin", "s-antarctica"]  # metadata only
    new = {"id": "moon", "text": "The Moon orbits the Earth every 27 days.", "subject_ids": []}
    report = idx.upsert([*changed, new], counting)
    assert counting.seen == ["Rye bread is dense and dark.", new["text"]]
    assert (report.added, report.updated, report.unchanged, report.embedded) == (1, 2, 3, 2)
    assert len(idx) == 6 and idx.ntotal == 6 and idx.fingerprint() != fp
    assert idx.search(["dark rye loaf"], embedder, k=1)[0][0].text == "Rye bread is dense and dark."
    assert idx.get("penguin")["subject_ids"] == ["s-penguin", "s-antarctica"]
    counting.seen.clear()
    assert idx.upsert([*changed, new], counting).unchanged == 6
    assert counting.seen == []


def test_doc_key_is_stable_positive_int63():
    keys = {doc_key(f"doc-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(0 < k < 2**63 for k in keys)
    expected = int.from_bytes(hashlib.sha256(b"doc-7").digest()[:8], "big") & (2**63 - 1)
    assert doc_key("doc-7") == expected


def test_structural_errors_and_empty_index():
    emb = HashEmbedder()
    idx = DocumentIndex(emb.dim)
    assert idx.search(["anything"], emb, k=3) == [[]]
    with pytest.raises(ValueError, match="appears twice"):
        idx.upsert([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], emb)
    with pytest.raises(ValueError, match="needs a string 'text'"):
        idx.upsert([{"id": "a", "text": None}], emb)
    with pytest.raises(ValueError, match="non-empty string 'id'"):
        idx.upsert([{"text": "x"}], emb)
    with pytest.raises(ValueError, match=r"embedder returned shape \(1, 8\), index expects \(1, 4\)"):
        DocumentIndex(4).upsert([{"id": "a", "text": "x"}], emb)
    idx.upsert([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}], emb)
    assert [h.doc_id for h in idx.search(["x"], emb, k=5)[0]] == ["a", "b"]
    with pytest.raises(ValueError, match="k must be at least 1"):
        idx.search(["x"], emb, k=0)


def test_a_large_upsert_is_embedded_chunk_by_chunk_with_the_same_result(monkeypatch):
    """Memory stays flat however large the batch: the embedder sees one chunk at a time, and the index built
    that way is the one built in one go (same vectors, same snapshot)."""
    docs = [{"id": f"d{i}", "text": f"notice {i}: the market opens at {i % 9} today"} for i in range(23)]
    whole = DocumentIndex(HashEmbedder.dim)
    whole.upsert(docs, HashEmbedder())
    monkeypatch.setattr("pipelines.data.rag.index.UPSERT_CHUNK", 5)
    counting = CountingEmbedder(HashEmbedder())
    chunked = DocumentIndex(HashEmbedder.dim)
    report = chunked.upsert(docs, counting)
    assert report.added == 23 and counting.calls == [5, 5, 5, 5, 3]
    assert chunked.to_bytes() == whole.to_bytes()
    assert DocumentIndex.from_bytes(chunked.to_bytes()).fingerprint() == whole.fingerprint()
