"""Subword tokenizer for the demo world, built locally with the `tokenizers` library.

Why subword: a word-level vocabulary gives names first seen in an update batch untrained, nearly
identical embeddings, and updates then fail or wreck old knowledge. Here every word of the world's
fixed vocabulary (template words, objects, general-text words) is one piece, and names are split into
syllable pieces: the first syllable as a word-initial piece ("▁Ka"), the others as continuation pieces
("lo", "van"). Any name the syllable inventory can produce therefore tokenizes without an unknown
token, and every piece already occurs among the initial subjects. A unigram model (Viterbi search)
is used rather than greedy longest-match so that a whole-word piece can never block a name's split.
"""

from __future__ import annotations

from memgov.demo.world import _FILLER, _GENERAL_PATTERNS, RELATIONS, SYLLABLES, World

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
_MARK = "\u2581"  # word-start marker of the Metaspace pre-tokenizer


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement=_MARK, prepend_scheme="always"), pre_tokenizers.Punctuation()]
    )


def _static_texts() -> list[str]:
    """Every non-name string the world writes: templates, objects, grammar patterns and their slot fillers."""
    texts: list[str] = []
    for rel in RELATIONS:
        texts += [t.replace("{subject}", " ") for t in rel.templates]
        texts += [f"{t.replace('{subject}', ' ')} {o}." for t in rel.templates for o in rel.objects[:1]]
        texts += list(rel.objects)
        texts += [o.capitalize() for o in rel.objects]  # objects may open a general-text sentence
    slots = ("{job}", "{job2}", "{place}", "{lang}", "{firm}", "{hobby}")
    for pattern in (*_GENERAL_PATTERNS, _FILLER):
        text = pattern
        for s in slots:
            text = text.replace(s, " ")
        texts.append(text)
    return texts


def _world_texts(world: World) -> list[str]:
    """Texts of a world with subject names removed (names are covered by syllable pieces)."""
    out: list[str] = list(world.general_text)
    for doc in world.documents:
        text = doc["text"]
        for sid in doc["subject_ids"]:
            text = text.replace(world.subjects[sid], " ")
        out.append(text)
    return out


def vocabulary(world: World | None = None) -> list[str]:
    """Sorted pieces: syllable pieces plus every pre-token of the world's non-name text."""
    pre = _pre_tokenizer()
    words: set[str] = set()
    texts = _static_texts() + (_world_texts(world) if world is not None else [])
    for text in texts:
        words.update(tok for tok, _ in pre.pre_tokenize_str(text))
    words.discard(_MARK)
    pieces = {_MARK + s.capitalize() for s in SYLLABLES} | set(SYLLABLES)
    return sorted(words | pieces)


def build_tokenizer(world: World | None = None):
    """A `PreTrainedTokenizerFast` with pad/bos/eos/unk that puts BOS in front of every text itself (as Llama's
    does), so a plain `tokenizer(prompt)` call gives the ids the engine trains and scores on; no download, same
    pieces for the same inventories."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    pieces = vocabulary(world)
    # Equal scores: Viterbi then prefers the fewest pieces, so a known word stays whole.
    vocab = [(t, 0.0) for t in SPECIAL_TOKENS] + [(p, -10.0) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index(UNK), byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Metaspace(replacement=_MARK, prepend_scheme="always")
    bos_id = SPECIAL_TOKENS.index(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK, model_max_length=256
    )
    return fast
