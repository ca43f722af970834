"""The demo world, a client of the engine: generator (facts, documents, general text, update batches), tokenizer,
tiny base model, and the story `make demo` tells. The engine (pipelines/, evals/, policies/) never imports it."""

from memgov.demo.world import (
    AGGRESSIVE_OVERRIDES,
    BAD_LICENSE,
    GOOD_LICENSES,
    HELDOUT_TEMPLATE,
    RELATIONS,
    SYLLABLES,
    WORLD_VERSION,
    Batch,
    Fact,
    Relation,
    World,
    batch_facts,
    fact_row,
    generate_world,
    qas,
    split_name,
    write_inbox,
)


def run_demo(*args, **kwargs):
    """The three-cycle story (memgov/demo/story.py), imported on use: it loads the engine."""
    from memgov.demo.story import run_demo as run

    return run(*args, **kwargs)


__all__ = [
    "AGGRESSIVE_OVERRIDES",
    "BAD_LICENSE",
    "GOOD_LICENSES",
    "HELDOUT_TEMPLATE",
    "RELATIONS",
    "SYLLABLES",
    "WORLD_VERSION",
    "Batch",
    "Fact",
    "Relation",
    "World",
    "batch_facts",
    "fact_row",
    "generate_world",
    "qas",
    "split_name",
    "run_demo",
    "write_inbox",
]
