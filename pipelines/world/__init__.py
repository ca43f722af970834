"""Demo world: generator (facts, documents, general text, update batches), tokenizer and tiny base model."""

from pipelines.world.generator import (
    AGGRESSIVE_OVERRIDES,
    BAD_LICENSE,
    GOOD_LICENSES,
    RELATIONS,
    SYLLABLES,
    WORLD_VERSION,
    Batch,
    Fact,
    Relation,
    World,
    batch_facts,
    generate_world,
    qas,
    split_name,
    write_inbox,
)

__all__ = [
    "AGGRESSIVE_OVERRIDES",
    "BAD_LICENSE",
    "GOOD_LICENSES",
    "RELATIONS",
    "SYLLABLES",
    "WORLD_VERSION",
    "Batch",
    "Fact",
    "Relation",
    "World",
    "batch_facts",
    "generate_world",
    "qas",
    "split_name",
    "write_inbox",
]
