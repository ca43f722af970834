"""The data contract's JSON Schema and admission agree: its examples are admitted, its kinds are admission's."""

from __future__ import annotations

import json

import jsonschema

from pipelines.data.admission import AdmissionConfig, admit_batch
from pipelines.data.admission.admit import ROW_KINDS
from policies.schema import POLICY_DIR

CONTRACT = json.loads((POLICY_DIR / "contract.json").read_text())


def test_the_schema_is_valid_and_its_examples_follow_it():
    jsonschema.Draft202012Validator.check_schema(CONTRACT)
    validator = jsonschema.Draft202012Validator(CONTRACT)
    for example in CONTRACT["examples"]:
        assert not list(validator.iter_errors(example)), example["id"]
    assert not validator.is_valid({**CONTRACT["examples"][0], "subject_ids": "person-17"}), "a string is not a list"


def test_admission_admits_the_examples_and_knows_the_same_kinds():
    assert tuple(CONTRACT["properties"]["kind"]["enum"]) == ROW_KINDS
    result = admit_batch(CONTRACT["examples"], AdmissionConfig())
    assert not result.quarantined, [r["quarantine_reasons"] for r in result.quarantined]
