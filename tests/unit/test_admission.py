"""Admission engine: Great Expectations suite from config, row-level quarantine with reasons, batch reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.data.admission import (
    DUPLICATE_ID,
    TOMBSTONED,
    UNPARSEABLE,
    AdmissionConfig,
    admit_batch,
    batch_hash,
    read_batch,
)
from pipelines.state.requests.store import Tombstones


def row(id_, text="Mira Tolven was born in Karsk.", **extra):
    base = {"id": id_, "text": text, "source": "feed-a", "license": "cc0", "subject_ids": ["subj-1"]}
    base.update(extra)
    return base


GOOD = [
    row("good-1"),
    row("good-2", "Oren Vale works as a glassblower.", license="cc-by-4.0", subject_ids=["subj-2", "subj-3"]),
    row("good-3", "In 1999 about 12345 people lived in Karsk, code 55-12.", license="internal"),
]
DEFECTS = {
    "pii-email": (row("pii-email", "write to mira.tolven@example.org today"), "text matches pii pattern 'email'"),
    "pii-phone": (row("pii-phone", "call her at (555) 123-4567"), "text matches pii pattern 'phone'"),
    "pii-ssn": (row("pii-ssn", "her number is 123-45-6789"), "text matches pii pattern 'us_ssn'"),
    "too-long": (row("too-long", "x" * 401), "text longer than 400 characters (401)"),
    "licence": (
        row("licence", license="proprietary-no-training"),
        "licence 'proprietary-no-training' not allowed (allowed: cc-by-4.0, cc0, internal)",
    ),
    "no-source": (row("no-source", source=None), "missing required field 'source'"),
    "not-string": (row("not-string", 42), "text is not a string (got int)"),
}


@pytest.fixture(scope="module")
def mixed_result():
    rows = [*GOOD, *(r for r, _ in DEFECTS.values())]
    rows += [row("dup", "first copy"), row("dup", "second copy"), row(None, "a row without an id", source=None)]
    return rows, admit_batch(rows, AdmissionConfig(), batch_name="b7")


def _by_id(rows):
    return {r["id"]: r for r in rows}


def test_good_rows_admitted_unchanged(mixed_result):
    _, result = mixed_result
    assert [r["id"] for r in result.admitted] == ["good-1", "good-2", "good-3"]
    assert result.admitted[1] == GOOD[1]
    assert all("quarantine_reasons" not in r for r in result.admitted)


@pytest.mark.parametrize("key", sorted(DEFECTS))
def test_each_defect_quarantined_with_its_reason(mixed_result, key):
    _, result = mixed_result
    original, reason = DEFECTS[key]
    got = _by_id(result.quarantined)[key]
    assert got["quarantine_reasons"] == [reason]
    assert {k: v for k, v in got.items() if k != "quarantine_reasons"} == original


def test_duplicate_ids_all_quarantined(mixed_result):
    _, result = mixed_result
    dups = [r for r in result.quarantined if r["id"] == "dup"]
    assert [r["text"] for r in dups] == ["first copy", "second copy"]
    assert all(r["quarantine_reasons"] == [DUPLICATE_ID] for r in dups)


def test_null_id_gets_synthetic_address(mixed_result):
    rows, result = mixed_result
    synthetic = f"b7#row{len(rows) - 1}"
    got = _by_id(result.quarantined)[synthetic]
    assert got["quarantine_reasons"] == ["missing required field 'id'", "missing required field 'source'"]
    assert got["text"] == "a row without an id"


def test_counts_add_up_and_nothing_is_lost(mixed_result):
    rows, result = mixed_result
    assert len(result.admitted) + len(result.quarantined) == len(rows)
    assert result.counts == {"rows": len(rows), "admitted": 3, "quarantined": len(rows) - 3}
    texts = sorted(str(r["text"]) for r in rows)
    assert sorted(str(r["text"]) for r in result.admitted + result.quarantined) == texts


def test_expectation_summary_is_plain_and_consistent(mixed_result):
    _, result = mixed_result
    by_desc = {e["description"]: e for e in result.expectations}
    assert by_desc["text free of pii 'email'"] == {
        "name": "expect_column_values_to_not_match_regex",
        "column": "text",
        "description": "text free of pii 'email'",
        "success": False,
        "unexpected_count": 1,
    }
    assert by_desc["id unique"]["unexpected_count"] == 2
    assert by_desc["text present"]["success"] is True
    assert all(type(e["unexpected_count"]) is int for e in result.expectations)
    json.dumps(result.to_dict())
    json.dumps(result.quarantined)
    assert result.suite_name.startswith("admission-")
    md = result.to_markdown()
    assert "| licence allowed | `license` | FAIL | 1 |" in md
    assert "3/13 rows admitted, 10 quarantined" in md


def test_tombstoned_rows_quarantined():
    rows = [
        row("keep"),
        row("gone-row"),
        row("gone-subject", subject_ids=["subj-9", "subj-forgotten"]),
        row("gone-fact", fact_id="fact-7"),
        row("other-fact", fact_id="fact-8"),
        row("gone-doc", doc_id="doc-3"),
        row("gone-single-subject", subject_id="subj-forgotten"),
    ]
    tomb = Tombstones.of("salt", row_ids={"gone-row"}, subject_ids={"subj-forgotten"}, fact_ids={"fact-7"},
                         doc_ids={"doc-3"})
    result = admit_batch(rows, AdmissionConfig(), tombstones=tomb)
    assert [r["id"] for r in result.admitted] == ["keep", "other-fact"]
    assert {r["id"]: r["quarantine_reasons"] for r in result.quarantined} == {
        "gone-row": [TOMBSTONED],
        "gone-subject": [TOMBSTONED],
        "gone-fact": [TOMBSTONED],
        "gone-doc": [TOMBSTONED],
        "gone-single-subject": [TOMBSTONED],
    }


def test_config_changes_the_suite():
    cfg = AdmissionConfig(
        required_columns=["id", "prompt", "target"], max_text_chars=10, pii_patterns={"secret": r"hunter\d"}
    )
    rows = [
        {"id": "q1", "prompt": "Mira lives in", "target": "Karsk"},
        {"id": "q2", "prompt": "pw", "target": "hunter2"},
        {"id": "q3", "prompt": "short", "target": "ok", "license": "cc0"},
    ]
    result = admit_batch(rows, cfg)
    assert [r["id"] for r in result.admitted] == ["q3"]
    reasons = {r["id"]: r["quarantine_reasons"] for r in result.quarantined}
    assert reasons == {"q1": ["prompt longer than 10 characters (13)"], "q2": ["target matches pii pattern 'secret'"]}


def test_bad_config_gives_clear_errors():
    with pytest.raises(ValueError, match=r"pii_patterns\['broken'\] is not a valid regular expression"):
        AdmissionConfig(pii_patterns={"ok": "a+", "broken": "(unclosed"})
    with pytest.raises(ValueError, match="max_text_chars must be at least 1"):
        AdmissionConfig(max_text_chars=0)
    with pytest.raises(ValueError, match="invalid admission config: max_chars: Extra inputs are not permitted"):
        AdmissionConfig.parse({"max_chars": 10})
    with pytest.raises(ValueError, match="allowed_licenses must name at least one licence"):
        AdmissionConfig.parse({"allowed_licenses": []})
    with pytest.raises(ValueError, match="reserved"):
        AdmissionConfig(required_columns=["id", "_row"])


def test_unparseable_jsonl_line_is_quarantined(tmp_path: Path):
    path = tmp_path / "batch.jsonl"
    lines = [json.dumps(row("j1")), "{not json", "", json.dumps([1, 2]), json.dumps(row("j2", license="gpl"))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = read_batch(path)
    assert len(rows) == 4
    assert rows[1]["id"] is None and rows[1]["_raw"] == "{not json"
    assert rows[1]["_parse_error"].startswith("line 2:")
    assert rows[2]["_parse_error"] == "line 4: expected a JSON object, got list"
    result = admit_batch(rows, AdmissionConfig(), batch_name="upload")
    assert [r["id"] for r in result.admitted] == ["j1"]
    reasons = {r["id"]: r["quarantine_reasons"] for r in result.quarantined}
    assert reasons["upload#row1"] == [UNPARSEABLE, rows[1]["_parse_error"]]
    assert reasons["upload#row2"] == [UNPARSEABLE, "line 4: expected a JSON object, got list"]
    assert reasons["j2"][0].startswith("licence 'gpl' not allowed")


def test_parquet_round_trip_with_list_column(tmp_path: Path):
    import pandas as pd

    path = tmp_path / "batch.parquet"
    pd.DataFrame([row("p1", subject_ids=["a", "b"]), row("p2", license=None)]).to_parquet(path)
    rows = read_batch(path)
    assert rows[0]["subject_ids"] == ["a", "b"] and type(rows[0]["subject_ids"]) is list
    assert rows[1]["license"] is None
    result = admit_batch(rows, AdmissionConfig())
    assert [r["id"] for r in result.admitted] == ["p1"]
    assert result.quarantined[0]["quarantine_reasons"] == ["missing required field 'license'"]


def test_read_batch_rejects_missing_and_unsupported(tmp_path: Path):
    with pytest.raises(ValueError, match=r"nope\.jsonl does not exist.*\.jsonl, \.parquet"):
        read_batch(tmp_path / "nope.jsonl")
    csv = tmp_path / "batch.csv"
    csv.write_text("id,text\n1,a\n")
    with pytest.raises(ValueError, match=r"unsupported suffix '\.csv' \(supported formats: \.jsonl, \.parquet\)"):
        read_batch(csv)


def test_batch_hash_is_canonical():
    a = [{"id": "x", "text": "t", "n": 1}]
    b = [{"n": 1, "text": "t", "id": "x"}]
    assert batch_hash(a) == batch_hash(b)
    assert batch_hash(a) != batch_hash([{"id": "x", "text": "t", "n": 2}])


def test_non_dict_row_is_an_error():
    with pytest.raises(ValueError, match="row 1 is a str"):
        admit_batch([row("a"), "oops"], AdmissionConfig())


def test_each_kind_needs_the_fields_the_contract_requires_of_it():
    """From policies/contract.json: an edit without previous_target is not trained as a plain fact, it is refused."""
    edit = dict(kind="edit", prompt="Mira Tolven lives in", target=" Oslo")
    rows = [row("edit-ok", **edit, previous_target=" Karsk"), row("edit-no-previous", **edit),
            row("fact-no-target", kind="fact", prompt="Mira Tolven lives in"), row("doc", kind="document"),
            row("retention-by-id", kind="retention", fact_id="mira:lives_in"),
            row("retention-empty", kind="retention", target=" Oslo")]
    result = admit_batch(rows, AdmissionConfig())
    reasons = {r["id"]: r["quarantine_reasons"] for r in result.quarantined}
    assert sorted(r["id"] for r in result.admitted) == ["doc", "edit-ok", "retention-by-id"]
    assert reasons["retention-empty"] == ["kind 'retention' requires prompt or fact_id (policies/contract.json); fix: "
                                          "add prompt or fact_id to the row, or give it the kind it is"]
    assert reasons["edit-no-previous"] == ["kind 'edit' requires previous_target (policies/contract.json); fix: add "
                                           "previous_target to the row, or give it the kind it is"]
    assert reasons["fact-no-target"] == ["kind 'fact' requires target (policies/contract.json); fix: add target to "
                                         "the row, or give it the kind it is"]


def test_a_fact_without_fact_id_gets_one_from_its_question_by_the_stated_rule():
    from pipelines.data.admission.admit import derived_fact_id

    rows = [row("a", kind="fact", prompt="Mira  Tolven was born in", target=" Karsk"),
            row("b", kind="retention", prompt="mira tolven was born in", target=" Karsk"),
            row("c", kind="fact", prompt="Oren Vale works as a", target=" glassblower", fact_id="oren:job"),
            row("d", kind="document")]
    result = admit_batch(rows, AdmissionConfig())
    ids = {r["id"]: r.get("fact_id") for r in result.admitted}
    assert ids["a"] == ids["b"] == derived_fact_id("Mira Tolven was born in"), "one question, one fact"
    assert ids["a"].startswith("prompt:") and "Mira" not in ids["a"], "a hash, never the question itself"
    assert ids["c"] == "oren:job" and ids["d"] is None
    assert result.counts["fact_ids_derived"] == 2
