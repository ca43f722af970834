"""Admission against hostile input: poison JSONL lines, bad encodings, corrupt Parquet, wrong field types,
payment card numbers and control characters. GX runs cost seconds, so the row checks share one batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.data.admission import UNPARSEABLE, AdmissionConfig, admit_batch, read_batch
from pipelines.data.admission import io as admission_io


def row(id_, text="Mira Tolven was born in Karsk.", **extra):
    base = {"id": id_, "text": text, "source": "feed-a", "license": "cc0", "subject_ids": ["subj-1"]}
    base.update(extra)
    return base


def chars(field: str, names: str) -> str:
    return f"{field} contains forbidden control characters ({names}); fix: remove them"


CARD = "text matches pii pattern 'payment_card'"

# Rows that must be admitted unchanged, although they come close to a rule.
NEAR_MISSES = [
    row("ok-empty-subjects", subject_ids=[]),
    row("ok-nulls", kind=None, previous_target=None, fact_id=None, paraphrases=None, pii=None),
    row("ok-typed", kind="fact", prompt="Mira was born in", target=" Karsk", fact_id="f1", relation="born_in",
        subject="Mira", paraphrases=["a", "b"], pii=False),
    row("ok-pii-map", pii={"email": False, "phone": True}),
    row("ok-luhn-fails", "reference 1234 5678 9012 3456 was issued"),
    row("ok-luhn-fails-2", "card 4111 1111 1111 1112 is a typo"),
    row("ok-short-numbers", "In 1999 about 12345 people lived in Karsk, 2019 2020 2021 code 55-12."),
    row("ok-whitespace", "tab\there,\nnewline\r\nand marks \u200e\u200f are fine"),
]

# id -> (row, exact reasons)
DEFECTS = {
    # 4. field types
    "t-subj-str": (
        row("t-subj-str", subject_ids="zq-77"),
        ['subject_ids must be a list of strings (got str); fix: write ["zq-77"]'],
    ),
    "t-subj-item": (
        row("t-subj-item", subject_ids=["a", 7]),
        ['subject_ids must be a list of strings (got int at index 1); fix: write ["a", "7"]'],
    ),
    "t-subj-blank": (
        row("t-subj-blank", subject_ids=["a", ""]),
        ["subject_ids must not contain empty strings (index 1 is empty); fix: remove that entry"],
    ),
    "t-source": (row("t-source", source=5), ['source must be a string (got int); fix: write "5"']),
    "t-fact": (row("t-fact", fact_id=["f1"]), ['fact_id must be a string (got list); fix: write "f1"']),
    "t-kind": (row("t-kind", kind={"a": 1}), ["kind must be a string (got dict); fix: write a single JSON string",
                                             "kind '{'a': 1}' is not part of the data contract; fix: use one of fact, "
                                             "instruction, document, edit, retention, general, locality, unseen, general_replay"]),
    "t-kind-unknown": (row("t-kind-unknown", kind="poem"),
                       ["kind 'poem' is not part of the data contract; fix: use one of fact, instruction, document, "
                        "edit, retention, general, locality, unseen, general_replay"]),
    "t-para": (
        row("t-para", paraphrases="a b"),
        ['paraphrases must be a list of strings (got str); fix: write ["a b"]'],
    ),
    "t-pii": (
        row("t-pii", pii="false"),
        ["pii must be a bool or a mapping of bools (got str); fix: write false (no quotes)"],
    ),
    "t-pii-map": (
        row("t-pii-map", pii={"email": "no"}),
        ["pii must be a bool or a mapping of bools (got str for key 'email'); fix: write true or false for each key"],
    ),
    "t-text": (row("t-text", ["not", "text"]), ["text is not a string (got list)"]),
    # 5. payment cards
    "c-spaces": (row("c-spaces", "pay with 4111 1111 1111 1111 please"), [CARD]),
    "c-dashes": (row("c-dashes", "card 4111-1111-1111-1111."), [CARD]),
    "c-plain": (row("c-plain", "4111111111111111"), [CARD]),
    "c-amex": (row("c-amex", "amex 3782 822463 10005 exp 12/29"), [CARD]),
    "c-prompt": (
        row("c-prompt", prompt="Her card is", target="5555555555554444"),
        ["target matches pii pattern 'payment_card'"],
    ),
    # 6. control characters, checked by GX in text columns and through derived columns elsewhere
    "x-nul": (row("x-nul", "a\x00b"), [chars("text", "NUL")]),
    "x-ansi": (row("x-ansi", "\x1b[31mred\x1b[0m alert"), [chars("text", "ESC")]),
    "x-del-bell": (row("x-del-bell", "ring\x07 and rub\x7f"), [chars("text", "BEL, DEL")]),
    "x-c1": (row("x-c1", "next\x85line"), [chars("text", "U+0085")]),
    "x-bidi": (row("x-bidi", "invoice \u202egpj.exe"), [chars("text", "U+202E RIGHT-TO-LEFT OVERRIDE")]),
    "x-isolate": (
        row("x-isolate", "\u2066hidden\u2069"),
        [chars("text", "U+2066 LEFT-TO-RIGHT ISOLATE, U+2069 POP DIRECTIONAL ISOLATE")],
    ),
    "x-target": (row("x-target", prompt="Mira lives in", target="Kar\x00sk"), [chars("target", "NUL")]),
    "x-id\x00": (row("x-id\x00"), [chars("id", "NUL")]),
    "x-source": (row("x-source", source="feed\x1b[0m"), [chars("source", "ESC")]),
    "x-subjects": (
        row("x-subjects", subject_ids=["ok", "s\u202d1"]),
        [chars("subject_ids", "U+202D LEFT-TO-RIGHT OVERRIDE")],
    ),
}
BAD_IDS = [
    # ids that are not strings are quarantined, not coerced; the row keeps its original id value
    (row(42), ['id must be a string (got int); fix: write "42"']),
    (row(["x-1"]), ['id must be a string (got list); fix: write "x-1"']),
    (row(""), ["id must be a non-empty string (got an empty string); fix: write a unique id or leave id out"]),
]


@pytest.fixture(scope="module")
def hardened():
    rows = [*NEAR_MISSES, *(r for r, _ in DEFECTS.values()), *(r for r, _ in BAD_IDS)]
    return rows, admit_batch(rows, AdmissionConfig(), batch_name="hard")


def test_near_misses_admitted_unchanged(hardened):
    _, result = hardened
    assert result.admitted == NEAR_MISSES


@pytest.mark.parametrize("key", sorted(DEFECTS))
def test_defect_quarantined_with_field_and_fix(hardened, key):
    _, result = hardened
    original, reasons = DEFECTS[key]
    got = {r["id"]: r for r in result.quarantined if isinstance(r["id"], str)}[key]
    assert got["quarantine_reasons"] == reasons
    assert {k: v for k, v in got.items() if k != "quarantine_reasons"} == original


def test_non_string_ids_quarantined_not_coerced(hardened):
    rows, result = hardened
    tail = result.quarantined[-len(BAD_IDS) :]
    for got, (original, reasons) in zip(tail, BAD_IDS, strict=True):
        assert got["quarantine_reasons"] == reasons
        assert {k: v for k, v in got.items() if k != "quarantine_reasons"} == original
    assert len(result.admitted) + len(result.quarantined) == len(rows)


def test_new_checks_appear_in_summary_and_markdown(hardened):
    _, result = hardened
    by_desc = {e["description"]: e for e in result.expectations}
    assert by_desc["subject_ids is a list of non-empty strings"] == {
        "name": "expect_column_values_to_be_in_set",
        "column": "subject_ids",
        "description": "subject_ids is a list of non-empty strings",
        "success": False,
        "unexpected_count": 3,
        "gx_column": "_type_ok__subject_ids",
    }
    assert by_desc["text free of pii 'payment_card'"]["unexpected_count"] == 4
    assert by_desc["target free of pii 'payment_card'"]["unexpected_count"] == 1
    # GX's own regex expectation sees NUL, ESC, C1 and bidi characters in the frame.
    assert by_desc["text free of forbidden characters"]["name"] == "expect_column_values_to_not_match_regex"
    assert by_desc["text free of forbidden characters"]["unexpected_count"] == 6
    assert by_desc["id is a non-empty string"]["unexpected_count"] == 3
    assert by_desc["pii is a bool or a mapping of bools"]["unexpected_count"] == 2
    json.dumps(result.to_dict())
    md = result.to_markdown()
    assert "| subject_ids free of forbidden characters | `subject_ids` | FAIL | 1 |" in md
    assert "| source is a string | `source` | FAIL | 1 |" in md


def test_card_detection_and_forbidden_characters_follow_config():
    cfg = AdmissionConfig(detect_payment_cards=False, forbidden_characters=r"[\u200b]")
    rows = [row("card", "4111 1111 1111 1111"), row("nul", "a\x00b"), row("zwsp", "in\u200bvisible")]
    result = admit_batch(rows, cfg)
    assert [r["id"] for r in result.admitted] == ["card", "nul"]
    assert result.quarantined[0]["quarantine_reasons"] == [chars("text", "U+200B ZERO WIDTH SPACE")]
    assert not any("payment_card" in e["description"] for e in result.expectations)


def test_admission_config_validates_new_keys():
    assert AdmissionConfig().detect_payment_cards is True
    with pytest.raises(ValueError, match="forbidden_characters is not a valid regular expression"):
        AdmissionConfig(forbidden_characters="[\\x00-")
    with pytest.raises(ValueError, match="forbidden_characters must not match the empty string"):
        AdmissionConfig(forbidden_characters="x*")
    with pytest.raises(ValueError, match="detect_payment_cards"):
        AdmissionConfig.parse({"detect_payment_cards": "sometimes"})


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("x4111111111111111x", True),
        ("ref 12 4111 1111 1111 1111 2", True),
        ("1234 5678 9012 3456", False),
        ("4111111111111111111111", False),  # 22 digits: not a card number
        ("12345 and 2019 2020 2021 2022", False),
        ("1 2 3 4 5 6 7 8 9 1 2 3 4 5 6", False),
        ("4111  1111  1111  1111", False),  # separators are single characters
    ],
)
def test_contains_payment_card(text, found):
    from pipelines.data.admission.admit import contains_payment_card

    assert contains_payment_card(text) is found


# --- 1-3: reading files ---------------------------------------------------------------------------------------

MIB = 1 << 20
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 50_000 + "1" + "}" * 50_000


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> tuple[Path, list[bytes]]:
    lines = [
        b"\xef\xbb\xbf" + json.dumps(row("j1")).encode(),  # a BOM before the first line is accepted
        DEEP_ARRAY.encode(),
        DEEP_OBJECT.encode(),
        json.dumps(row("j2", "brackets " + "[{" * 100 + ' inside a string \\" [')).encode(),
        b'{"id": "u1", "text": "caf\xe9", "source": "feed-a", "license": "cc0", "subject_ids": ["s"]}',
        b"",
        json.dumps(row("big", "x" * (MIB + 10))).encode(),  # over the 1 MiB default
        json.dumps(row("j3", "caf\u00e9 \u2603")).encode() + b"\r",  # CRLF line ending
        b'{"n": ' + b"1" * 5000 + b"}",
    ]
    path = tmp_path_factory.mktemp("poison") / "batch.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, lines


def test_poison_lines_become_error_rows_and_the_rest_is_read(poisoned):
    path, _ = poisoned
    rows = read_batch(path)
    assert [r["id"] for r in rows] == ["j1", None, None, "j2", None, None, "j3", None]
    errors = [r["_parse_error"] for r in rows if "_parse_error" in r]
    assert errors[:4] == [
        "line 2: nested deeper than 64 levels",
        "line 3: nested deeper than 64 levels",
        f"line 5: not valid UTF-8 at byte {poisoned[1][4].index(0xE9)}",
        f"line 7: line is {len(poisoned[1][6])} bytes, more than the limit of {MIB}",
    ]
    assert errors[4].startswith("line 9: cannot be parsed as JSON (Exceeds the limit")
    assert all(len(r["_raw"]) <= 2000 for r in rows if "_raw" in r)
    assert rows[4]["_raw"] == poisoned[1][4].decode("utf-8", errors="backslashreplace")
    assert "caf\\xe9" in rows[4]["_raw"]
    assert rows[6]["text"] == "caf\u00e9 \u2603"

    result = admit_batch(rows, AdmissionConfig(), batch_name="poison")
    assert [r["id"] for r in result.admitted] == ["j1", "j2", "j3"]
    by_id = {r["id"]: r["quarantine_reasons"] for r in result.quarantined}
    assert by_id["poison#row1"] == [UNPARSEABLE, "line 2: nested deeper than 64 levels"]
    assert by_id["poison#row4"] == [UNPARSEABLE, errors[2]]
    assert result.reason_counts()[UNPARSEABLE] == 5


def test_iter_jsonl_lines_gives_raw_bytes_for_rewriting(poisoned):
    path, lines = poisoned
    got = list(admission_io.iter_jsonl_lines(path))
    assert [lineno for lineno, _, _ in got] == [1, 2, 3, 4, 5, 7, 8, 9]
    assert got[0][1] == lines[0][3:]  # without the BOM
    assert got[4][1] == lines[4]  # undecodable bytes come back untouched
    assert got[6][1] == lines[7][:-1]  # without the CR of the line ending
    assert got[5][1] == lines[6]  # an oversized line is still yielded whole
    assert got[1][2]["_parse_error"] == "line 2: nested deeper than 64 levels"
    assert got[3][2]["id"] == "j2"


def test_parse_jsonl_line_is_bounded_and_never_raises():
    from pipelines.data.admission import parse_jsonl_line

    assert parse_jsonl_line('{"id": "a"}\n', 1) == {"id": "a"}
    assert parse_jsonl_line(b'{"id": "a"}\r\n', 1) == {"id": "a"}
    deep = parse_jsonl_line(DEEP_ARRAY, 3)
    assert deep["id"] is None and deep["_parse_error"] == "line 3: nested deeper than 64 levels"
    assert len(deep["_raw"]) <= 2000
    too_deep = "[" * 64 + "]" * 64  # 65 levels with the enclosing object
    assert parse_jsonl_line('{"a": ' + too_deep + "}", 1)["_parse_error"] == "line 1: nested deeper than 64 levels"
    assert parse_jsonl_line('{"a": ' + "[" * 63 + "]" * 63 + "}", 1) == {"a": json.loads("[" * 63 + "]" * 63)}
    assert parse_jsonl_line('{"a": "\\\\"}', 1) == {"a": "\\"}  # an escaped backslash ends before the quote
    assert parse_jsonl_line(b"caf\xc3", 4)["_parse_error"] == "line 4: not valid UTF-8 at byte 3"
    assert parse_jsonl_line("x" * 50, 2, max_line_bytes=10)["_parse_error"] == (
        "line 2: line is 50 bytes, more than the limit of 10"
    )
    assert parse_jsonl_line("[1]", 5)["_parse_error"] == "line 5: expected a JSON object, got list"
    assert parse_jsonl_line('{"a": [[1]]}', 6, max_depth=2)["_parse_error"] == "line 6: nested deeper than 2 levels"


def test_line_limits_default_and_can_be_set(tmp_path: Path):
    assert (admission_io.MAX_LINE_BYTES, admission_io.MAX_DEPTH) == (MIB, 64)
    path = tmp_path / "small.jsonl"
    path.write_text(json.dumps(row("s1")) + "\n" + json.dumps({"id": "s2", "a": [[1]]}) + "\n", encoding="utf-8")
    assert [r.get("_parse_error") for r in read_batch(path)] == [None, None]
    limited = read_batch(path, max_line_bytes=40, max_depth=1)
    assert [r["_parse_error"].split(":", 1)[0] for r in limited] == ["line 1", "line 2"]
    assert "more than the limit of 40" in limited[0]["_parse_error"]


def test_invalid_utf8_is_not_admitted_as_replacement_characters(tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(row("l1", "caf\u00e9")).encode("utf-8").replace(b"\\u00e9", b"\xe9") + b"\n")
    (only,) = read_batch(path)
    assert only["id"] is None and "\ufffd" not in only["_raw"]
    assert only["_parse_error"].startswith("line 1: not valid UTF-8 at byte ")


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1\x00\x00garbage PAR1"])
def test_corrupt_parquet_raises_a_clear_error(tmp_path: Path, content: bytes):
    path = tmp_path / "broken.parquet"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"broken\.parquet cannot be read as Parquet"):
        read_batch(path)


def test_truncated_parquet_raises_a_clear_error(tmp_path: Path):
    import pandas as pd

    good = tmp_path / "good.parquet"
    pd.DataFrame([row("p1"), row("p2")]).to_parquet(good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.parquet cannot be read as Parquet"):
        read_batch(cut)
    assert [r["id"] for r in read_batch(good)] == ["p1", "p2"]
