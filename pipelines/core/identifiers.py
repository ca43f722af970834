"""What an id (row, subject, fact, document) and a person's name may look like.

Admission and forget intake apply the same rules, so a forget request can name exactly what admission let in, and
an id that only looks like another one (a Cyrillic 'е' in 'person-17') can neither slip past a tombstone nor
make a forget request silently select nothing.
"""

from __future__ import annotations

import re
import unicodedata

# C0 controls except tab/newline/CR, DEL, C1 controls (ESC covers ANSI escape sequences), and the bidirectional
# embedding/override/isolate characters that make text display differently from what it contains.
DEFAULT_FORBIDDEN_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
MAX_ID_CHARS = 512  # the width of a tombstone's value: a longer id could be admitted but never tombstoned
# Scripts whose letters are drawn alike: one id mixing two of them is almost always an impersonation.
CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "CHEROKEE", "COPTIC")
_PATH_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:[/\\]")
_MAX_NAMED = 3


def char_label(char: str) -> str:
    """U+0435 CYRILLIC SMALL LETTER IE: a character a reviewer cannot see or cannot tell apart, named."""
    return f"U+{ord(char):04X} {unicodedata.name(char, '')}".strip()


def _labels(chars: list[str]) -> str:
    return ", ".join(char_label(c) for c in list(dict.fromkeys(chars))[:_MAX_NAMED])


def mixed_scripts(text: str) -> list[str]:
    """The look-alike scripts whose letters `text` mixes, in order of appearance (empty when it uses one)."""
    seen: list[str] = []
    for char in text:
        if not unicodedata.category(char).startswith("L"):
            continue
        script = unicodedata.name(char, "").split(" ", 1)[0]
        if script in CONFUSABLE_SCRIPTS and script not in seen:
            seen.append(script)
    return seen if len(seen) > 1 else []


def _shape_problem(value: str, noun: str) -> str | None:
    """Invisible, compatibility and mixed-script characters: what makes two different strings look the same."""
    invisible = [c for c in value if unicodedata.category(c) == "Cf"]
    if invisible:
        return f"contains invisible characters ({_labels(invisible)}); fix: remove them"
    normal = unicodedata.normalize("NFKC", value)
    if normal != value:
        odd = [c for c in value if unicodedata.normalize("NFKC", c) != c]
        return f"contains compatibility characters ({_labels(odd)}); fix: write {normal!r}"
    scripts = mixed_scripts(value)
    if scripts:
        first = scripts[0]
        odd = [c for c in value if unicodedata.name(c, "").split(" ", 1)[0] in scripts[1:]]
        return (f"mixes {' and '.join(s.title() for s in scripts)} letters ({_labels(odd)} among {first.title()}), "
                f"so it looks like a different {noun}; fix: type it again in one script")
    return None


def id_problem(value: str) -> str | None:
    """Why a string cannot be an id, with the fix (None when it can). Control characters are checked elsewhere."""
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value)} characters long, more than {MAX_ID_CHARS}; fix: use a shorter id"
    if ".." in _PATH_SEPARATORS.split(value) or value.startswith(("/", "\\")) or _DRIVE.match(value):
        return f"looks like a file path ({value!r}); fix: ids name rows, not files: drop '..' and leading '/'"
    return _shape_problem(value, "id")


def name_problem(value: str) -> str | None:
    """Why a string cannot name a person or team (requester, submitter), with the fix; None when it can.

    Names decide who may approve what, so one that looks like another person's name is refused."""
    controls = [c for c in value if unicodedata.category(c) == "Cc"]
    if controls:
        return f"contains control characters ({_labels(controls)}); fix: remove them"
    return _shape_problem(value, "name")
