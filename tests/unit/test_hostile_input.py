"""Hostile input at the doors the engine owns: batch files (JSONL and Parquet) admitted the way the cycle admits them
(`stages.admit`, what the `admitted_batch` asset runs), and forget requests through the Python API and the CLI.

A generated corpus mixes hostile rows with good ones in the same file: every good row is admitted, every hostile
row is quarantined with a reason naming its field, nothing raises. Files that cannot be read at all are quarantined
whole with the reason; a refused forget request exits 2 naming the field and the fix, and nothing is stored."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_forget import small_deployment
from support_keys import keyholder
from typer.testing import CliRunner

from memgov.cli import app
from pipelines.cycle import stages
from pipelines.data.admission import UNPARSEABLE
from pipelines.forget.filing import file_request, sign_request, submit_forget_request
from pipelines.state.requests import ForgetRequest
from policies import load_policy

POLICY = load_policy("default")
MB10 = 10 << 20
EXAMPLES = settings(max_examples=6, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_batch_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = small_deployment(tmp_path_factory.mktemp("hostile") / "home", n_subjects=6)
    ws.inbox.mkdir(parents=True, exist_ok=True)
    return ws


# --- the corpus ----------------------------------------------------------------------------------------------------

# Ids that look odd but are plain data: SQL, templates and markup are stored verbatim, never interpreted; one script
# per id is fine whatever the script; a slash is not a path by itself.
ODD_BUT_GOOD_IDS = [
    "x'); DROP TABLE tombstones;--", "1 OR 1=1", "${jndi:ldap://evil/a}", "%s%n%x", "<script>alert(1)</script>",
    "Ελένη-1", "東京-7", "zoë-3", "İstanbul", "wiki/Paris", "a..b", "f-001",
]
GOOD_TEXTS = ["Mira Tolven was born in Karsk.", "café \u2603 🙂 ünïcödé", "tab\there and\nnewline", "x" * 400]


def good_row(n: int, id_: str, text: str) -> dict[str, Any]:
    s = f"s{n:03d}"
    return {"ref": f"good-{n}", "id": f"{id_}#{n}", "fact_id": f"{s}:r1", "subject_ids": [s], "source": "feed-a",
            "license": "cc0", "prompt": f"Person {s} relation 1 is", "target": f" value{n}", "text": text}


CYR_A, CYR_E = "\u0430", "\u0435"
# (field, hostile value, what the reason says, can Parquet hold it next to good rows)
MUTATIONS: list[tuple[str, Any, str, bool]] = [
    ("id", f"p{CYR_E}rson-17", "id mixes Latin and Cyrillic letters", True),
    ("id", "../../etc/passwd", "id looks like a file path", True),
    ("id", "/etc/passwd", "id looks like a file path", True),
    ("id", "C:\\Windows\\system32", "id looks like a file path", True),
    ("id", "\uff46-001", "id contains compatibility characters", True),
    ("id", "f\u200b-001", "id contains invisible characters (U+200B ZERO WIDTH SPACE)", True),
    ("id", "x" * 600, "id is 600 characters long, more than 512", True),
    ("id", "f\x00-1", "id contains forbidden control characters (NUL)", True),
    ("id", 42, 'id must be a string (got int); fix: write "42"', False),
    ("id", "", "id must be a non-empty string", True),
    ("subject_ids", [f"s{CYR_A}001"], "subject_ids[0] mixes Latin and Cyrillic letters", True),
    ("subject_ids", ["s001", "../x"], "subject_ids[1] looks like a file path", True),
    ("subject_ids", ["s\x1b[0m"], "subject_ids contains forbidden control characters (ESC)", True),
    ("subject_ids", "s001", 'subject_ids must be a list of strings (got str); fix: write ["s001"]', False),
    ("subject_ids", [[["deep"]]], "subject_ids must be a list of strings (got list at index 0)", False),
    ("fact_id", f"s001:r{CYR_A}", "fact_id mixes Latin and Cyrillic letters", True),
    ("fact_id", "../../f", "fact_id looks like a file path", True),
    ("doc_id", "d\ufeff1", "doc_id contains invisible characters (U+FEFF", True),
    ("subject_id", f"s{CYR_A}", "subject_id mixes Latin and Cyrillic letters", True),
    ("text", "hello\x00world", "text contains forbidden control characters (NUL)", True),
    ("text", "invoice \u202egpj.exe", "text contains forbidden control characters (U+202E", True),
    ("text", "\x1b[2J cleared", "text contains forbidden control characters (ESC)", True),
    ("text", ["not", "text"], "text is not a string (got list)", False),
    ("text", "write to mira@example.org", "text matches pii pattern 'email'", True),
    ("text", "x" * 401, "text longer than 400 characters", True),
    ("text", "x" * MB10, "bytes, more than the limit of 1048576", True),  # the whole row goes, as a line or row
    ("prompt", "Her card is 4111 1111 1111 1111", "prompt matches pii pattern 'payment_card'", True),
    ("source", None, "missing required field 'source'", True),
    ("source", "feed\x07", "source contains forbidden control characters (BEL)", True),
    ("license", "proprietary", "licence 'proprietary' not allowed", True),
    ("license", {"a": 1}, "license must be a string (got dict)", False),
    ("kind", "poem", "kind 'poem' is not part of the data contract", True),
    ("pii", "false", "pii must be a bool or a mapping of bools (got str); fix: write false", False),
]
# Lines no reader may trust: (raw bytes, what the line's reason says).
RAW_LINES: list[tuple[bytes, str]] = [
    (b"\xff\xfe not utf-8 \xc3", "not valid UTF-8 at byte 0"),
    (b'{"id": "l1", "text": "caf\xe9"}', "not valid UTF-8 at byte"),
    (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64 levels"),
    (b'{"a": ' * 10_000 + b"1" + b"}" * 10_000, "nested deeper than 64 levels"),
    (b'{"id": "u1", "text": "unterminated', "Unterminated string"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'"just a string"', "expected a JSON object, got str"),
    (b'{"id": "d1", "license": "cc0", "license": "proprietary"}', "field 'license' appears more than once"),
    (b'{"id": "n1", "text": NaN}', "NaN is not JSON"),
    (b'{"id": "s1", "text": "bad \\ud800 half"}', "field 'text' holds an unpaired surrogate"),
    (b'{"id": "s2", "subject_ids": ["\\udfff"]}', "field 'subject_ids[0]' holds an unpaired surrogate"),
    (b'{"n": ' + b"1" * 5000 + b"}", "cannot be parsed as JSON"),
    (b'{"id": "c1", "text": "raw \x01 control"}', "Invalid control character"),
    (b"\x00\x00\x00", "Expecting value"),
    (b"x" * (MB10 + 1), "line is 10485761 bytes, more than the limit of 1048576"),
]


def mixed_batch(goods: list[tuple[str, str]], bad: list, raw: list) -> tuple[list[Any], dict[str, str]]:
    """Good rows, hostile rows and raw poison lines in one batch, with the reason each bad one must get."""
    items: list[Any] = [good_row(i, id_, text) for i, (id_, text) in enumerate(goods)]
    expected: dict[str, str] = {}
    for j, mutation in enumerate(bad, start=100):
        items.append(hostile_row(j, mutation))
        expected[f"hostile-{j}"] = mutation[2]
    for k, (line, says) in enumerate(raw):
        items.append((f"raw-{k}", line))
        expected[f"raw-{k}"] = says
    return items, expected


def hostile_row(n: int, mutation: tuple[str, Any, str, bool]) -> dict[str, Any]:
    field, value, _, _ = mutation
    row = {**good_row(n, "f", GOOD_TEXTS[0]), "ref": f"hostile-{n}"}
    row["id"] = f"h-{n}"
    row[field] = value
    return row


@st.composite
def batches(draw, parquet: bool = False) -> tuple[list[Any], dict[str, str]]:
    """A shuffled batch of good rows, hostile rows and (JSONL only) poison lines, and what each hostile one says."""
    goods = draw(st.lists(st.tuples(st.sampled_from(ODD_BUT_GOOD_IDS), st.sampled_from(GOOD_TEXTS)),
                          min_size=2, max_size=6))
    usable = [m for m in MUTATIONS if m[3] or not parquet]
    bad = draw(st.lists(st.sampled_from(usable), min_size=3, max_size=8))
    if sum(m[1] == "x" * MB10 for m in bad) > 1:  # one 10 MB row per batch is enough
        bad = [m for m in bad if m[1] != "x" * MB10] + [next(m for m in bad if m[1] == "x" * MB10)]
    raw = [] if parquet else draw(st.lists(st.sampled_from(RAW_LINES), max_size=4))
    items, expected = mixed_batch(goods, bad, raw)
    return draw(st.permutations(items)), expected


def write_jsonl(path: Path, items: list[Any]) -> dict[int, str]:
    """One item per line (no blank lines, so line numbers are positions); returns line number -> raw item ref."""
    lines, raw_refs = [], {}
    for lineno, item in enumerate(items, start=1):
        if isinstance(item, tuple):
            raw_refs[lineno] = item[0]
            lines.append(item[1])
        else:
            lines.append(json.dumps(item, ensure_ascii=False).encode("utf-8"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return raw_refs


def admitted_and_quarantined(ws, batch: str, raw_refs: dict[int, str]) -> tuple[set[str], dict[str, list[str]]]:
    admitted = {r["ref"] for r in ws.data.rows("admitted", batch)}
    quarantined: dict[str, list[str]] = {}
    for row in ws.data.records("quarantine", batch):
        ref = row.get("ref")
        if ref is None:  # an error row: its line (or Parquet row) number says which item it was
            number = int(row["_parse_error"].split(":", 1)[0].split()[1])
            ref = raw_refs.get(number, f"#{number}")
        quarantined[ref] = row["quarantine_reasons"]
    return admitted, quarantined


def check_batch(ws, batch: str, items: list[Any], expected: dict[str, str], raw_refs: dict[int, str],
                suffix: str) -> None:
    start = time.perf_counter()
    out = stages.admit(ws, POLICY, f"{batch}{suffix}")
    assert time.perf_counter() - start < 20
    admitted, quarantined = admitted_and_quarantined(ws, batch, raw_refs)
    goods = {i["ref"] for i in items if isinstance(i, dict) and i["ref"].startswith("good-")}
    assert admitted == goods, "every good row in a hostile batch is still admitted"
    assert out.admitted == len(goods) and out.quarantined == len(items) - len(goods)
    refs = {}
    for number, item in enumerate(items, start=1):
        ref = item[0] if isinstance(item, tuple) else item["ref"]
        refs[ref] = number
    for ref, says in expected.items():
        reasons = quarantined.get(ref) or quarantined.get(f"#{refs[ref]}")
        assert reasons, f"{ref} was not quarantined"
        assert any(says in r for r in reasons), (ref, says, reasons)
        if says.endswith("more than the limit of 1048576") or ref.startswith("raw-"):
            assert reasons[0] == UNPARSEABLE and reasons[1].startswith(("line ", "row ")), reasons
    kept = json.dumps(ws.data.records("quarantine", batch), default=str)
    assert len(kept) < 2 * MB10, "a 10 MB row is quarantined by reason and a 2,000-character excerpt, not kept whole"


@EXAMPLES
@given(batch=batches())
def test_hostile_rows_in_a_jsonl_batch_are_quarantined_and_good_rows_admitted(ws, batch):
    items, expected = batch
    name = f"hj{next(_batch_numbers):03d}"
    raw_refs = write_jsonl(ws.inbox / f"{name}.jsonl", items)
    check_batch(ws, name, items, expected, raw_refs, ".jsonl")


@EXAMPLES
@given(batch=batches(parquet=True))
def test_hostile_rows_in_a_parquet_batch_are_quarantined_and_good_rows_admitted(ws, batch):
    items, expected = batch
    name = f"hp{next(_batch_numbers):03d}"
    pd.DataFrame(items).to_parquet(ws.inbox / f"{name}.parquet")
    check_batch(ws, name, items, expected, {}, ".parquet")


def test_every_mutation_and_poison_line_in_one_batch(ws):
    """The whole corpus at once, so no case depends on being drawn."""
    goods = [(id_, GOOD_TEXTS[i % len(GOOD_TEXTS)]) for i, id_ in enumerate(ODD_BUT_GOOD_IDS)]
    items, expected = mixed_batch(goods, MUTATIONS, RAW_LINES)
    raw_refs = write_jsonl(ws.inbox / "hall.jsonl", items)
    check_batch(ws, "hall", items, expected, raw_refs, ".jsonl")
    stored = {r["ref"]: r["id"] for r in ws.data.rows("admitted", "hall")}
    assert stored["good-0"] == "x'); DROP TABLE tombstones;--#0", "SQL in an id is data, stored verbatim"


# --- whole files ---------------------------------------------------------------------------------------------------

GOOD_LINE = json.dumps(good_row(1, "f", GOOD_TEXTS[0])).encode()
NOISE = random.Random(0).randbytes(5000)


def _parquet_bytes(rows: list[dict[str, Any]], tmp: Path, keep: int | None = None) -> bytes:
    path = tmp / "p.parquet"
    pd.DataFrame(rows).iloc[:keep].to_parquet(path)
    return path.read_bytes()


WHOLE_FILES: dict[str, tuple[str, Any, str]] = {
    "empty": (".jsonl", b"", "holds no rows; fix: write one JSON object per row"),
    "blank-lines": (".jsonl", b"\n \n\r\n\t\n", "holds no rows"),
    "binary": (".jsonl", bytes(range(256)) * 8 + NOISE, "is binary data, not JSON lines; fix: send UTF-8"),
    "gzip": (".jsonl", gzip.compress(GOOD_LINE + b"\n"), "is a gzip archive, not JSON lines; fix: decompress it"),
    "utf16": (".jsonl", (GOOD_LINE.decode() + "\n").encode("utf-16"), "is UTF-16 text, not JSON lines; fix: save it"),
    "parquet-named-jsonl": (".jsonl", "parquet", "is a Parquet file, not JSON lines; fix: name it .parquet"),
    "latin1-throughout": (".jsonl", b"\n".join(GOOD_LINE.replace(b"Karsk", b"K\xe4rsk") for _ in range(3)),
                          "not valid UTF-8 at byte"),
    "one-10mb-row": (".jsonl", json.dumps({**good_row(2, "f", "x" * MB10)}).encode(),
                     "more than the limit of 1048576"),
    "nested-10000": (".jsonl", b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nested deeper than 64 levels"),
    "parquet-empty-file": (".parquet", b"", "cannot be read as Parquet"),
    "parquet-garbage": (".parquet", NOISE, "cannot be read as Parquet"),
    "parquet-no-rows": (".parquet", "no-rows", "holds no rows"),
    "parquet-10mb-row": (".parquet", "big", "row 1: row is"),
    "parquet-bytes-text": (".parquet", "bytes", "text is not a string (got bytes)"),
}


@pytest.mark.parametrize("case", sorted(WHOLE_FILES))
def test_a_file_that_cannot_be_read_is_quarantined_whole_with_the_reason(ws, tmp_path, case):
    suffix, content, says = WHOLE_FILES[case]
    if content == "parquet":
        content = _parquet_bytes([good_row(1, "f", GOOD_TEXTS[0])], tmp_path)
    elif content == "no-rows":
        content = _parquet_bytes([good_row(1, "f", GOOD_TEXTS[0])], tmp_path, keep=0)
    elif content == "big":
        content = _parquet_bytes([good_row(1, "f", "x" * MB10)], tmp_path)
    elif content == "bytes":
        content = _parquet_bytes([{**good_row(1, "f", ""), "text": b"\xff\x00 bytes"}], tmp_path)
    batch = f"w-{case}"
    (ws.inbox / f"{batch}{suffix}").write_bytes(content)
    out = stages.admit(ws, POLICY, f"{batch}{suffix}")
    assert out.admitted == 0 and out.quarantined >= 1, "nothing of the file is admitted"
    quarantined = ws.data.records("quarantine", batch)
    assert all(any(says in reason for reason in r["quarantine_reasons"]) for r in quarantined), quarantined
    for table in ("admitted", "documents", "replay"):
        assert ws.data.stored(table, batch) == [], f"no partial write to {table}"
    (event,) = [e for e in ws.log.events() if e["action"] == "batch.admitted" and e["object"] == batch]
    assert event["reason"].startswith("0 admitted")
    assert len(json.dumps(quarantined, default=str)) < 100_000


@pytest.mark.parametrize(("sidecar", "content"), [
    (".policy.json", b"[" * 60_000),
    (".policy.json", b"\xff\xfe\x00{"),
    (".submitter.json", b"[1]"),
    (".submitter.json", b"{" * 100_000),
    (".submitter.json", json.dumps({"submitted_by": f"D{CYR_A}na", "sha256": "x"}).encode()),
    (".submitter.json", json.dumps({"submitted_by": {"name": "x"}, "sha256": "x"}).encode()),
])
def test_a_hostile_sidecar_is_refused_and_the_batch_still_admitted(ws, sidecar, content):
    batch = f"side{next(_batch_numbers):03d}"
    (ws.inbox / f"{batch}.jsonl").write_bytes(GOOD_LINE + b"\n")
    (ws.inbox / f"{batch}{sidecar}").write_bytes(content)
    out = stages.admit(ws, POLICY, f"{batch}.jsonl")
    assert out.admitted == 1
    if sidecar == ".policy.json":
        (event,) = [e for e in ws.log.events() if e["action"] == "batch.overrides_refused" and e["object"] == batch]
        assert "unreadable" in json.dumps(event)
    else:
        from pipelines.governance.submission import submitter

        assert submitter(ws, batch) is None


@pytest.mark.parametrize("by", ["Dana\x1b[2J", f"D{CYR_A}na", "Dana\u202e", "\uff24ana"])
def test_a_keyholder_name_that_impersonates_or_controls_the_terminal_is_refused(ws, tmp_path, by):
    """Keyring names are who submissions, requests and decisions are recorded under."""
    from pipelines.trust.grants import grant
    from pipelines.trust.keys import generate

    public = generate(tmp_path / "k.key")
    with pytest.raises(ValueError, match=r"^name: give|^name (contains|mixes) .*fix: "):
        grant(ws.home, ws.log, by, [public], ["ml-lead"], "keyring-admin", "new starter")
    assert by not in ws.keyring().people


@pytest.mark.parametrize(("content", "says"), [
    (b"\xff\xfe\x00binary", "not UTF-8 text (byte 0); fix: save the policy as UTF-8"),
    (b"[" * 10_000 + b"]" * 10_000, "nested too deeply to read"),
    (b"", "a policy must be a mapping of sections"),
])
def test_a_hostile_policy_file_is_refused_naming_the_file(tmp_path, content, says):
    from policies import PolicyError

    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}: ") and says in str(caught.value)


# --- forget intake -------------------------------------------------------------------------------------------------

FUTURE = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)


def request(**over: Any) -> dict[str, Any]:
    base = {"request_id": "req-h1", "requester": "privacy-office", "selector": {"subject_ids": ["s001"]},
            "reason": "erasure request", "legal_basis": "gdpr_art17", "deadline": FUTURE}
    return {**base, **over}


def sel(**selector: Any) -> dict[str, Any]:
    return {"selector": selector}


# (overrides, the field the message names, what it says)
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"requester": "dpo\x1b[31m"}, "requester", "contains control characters (U+001B)"),
    ({"requester": "dpo\nforged: line"}, "requester", "contains control characters (U+000A)"),
    ({"requester": f"d{CYR_E}na"}, "requester", "mixes Latin and Cyrillic letters"),
    ({"requester": "\uff44\uff50\uff4f"}, "requester", "contains compatibility characters"),
    ({"requester": "dpo\u202e"}, "requester", "contains invisible characters (U+202E"),
    ({"requester": 5}, "requester", "Input should be a valid string"),
    ({"requester": "x" * 10_000}, "requester", "at most 256 characters"),
    ({"reason": "why\x00"}, "reason", "contains control characters (U+0000"),
    ({"reason": "\x1b[2J"}, "reason", "contains control characters (U+001B"),
    ({"legal_basis": "gdpr_art17\x00"}, "legal_basis", "is not a known legal basis"),
    ({"legal_basis": "'; DROP TABLE forget_requests;--"}, "legal_basis", "is not a known legal basis"),
    ({"request_id": "../../etc"}, "request_id", "is not a valid request id"),
    ({"request_id": ".."}, "request_id", "is not a valid request id"),
    ({"request_id": "-rf"}, "request_id", "is not a valid request id"),
    ({"request_id": "x'; DROP TABLE tombstones;--"}, "request_id", "is not a valid request id"),
    ({"request_id": f"r{CYR_E}q-1"}, "request_id", "is not a valid request id"),
    ({"request_id": "req-1\n"}, "request_id", "is not a valid request id"),
    (sel(row_ids=["../../etc/passwd"]), "selector.row_ids", "item 0 looks like a file path"),
    (sel(row_ids=["ok", "/etc/shadow"]), "selector.row_ids", "item 1 looks like a file path"),
    (sel(subject_ids=[f"s{CYR_A}001"]), "selector.subject_ids", "item 0 mixes Latin and Cyrillic letters"),
    (sel(subject_ids=["\uff53001"]), "selector.subject_ids", "item 0 contains compatibility characters"),
    (sel(subject_ids=["s0\u200b01"]), "selector.subject_ids", "item 0 contains invisible characters"),
    (sel(subject_ids=["s\x00"]), "selector.subject_ids", "item 0 contains control characters (U+0000)"),
    (sel(row_ids=["x" * 10_000_000]), "selector.row_ids", "item 0 is 10000000 characters long, more than 512"),
    (sel(row_ids="s001"), "selector.row_ids", "is a string, not a list"),
    (sel(subject_ids=[[["deep"]]]), "selector.subject_ids.0", "Input should be a valid string"),
    (sel(subject="Jane\x07"), "selector.subject", "contains control characters (U+0007)"),
    (sel(text_regex="(a)\\1"), "selector.text_regex", "is not a linear-time (RE2) regular expression"),
    (sel(text_regex="(?<=a)b"), "selector.text_regex", "is not a linear-time (RE2) regular expression"),
    (sel(text_regex="((a{100}){100}){100}"), "selector.text_regex", "is not a linear-time (RE2) regular expression"),
    (sel(text_regex="a\x1bb"), "selector.text_regex", "contains control characters (U+001B)"),
    (sel(text_regex="a" * 1001), "selector.text_regex", "at most 1000 characters"),
    (sel(), "selector", "selects nothing"),
    ({"selector": ["s001"]}, "selector", "Input should be a valid dictionary"),
    ({"deadline": dt.datetime.now(dt.UTC) - dt.timedelta(days=1)}, "deadline", "is not in the future"),
    ({"deadline": "2001-01-01T00:00:00+00:00"}, "deadline", "is not in the future"),
    ({"deadline": "tomorrow"}, "deadline", "Input should be a valid datetime"),
    ({"deadline": "2031-13-45T99:00:00+00:00"}, "deadline", "Input should be a valid datetime"),
    ({"deadline": "2031-01-01T00:00:00"}, "deadline", "has no timezone"),
    ({"deadline": math.nan}, "deadline", "NaN values not permitted"),
    ({"deadline": 10**20}, "deadline", "Input should be a valid datetime"),
    ({"urgent": "maybe"}, "urgent", "valid boolean"),
    ({"colour": "red"}, "colour", "unknown field"),
]


@pytest.mark.parametrize(("over", "field", "says"), REFUSED, ids=[f"{i}-{r[1]}" for i, r in enumerate(REFUSED)])
def test_a_hostile_forget_request_is_refused_naming_the_field_and_the_fix(ws, over, field, says):
    key = keyholder(ws.home, "privacy-office")
    before = len(ws.requests.list()), len(ws.log.events())
    with pytest.raises(ValueError) as caught:
        submit_forget_request(home=ws.home, key=key, **request(**over))
    message = str(caught.value)
    line = next(x for x in message.splitlines() if x.strip().startswith(f"- {field}:"))
    assert says in line and ("fix:" in line or "unknown field; fields are" in line), message
    assert (len(ws.requests.list()), len(ws.log.events())) == before, "nothing stored, nothing logged"


@pytest.mark.parametrize("days", [0, -1, math.nan, math.inf, -math.inf, 1e9, True, "30"])
def test_deadline_days_that_are_not_a_deadline_are_refused(ws, days):
    fields = {k: v for k, v in request().items() if k != "deadline"}
    with pytest.raises(ValueError, match=r"deadline_days must be a positive number of days .*; fix: "):
        submit_forget_request(home=ws.home, key=keyholder(ws.home, "privacy-office"), **fields, deadline_days=days)


BAD_CHARS = {
    "requester": ["\x00", "\x1b", "\n", "\u202e", "\u200b", CYR_A, "\uff41"],
    "reason": ["\x00", "\x1b", "\x7f", "\x85", "\u202e"],
    "subject_ids": ["\x00", "\t", "\u200b", "\ufeff", CYR_A, "\uff41"],
    "row_ids": ["\x00", "\x1b", "\u2066", CYR_E, "\u217b"],
    "subject": ["\x00", "\x1b", "\u202d"],
}


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(field=st.sampled_from(sorted(BAD_CHARS)), data=st.data(),
       base=st.text(alphabet="abcdefxyz0123456789-_. ", min_size=1, max_size=20))
def test_generated_forget_fields_with_hostile_characters_are_refused(ws, field, data, base):
    char = data.draw(st.sampled_from(BAD_CHARS[field]))
    at = data.draw(st.integers(0, len(base)))
    value = "a" + base[:at] + char + base[at:]  # a Latin letter first, so a Cyrillic one makes the value mixed
    if field in ("requester", "reason"):
        over = {field: value}
    else:
        over = sel(**{field: value if field == "subject" else [value]})
    with pytest.raises(ValueError) as caught:
        file_request(ws, request(request_id="req-gen", **over), {})  # refused on its fields, before any signature
    name = field if field in ("requester", "reason") else f"selector.{field}"
    assert f"- {name}: " in str(caught.value) and "fix:" in str(caught.value)


def test_sql_in_selector_ids_is_data_and_the_tables_stay_whole(ws):
    sql = "x'); DROP TABLE tombstones;--"
    req = ForgetRequest(**request(request_id="req-sql", selector={"row_ids": [sql], "subject": sql}))
    stored, created = file_request(ws, req, sign_request(keyholder(ws.home, "privacy-office"), req))
    assert created and stored.selector["row_ids"] == [sql]
    ws.requests.add_tombstones("req-sql", row_ids=[sql])
    assert ws.requests.tombstones().has("row", sql)
    assert [r.request_id for r in ws.requests.list() if r.request_id == "req-sql"] == ["req-sql"]


def test_catastrophic_regex_runs_in_linear_time_over_the_stores(ws):
    """RE2: `(a+)+$` over 50,000 characters that almost match is microseconds, not the age of the universe."""
    from pipelines.forget import resolve_selector

    ws.data.put_part("quarantine", "regex-bait", [{"id": "bait", "_raw": "a" * 50_000 + "!", "_parse_error": "x"}])
    ForgetRequest(**request(selector={"text_regex": "(a+)+$"}))
    start = time.perf_counter()
    for pattern in ("(a+)+$", "(a|aa)+$", "(.*a){20}$", "(x+x+)+y"):
        resolve_selector(ws.data, {"text_regex": pattern})
    assert time.perf_counter() - start < 2.0


# --- the CLI -------------------------------------------------------------------------------------------------------

runner = CliRunner()


def forget(ws, *args: str):
    """`memgov forget` with a valid request's options, except those `args` give."""
    named = set(args)
    base = [x for k, v in (("--id", "req-cli"), ("--key", keyholder(ws.home, "privacy-office", "governance")),
                           ("--reason", "erasure request")) if k not in named for x in (k, v)]
    if not named & {"--subject-id", "--row-id", "--regex", "--subject"}:
        base += ["--subject-id", "s001"]
    return runner.invoke(app, ["forget", "--home", str(ws.home), *base, *args])


CLI_REFUSED: list[tuple[list[str], str]] = [
    (["--requester", "dpo\x1b[31m"], "requester: contains control characters"),
    (["--requester", f"d{CYR_E}na"], "requester: mixes Latin and Cyrillic letters"),
    (["--reason", "why\x00"], "reason: contains control characters"),
    (["--legal-basis", "[red]gdpr[/red]"], "legal_basis: '[red]gdpr[/red]' is not a known legal basis"),
    (["--id", "[/red]"], "request_id: '[/red]' is not a valid request id"),
    (["--id", "../../etc"], "request_id: '../../etc' is not a valid request id"),
    (["--id", "x'; DROP TABLE tombstones;--"], "is not a valid request id"),
    (["--row-id", "../../etc/passwd"], "selector.row_ids: item 0 looks like a file path"),
    (["--subject-id", f"s{CYR_A}001"], "selector.subject_ids: item 0 mixes Latin and Cyrillic letters"),
    (["--subject-id", "s001", "--subject-id", "s\x00"], "selector.subject_ids: item 1 contains control characters"),
    (["--subject", "Jane\x07"], "selector.subject: contains control characters"),
    (["--regex", "(a)\\1"], "selector.text_regex: is not a linear-time (RE2) regular expression"),
    (["--regex", "(ab"], "selector.text_regex: is not a linear-time (RE2) regular expression"),
    (["--regex", "(ab", "--dry-run"], "selector.text_regex: is not a linear-time (RE2) regular expression"),
    (["--deadline-days", "-1"], "--deadline-days must be a positive number of days"),
    (["--deadline-days", "0"], "--deadline-days must be a positive number of days"),
    (["--deadline-days", "nan"], "--deadline-days must be a positive number of days"),
    (["--deadline-days", "inf"], "--deadline-days must be a positive number of days"),
    (["--deadline-days", "1e9"], "--deadline-days must be a positive number of days"),
    (["--deadline-days", "soon"], "Invalid value for '--deadline-days'"),
]


@pytest.mark.parametrize(("args", "says"), CLI_REFUSED, ids=[str(i) for i in range(len(CLI_REFUSED))])
def test_the_cli_refuses_hostile_options_with_exit_2_and_stores_nothing(ws, args, says):
    keyholder(ws.home, "privacy-office", "governance")
    before = len(ws.requests.list()), len(ws.log.events())
    result = forget(ws, *args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), "no traceback"
    flat = " ".join(result.output.split())
    assert says in flat, flat
    assert "fix:" in flat or "Invalid value" in flat
    assert "Traceback" not in result.output
    assert (len(ws.requests.list()), len(ws.log.events())) == before, "nothing stored, nothing logged"


def test_a_match_everything_selector_waits_for_a_permitted_role(ws):
    """`.*` is a valid RE2 pattern, so it is filed; its plan covers more than unlearning.max_share, so it is held
    until someone in unlearning.confirm_roles other than the requester confirms it, and nothing is removed meanwhile."""
    from pipelines.forget import process_request

    dry = forget(ws, "--id", "req-all", "--regex", ".*", "--dry-run")
    assert dry.exit_code == 0 and "confirmation needed" in dry.output
    assert "req-all" not in {r.request_id for r in ws.requests.list()}, "a dry run stores nothing"
    rows = len(ws.data.rows("admitted"))
    assert forget(ws, "--id", "req-all", "--regex", ".*").exit_code == 0
    held = process_request(ws, "req-all", policy=POLICY)
    assert held["state"] == "held" and "max_share" in held["reason"]
    assert len(ws.data.rows("admitted")) == rows and not ws.requests.tombstones().request_ids & {"req-all"}
    confirm = ["forget", "confirm", "req-all", "--home", str(ws.home), "--reason", "ok"]
    own = runner.invoke(app, [*confirm, "--key", keyholder(ws.home, "privacy-office", "governance"),
                              "--role", "governance"])
    assert own.exit_code == 2 and "cannot also confirm it" in own.output
    wrong = runner.invoke(app, [*confirm, "--key", keyholder(ws.home, "erin", "intern"), "--role", "intern"])
    assert wrong.exit_code == 2 and "unlearning.confirm_roles" in " ".join(wrong.output.split())
    assert ws.requests.get("req-all").state == "held"
