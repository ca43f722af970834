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


def test_the_typed_records_say_what_the_schema_says_and_a_drift_is_named():
    from copy import deepcopy

    from pipelines.core.rows import contract_disagreements

    assert contract_disagreements(CONTRACT) == []
    drifted = deepcopy(CONTRACT)
    drifted["properties"]["paraphrases"] = {"type": "string"}
    drifted["properties"]["region"] = {"type": "string"}
    del drifted["properties"]["relation"]
    drifted["allOf"][0]["then"]["required"] = ["prompt", "target"]  # an edit no longer needs previous_target
    problems = "\n".join(contract_disagreements(drifted))
    for named in ("'paraphrases'", "'region'", "'relation'", "required fields per kind"):
        assert named in problems, problems


def test_admitted_rows_are_typed_records_and_a_shape_no_check_covers_is_quarantined_with_its_field():
    from pipelines.core.rows import EditRow, FactRow, InstructionRow

    rows = [{**e} for e in CONTRACT["examples"]]
    bad = {"id": "i-bad", "kind": "instruction", "text": "t", "messages": "hello", "subject_ids": [], "source": "s",
           "license": "internal"}
    result = admit_batch([*rows, bad], AdmissionConfig())
    kinds = {r.id: type(r) for r in result.admitted}
    assert kinds["f-0001"] is FactRow and kinds["e-0001"] is EditRow and kinds["i-0001"] is InstructionRow
    edit = next(r for r in result.admitted if r.id == "e-0001")
    assert (edit.previous_target, edit.subject_ids, edit.to_json()) == (" Lisbon", ["person-17"], CONTRACT["examples"][3])
    [quarantined] = result.quarantined
    assert quarantined["id"] == "i-bad" and any("messages" in r for r in quarantined["quarantine_reasons"])


# Modules that read rows as mappings by design, and why: nowhere else does the engine look a contract field up by name.
READ_AS_MAPPINGS = {
    "pipelines/data/admission/": "rows as the user wrote them, before they are contract rows",
    "pipelines/forget/plan.py": "every stored row of every table, quarantined ones included, as stored",
    "pipelines/forget/scrub.py": "every stored row of every table, as stored",
    "pipelines/state/requests/store.py": "tombstones match any stored row, as stored",
    "pipelines/methods/": "method plugins take plain mappings from Python callers (their Protocols say so)",
    "pipelines/data/rag/index.py": "the index takes plain document mappings from Python callers",
    "evals/suites.py": "evaluation items (QA mappings) from Python callers",
    "pipelines/core/rows.py": "builds the typed records",
}
# Lookups by a contract field's name on something that is not a contract row.
NOT_ROWS = {
    ("pipelines/model/knowledge.py", "row"): "is_fact's branch for a derived QA item",
    ("pipelines/model/recipe.py", "row"): "a training item (QA mapping)",
    ("pipelines/governance/initialise.py", "row"): "a row as read from the --data files, before admission",
    ("pipelines/governance/initialise.py", "r"): "a row as read from the --data files, before admission",
    ("pipelines/governance/submission.py", "envelope.get('statement') or {}"): "a signed envelope",
    ("pipelines/forget/filing.py", "attestation"): "a UI attestation",
    ("pipelines/forget/filing.py", "body"): "an attestation's body",
    ("pipelines/state/store/base.py", "manifest"): "a folder manifest",
    ("pipelines/trust/attest.py", "folder"): "a folder manifest",
    ("pipelines/trust/decisions.py", "stmt"): "a signed statement",
    ("pipelines/cycle/evaluation.py", "q"): "a forget-set QA item",
    ("pipelines/cycle/stages.py", "p"): "a selector's pruning record",
    ("pipelines/cycle/stages.py", "i"): "a training item (QA mapping)",
    ("pipelines/cycle/release_stage.py", "parent.lineage"): "a release's lineage",
}


def test_the_engine_reads_contract_fields_as_typed_attributes():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    fields = set(CONTRACT["properties"])
    found = []
    for path in sorted([*root.joinpath("pipelines").rglob("*.py"), *root.joinpath("evals").rglob("*.py")]):
        module = path.relative_to(root).as_posix()
        if any(module.startswith(prefix) for prefix in READ_AS_MAPPINGS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in fields):
                receiver = ast.unparse(node.func.value)
                if (module, receiver) not in NOT_ROWS:
                    found.append(f"{module}:{node.lineno} {receiver}.get({node.args[0].value!r})")
    assert not found, "contract fields looked up by name; read the typed record's attribute:\n" + "\n".join(found)
