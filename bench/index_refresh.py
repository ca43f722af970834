"""Incremental FAISS refresh (upsert only the new batch's documents) vs a full rebuild of the index."""

from __future__ import annotations

import argparse

from bench.results import markdown_table, timed, write_result


def run(n_subjects: int = 120, repeats: int = 3) -> list[dict]:
    from memgov.demo.world import generate_world
    from pipelines.data.rag import DocumentIndex, Embedder

    world = generate_world(0, n_subjects)
    base_docs = list(world.documents)
    new_docs = [{"id": r["id"], "text": r["text"], "subject_ids": r["subject_ids"], "fact_id": r.get("fact_id")}
                for r in world.batches[0].rows if r.get("id") and isinstance(r.get("text"), str) and "_defect" not in r]
    embedder = Embedder()
    base = DocumentIndex(embedder.dim)
    base.upsert(base_docs, embedder)
    base_bytes = base.to_bytes()

    def refresh_only():
        embedder.clear_cache()  # nothing precomputed: the refresh embeds what it adds
        index = DocumentIndex.from_bytes(base_bytes)
        return index.upsert(new_docs, embedder), index

    def rebuild():
        embedder.clear_cache()
        index = DocumentIndex(embedder.dim)
        index.upsert(base_docs + new_docs, embedder)
        return index

    t_inc, (report, refreshed) = timed(refresh_only, repeats)
    t_full, full = timed(rebuild, repeats)
    return [{"documents": len(full), "new documents": report.added, "incremental s (median)": t_inc,
             "full rebuild s (median)": t_full, "speed-up": t_full / t_inc,
             "same contents": refreshed.fingerprint() == full.fingerprint()}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(repeats=args.repeats)
    write_result("index_refresh", "Incremental index refresh vs full rebuild", markdown_table(rows),
                 "python -m bench.index_refresh")


if __name__ == "__main__":
    main()
