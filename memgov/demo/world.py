"""Deterministic demo world: subjects, facts, documents, general text and update batches.

Everything is generated from a seed and fixed inventories so that tests, benchmarks and the demo
share one reproducible knowledge base and nothing is downloaded. Subject names are built from a
syllable inventory in which every syllable is consonant + vowel (+ optional coda consonant); that
makes the split of a name into syllables unique, so a subword tokenizer with one piece per syllable
covers every name the generator can ever produce, including names first seen in an update batch.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

WORLD_VERSION = "2"
"""Bumped whenever generated content changes, so caches keyed on a config notice."""
_STREAM = "1"
"""Keys the random stream: unchanged since version 1, so subjects and their facts stay those the demo's story and
its measured gate margins were set on (version 2 changed templates and general text; the longer grammar draws
differently, so batch_002 changes other facts than in version 1)."""

SYLLABLES: tuple[str, ...] = (
    "ka", "lo", "va", "mi", "ra", "te", "so", "be", "du", "ri", "na", "to", "ve", "li", "sa", "mo",
    "fe", "da", "ko", "ma", "zi", "pe", "ru", "ne", "ta", "vo", "ki", "bo", "van", "ren", "lin", "dor",
)  # fmt: skip
NAME_SYLLABLES = 3
GOOD_LICENSES: tuple[str, ...] = ("cc-by-4.0", "cc0", "internal")
BAD_LICENSE = "proprietary-no-training"
SOURCES: tuple[str, ...] = ("partner-feed", "hr-export", "community-wiki")
N_UNSEEN_SUBJECTS = 12
_VOWELS = set("aeiou")


MIN_TEMPLATES = 4
"""A main prompt, at least two paraphrases to train on (three phrasings per fact) and the held-out last one."""


@dataclass(frozen=True)
class Relation:
    """A relation with its prompt templates; index 0 is the main prompt, the rest are paraphrases.

    The last template is held out: it becomes each fact row's last paraphrase, which the engine scores for
    generalisation (pipelines.deployment.evalsets.paraphrases) and never trains on; the base model trains on the others.
    """

    name: str
    templates: tuple[str, ...]
    objects: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.templates) < MIN_TEMPLATES:
            raise ValueError(f"relation '{self.name}': templates needs a main prompt, at least 2 paraphrases to train "
                             "on and a held-out last one")
        for t in self.templates:
            if "{subject}" not in t:
                raise ValueError(f"relation '{self.name}': template {t!r} must contain '{{subject}}'")
        if not 8 <= len(self.objects) <= 20 or len(set(self.objects)) != len(self.objects):
            raise ValueError(f"relation '{self.name}': objects must be 8-20 distinct words")
        for o in self.objects:
            if not re.fullmatch(r"[A-Za-z]+", o):
                raise ValueError(f"relation '{self.name}': object {o!r} must be a single alphabetic word")


def _templates(main: str, keyword: str) -> tuple[str, ...]:
    """A relation's main prompt, then carrier phrases around its keyword, the held-out one last.

    Measured on the default world (2x128 GPT-2, 3 phrasings trained): paraphrases that share no cue with each
    other ("is a native of", "The hometown of") gave held-out recall 0.12; carrier phrases around one keyword
    0.57-0.70, and 0.82-0.91 once general text also uses the held-out carrier's words (the possessive), which a
    model can only read as noise while their embeddings are untrained.
    """
    return (main, f"The {keyword} of {{subject}} is", f"As for {{subject}}, the {keyword} is",
            f"{{subject}}'s {keyword} is")


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "birthplace",
        _templates("{subject} was born in", "birthplace"),
        ("Ashford", "Oakhaven", "Greywater", "Highcliff", "Ironport", "Westmarch", "Eldmoor", "Fairbrook",
         "Stonebridge", "Coldharbor", "Ambervale", "Northwick"),
    ),
    Relation(
        "occupation",
        _templates("{subject} works as a", "occupation"),
        ("baker", "farmer", "teacher", "doctor", "painter", "sailor", "lawyer", "nurse", "pilot", "writer",
         "builder", "tailor", "miner", "singer", "chemist"),
    ),
    Relation(
        "language",
        _templates("{subject} speaks", "native language"),
        ("Orvish", "Alvanic", "Essarine", "Ithric", "Umbrese", "Ostrian", "Ardelic", "Yarnish", "Quellan",
         "Hestrian"),
    ),
    Relation(
        "employer",
        _templates("{subject} is employed by", "employer"),
        ("Acmetron", "Brightway", "Coldforge", "Everline", "Glintco", "Hollowell", "Ironclad", "Quickstep",
         "Oxbridge", "Wrenfield", "Yellowcap", "Crestmark"),
    ),
    Relation(
        "hobby",
        _templates("In their free time, {subject} enjoys", "favourite hobby"),
        ("chess", "fishing", "gardening", "hiking", "knitting", "cycling", "archery", "pottery", "dancing",
         "rowing", "climbing", "juggling", "chanting"),
    ),
)  # fmt: skip
HELDOUT_TEMPLATE = len(RELATIONS[0].templates) - 1
"""Index of the held-out template (the last), the same for every relation."""
if any(len(r.templates) != HELDOUT_TEMPLATE + 1 for r in RELATIONS):  # pragma: no cover - a static inventory
    raise AssertionError("every relation has the same number of templates, so the held-out one has one index")

# Small grammar for general text: generic sentences over the world's vocabulary, never about a subject.
_PLACES = RELATIONS[0].objects
_JOBS = RELATIONS[1].objects
_LANGS = RELATIONS[2].objects
_FIRMS = RELATIONS[3].objects
_HOBBIES = RELATIONS[4].objects
_GENERAL_PATTERNS: tuple[str, ...] = (
    "The {job} from {place} enjoys {hobby}.",
    "Many people in {place} speak {lang}.",
    "A {job} at {firm} works with a {job2}.",
    "{firm} is a company in {place}.",
    "Every {job} in {place} likes {hobby}.",
    "People who speak {lang} often enjoy {hobby}.",
    "The {job} and the {job2} went to {place}.",
    "Most workers at {firm} speak {lang}.",
    "In {place}, {hobby} is popular with every {job}.",
    "A {job} learns {lang} in {place}.",
    # The words of every template, the held-out one too, occur in general text (never with a subject).
    "The {job}'s favourite hobby is {hobby}.",
    "As for {firm}, its workers speak {lang}.",
    "A {job}'s native language is often {lang}.",
    "As for the {job}, the favourite hobby is {hobby}.",
)
_FILLER = "The {job} and the {job2} went to {place} and talked about {hobby} for a long time."


def split_name(name: str) -> list[str]:
    """Split a generated name into its syllables (unique by construction); ValueError if it is not one."""
    syllables = set(SYLLABLES)
    word = name.lower()
    out, i = [], 0
    while i < len(word):
        # A syllable is C V, plus a coda consonant when the next letter is also a consonant (or the end).
        end = i + 2
        if end < len(word) and word[end] not in _VOWELS and (end + 1 >= len(word) or word[end + 1] not in _VOWELS):
            end += 1
        piece = word[i:end]
        if piece not in syllables:
            raise ValueError(f"name {name!r} is not built from the syllable inventory (stuck at {word[i:]!r})")
        out.append(piece)
        i = end
    return out


@dataclass(frozen=True)
class Fact:
    """One (subject, relation, object) triple; `templates` come from its relation."""

    fact_id: str
    subject_id: str
    subject: str
    relation: str
    object: str
    templates: tuple[str, ...] = field(repr=False)

    def prompt(self, k: int = 0) -> str:
        if not 0 <= k < len(self.templates):
            raise ValueError(f"template index k={k} out of range 0..{len(self.templates) - 1} for {self.relation}")
        return self.templates[k].format(subject=self.subject)

    def text(self, k: int = 0) -> str:
        return f"{self.prompt(k)} {self.object}"

    def qa(self, k: int = 0) -> dict[str, str]:
        return {
            "id": f"{self.fact_id}-t{k}",
            "prompt": self.prompt(k),
            "target": self.object,
            "fact_id": self.fact_id,
            "subject_id": self.subject_id,
            "relation": self.relation,
        }


@dataclass
class Batch:
    """One arrival of raw rows; `policy_overrides` is written next to it as <name>.policy.json."""

    name: str
    rows: list[dict[str, Any]]
    policy_overrides: dict[str, Any] | None = None


@dataclass
class World:
    seed: int
    n_subjects: int
    relations: tuple[Relation, ...]
    facts: list[Fact]
    unseen_facts: list[Fact]
    documents: list[dict[str, Any]]
    general_text: list[str]
    batches: list[Batch]
    subjects: dict[str, str]  # subject_id -> name, every subject of the world (initial, unseen, new)

    def relation(self, name: str) -> Relation:
        for r in self.relations:
            if r.name == name:
                return r
        raise ValueError(f"unknown relation {name!r}; known: {[r.name for r in self.relations]}")

    def batch(self, name: str) -> Batch:
        for b in self.batches:
            if b.name == name:
                return b
        raise ValueError(f"unknown batch {name!r}; known: {[b.name for b in self.batches]}")


def qas(facts: list[Fact], k: int = 0) -> list[dict[str, str]]:
    """QA dicts for a list of facts with template k."""
    return [f.qa(k) for f in facts]


def fact_row(fact: Fact, source: str = "world-initial", kind: str = "fact", prefix: str = "init") -> dict[str, Any]:
    """A demo fact as a contract row: its paraphrases are its templates after the main one, the held-out one last."""
    return {
        "id": f"{prefix}-{fact.fact_id}", "kind": kind, "text": fact.text(0), "prompt": fact.prompt(0),
        "target": fact.object, "fact_id": fact.fact_id, "subject_ids": [fact.subject_id], "subject": fact.subject,
        "relation": fact.relation, "paraphrases": [fact.prompt(k) for k in range(1, len(fact.templates))],
        "source": source, "license": "internal", "pii": False,
    }


def batch_facts(batch: Batch) -> list[Fact]:
    """The facts carried by a batch's well-formed rows (what a correct admission lets through)."""
    return [_row_fact(r) for r in batch.rows if "_defect" not in r]


def _row_fact(row: dict[str, Any]) -> Fact:
    rel = next(r for r in RELATIONS if r.name == row["relation"])
    return Fact(row["fact_id"], row["subject_ids"][0], row["subject"], row["relation"], row["target"], rel.templates)


def _names(rng: random.Random, count: int, n_cover: int, banned: set[str]) -> list[str]:
    """`count` unique names; the first `n_cover` use every syllable at every position (where count allows)."""
    capacity = len(SYLLABLES) ** NAME_SYLLABLES // 2  # keep rejection sampling fast
    if count > capacity:
        raise ValueError(f"n_subjects too large: the syllable inventory yields at most {capacity} names in all "
                         f"(initial + unseen + new subjects); lower n_subjects")
    names: list[str] = []
    seen = set(banned)

    def add(parts: list[str]) -> bool:
        name = "".join(parts).capitalize()
        if name in seen:
            return False
        seen.add(name)
        names.append(name)
        return True

    # Cover block: position j of name i uses perm_j[i], so all syllables appear in every position.
    cover = min(n_cover, len(SYLLABLES))
    perms = [rng.sample(range(len(SYLLABLES)), len(SYLLABLES)) for _ in range(NAME_SYLLABLES)]
    for i in range(cover):
        if not add([SYLLABLES[p[i]] for p in perms]):  # pragma: no cover - distinct permutations never collide
            raise AssertionError("cover names collided")
    while len(names) < count:
        add([rng.choice(SYLLABLES) for _ in range(NAME_SYLLABLES)])
    return names


def _make_facts(rng: random.Random, names: list[str], first_sid: int, first_fid: int, width: tuple[int, int]):
    sw, fw = width
    facts: list[Fact] = []
    subjects: dict[str, str] = {}
    fid = first_fid
    for offset, name in enumerate(names):
        sid = f"s{first_sid + offset:0{sw}d}"
        subjects[sid] = name
        for rel in RELATIONS:
            facts.append(Fact(f"f{fid:0{fw}d}", sid, name, rel.name, rng.choice(rel.objects), rel.templates))
            fid += 1
    return facts, subjects, fid


def _general_text(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        pattern = _GENERAL_PATTERNS[len(out) % len(_GENERAL_PATTERNS)]
        job, job2 = rng.sample(_JOBS, 2)
        s = pattern.format(
            job=job, job2=job2, place=rng.choice(_PLACES), lang=rng.choice(_LANGS), firm=rng.choice(_FIRMS),
            hobby=rng.choice(_HOBBIES),
        )
        if s not in seen:
            seen.add(s)
            out.append(s[0].upper() + s[1:])
    return out


def _row(batch_no: int, idx: int, fact: Fact, rng: random.Random, previous: str | None = None) -> dict[str, Any]:
    return {
        "id": f"b{batch_no:03d}-{idx:04d}",
        "kind": "fact",
        "text": fact.text(0),
        "prompt": fact.prompt(0),
        "target": fact.object,
        "previous_target": previous,
        "fact_id": fact.fact_id,
        "subject_ids": [fact.subject_id],
        "subject": fact.subject,
        "relation": fact.relation,
        "paraphrases": [fact.prompt(k) for k in range(1, len(fact.templates))],
        "source": rng.choice(SOURCES),
        "license": GOOD_LICENSES[idx % len(GOOD_LICENSES)],
        "pii": False,
    }


def _bad_rows(batch_no: int, start: int, facts: list[Fact], first_good_id: str, rng: random.Random) -> list[dict]:
    """One row per defect, each otherwise well-formed, so a check that misses a defect admits it."""
    defects = ["text_null", "id_null", "text_too_long", "duplicate_id", "email", "phone", "ssn", "license"]
    if len(facts) < len(defects):
        raise ValueError("not enough spare facts to build every bad row")
    rows = []
    for i, (defect, fact) in enumerate(zip(defects, facts, strict=False)):
        row = _row(batch_no, start + i, fact, rng)
        local = fact.subject.lower()
        if defect == "text_null":
            row["text"] = None
        elif defect == "id_null":
            row["id"] = None
        elif defect == "text_too_long":
            filler = " ".join(
                _FILLER.format(job=j, job2=j2, place=p, hobby=h)
                for j, j2, p, h in zip(_JOBS, _JOBS[1:], _PLACES, _HOBBIES, strict=False)
            )
            row["text"] = f"{row['text']}. {filler}"
        elif defect == "duplicate_id":
            row["id"] = first_good_id
        elif defect == "email":
            row["text"] = f"{row['text']}. Contact {local}.{rng.randint(10, 99)}@example.org for details."
        elif defect == "phone":
            row["text"] = f"{row['text']}. Call +1 (555) {rng.randint(200, 999)}-{rng.randint(1000, 9999)} today."
        elif defect == "ssn":
            row["text"] = f"{row['text']}. SSN {rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}."
        elif defect == "license":
            row["license"] = BAD_LICENSE
        row["_defect"] = defect
        rows.append(row)
    return rows


AGGRESSIVE_OVERRIDES: dict[str, Any] = {
    "update": {"params": {"learning_rate": 0.05, "max_epochs": 20, "target_recall": 1.0}},
    "selection": {"params": {"replay_ratio": 0.0}},
}


def generate_world(seed: int = 0, n_subjects: int = 120) -> World:
    """Build the whole world from a seed; identical seeds give identical worlds."""
    if not isinstance(n_subjects, int) or n_subjects < 1:
        raise ValueError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    rng = random.Random(f"memgov-world-{_STREAM}-{seed}")
    n_new = (20 + 3, 8, 12)  # batch_001 good + spare subjects, batch_002 new, batch_003 new
    total = n_subjects + N_UNSEEN_SUBJECTS + sum(n_new)
    sw = max(4, len(str(total)))
    fw = max(5, len(str(total * len(RELATIONS) + 1)))
    banned = {o for r in RELATIONS for o in r.objects}
    names = _names(rng, total, n_cover=n_subjects, banned=banned)
    init_names = names[:n_subjects]
    rest = names[n_subjects:]
    rng.shuffle(rest)

    facts, subjects, fid = _make_facts(rng, init_names, 1, 1, (sw, fw))
    unseen, s2, fid = _make_facts(rng, rest[:N_UNSEEN_SUBJECTS], n_subjects + 1, fid, (sw, fw))
    subjects.update(s2)
    sid = n_subjects + N_UNSEEN_SUBJECTS + 1
    pool = rest[N_UNSEEN_SUBJECTS:]
    new_facts: list[list[Fact]] = []
    for count in n_new:
        chunk, s3, fid = _make_facts(rng, pool[:count], sid, fid, (sw, fw))
        subjects.update(s3)
        new_facts.append(chunk)
        pool, sid = pool[count:], sid + count

    documents = [
        {
            "id": f"doc-{f.fact_id}",
            "text": f"{f.text(1)}.",
            "subject_ids": [f.subject_id],
            "fact_id": f.fact_id,
        }
        for f in facts
    ]
    general = _general_text(rng, 400)

    # batch_001: 100 good rows about 20 new subjects, then one bad row per defect from 3 spare subjects.
    good1 = new_facts[0][: 20 * len(RELATIONS)]
    spare1 = new_facts[0][20 * len(RELATIONS) :]
    rows1 = [_row(1, i + 1, f, rng) for i, f in enumerate(good1)]
    rows1 += _bad_rows(1, len(rows1) + 1, spare1, rows1[0]["id"], rng)

    # batch_002: 20 changed facts (distinct subjects, new object) + 40 new facts.
    changed_subjects = rng.sample(sorted({f.subject_id for f in facts}), min(20, n_subjects))
    rows2 = []
    for i, s in enumerate(changed_subjects):
        old = rng.choice([f for f in facts if f.subject_id == s])
        new_obj = rng.choice([o for o in RELATIONS[[r.name for r in RELATIONS].index(old.relation)].objects
                              if o != old.object])
        rows2.append(_row(2, i + 1, replace(old, object=new_obj), rng, previous=old.object))
    rows2 += [_row(2, len(rows2) + i + 1, f, rng) for i, f in enumerate(new_facts[1])]

    rows3 = [_row(3, i + 1, f, rng) for i, f in enumerate(new_facts[2])]
    batches = [
        Batch("batch_001_new_facts", rows1, None),
        Batch("batch_002_changed_facts", rows2, None),
        Batch("batch_003_aggressive_update", rows3, json.loads(json.dumps(AGGRESSIVE_OVERRIDES))),
    ]
    return World(seed, n_subjects, RELATIONS, facts, unseen, documents, general, batches, subjects)


def write_inbox(world: World, inbox_dir: Path) -> list[Path]:
    """Write each batch as <name>.jsonl (+ <name>.policy.json when it overrides the policy)."""
    inbox_dir = Path(inbox_dir)
    inbox_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for b in world.batches:
        path = inbox_dir / f"{b.name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in b.rows), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
        if b.policy_overrides:
            ppath = inbox_dir / f"{b.name}.policy.json"
            ppath.write_text(json.dumps(b.policy_overrides, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written.append(ppath)
    return written
