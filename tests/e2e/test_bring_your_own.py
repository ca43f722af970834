"""A team's own model and data, as a new user brings them: a checkpoint of a real architecture written with
`save_pretrained` (a Llama layout and a byte-level BPE tokenizer trained on general text; nothing from the demo
world), the team's contract tables, `memgov init`, batches in the inbox, `memgov run`, a forget request, a rollback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support_byo import domain_fact, trained_checkpoint, write_data_dir
from support_checkpoints import write_checkpoint, write_unknown_architecture, write_without_pad_or_eos
from support_keys import keyholder

from pipelines.core.digests import dir_digest
from policies.schema import POLICY_DIR

pytestmark = pytest.mark.slow
KNOWN, NEW, UNSEEN = range(0, 40), range(60, 72), range(120, 150)


def memgov(home: Path, *args: str, policy: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMGOV_HOME": str(home), "COLUMNS": "250"}
    if policy is not None:
        env["MEMGOV_POLICY"] = str(policy)
    return subprocess.run([sys.executable, "-m", "memgov", *args], capture_output=True, text=True, env=env)


def team_policy(tmp: Path) -> Path:
    """The default policy, gates untouched; the team lets passing candidates through without a person (so the test
    reaches promotion) and gives the update enough epochs for its small model."""
    raw = yaml.safe_load((POLICY_DIR / "default.yaml").read_text())
    raw["version"] = "team-2026.12"
    raw["approval"].update(mode="auto", auto_approver="policy:team")
    raw["update"]["params"].update(max_epochs=80, target_recall=1.0)
    path = tmp / "team.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def batch(home: Path, name: str, rows: list[dict]) -> None:
    inbox = home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def llama_deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("byo")
    checkpoint = trained_checkpoint(tmp / "llama", "llama", [domain_fact(i) for i in KNOWN])
    data = write_data_dir(tmp / "data", KNOWN, UNSEEN)
    return tmp, checkpoint, data, team_policy(tmp)


def test_a_llama_checkpoint_runs_the_whole_governed_loop(llama_deployment, monkeypatch):
    from pipelines.deployment.workspace import Workspace

    tmp, checkpoint, data, policy = llama_deployment
    home = tmp / "home"
    proc = memgov(home, "init", "--base-model", str(checkpoint), "--data", str(data), policy=policy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ws = Workspace.open(home)
    r1 = ws.registry.get("r0001")
    assert r1.model == dir_digest(checkpoint), "r0001 is the checkpoint, unchanged"
    assert json.loads(proc.stdout)["architecture"] == "llama"

    old = domain_fact(3)
    edit = {**domain_fact(3, day=" Sunday" if old["target"] != " Sunday" else " Monday"), "id": "edit-0003",
            "kind": "edit", "previous_target": old["target"]}
    doc = {"id": "doc-lydd-museum", "kind": "document", "text": "Lydd has a new museum by the river.",
           "subject_ids": ["town-lydd"], "source": "guide", "license": "cc0"}
    instruction = {"id": "ins-arden", "kind": "instruction", "text": "Where is the library in Arden?",
                   "prompt": "Where is the library in Arden?", "response": "Next to the market.",
                   "subject_ids": [], "source": "guide", "license": "cc0"}
    batch(home, "b001", [*(domain_fact(i) for i in NEW), edit, doc, instruction])
    proc = memgov(home, "run", policy=policy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ws.registry.champion() == "r0002", proc.stdout[-3000:]
    card = (home / "cards" / "r0002" / "card.md").read_text()
    for source in ("table `general` (60 of 60 rows)", "the batch's own `paraphrases`",
                   "derived: a sample of earlier admitted facts the champion recalls",
                   "derived: known facts of the edited relations about other subjects",
                   "the batch's instruction rows (1), scored by exact_match"):
        assert source in card, f"the card names where each set came from: {source!r} missing"
    trained = [e for e in ws.log.events() if e["action"] == "adapter.trained"]
    assert "(1 instructions)" in trained[-1]["reason"], "the instruction row trained with the batch's facts"
    assert "instruction_score" in json.loads((home / "cards" / "r0002" / "card.json").read_text())["metrics"]

    subject = domain_fact(61)["subject_ids"][0]  # a town only the new batch speaks of
    proc = memgov(home, "forget", "--id", "req-town", "--key", keyholder(home, "privacy-office"), "--subject-id", subject,
                  "--reason", "erasure request", "--urgent", policy=policy)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("MEMGOV_POLICY", str(policy))
    monkeypatch.setenv("MEMGOV_HOME", str(home))  # the sensor's resource finds the deployment by it
    from assets.runner import tick_sensor

    assert len(tick_sensor(ws, "forget_request_sensor")) == 1
    req = ws.requests.get("req-town")
    assert req.state == "verified", (req.state, req.evidence.get("verification"), req.notes[-3:])
    assert ws.registry.status("r0002") == "tainted" and ws.registry.champion() == "r0003"
    assert not [r for r in ws.data.rows("admitted") if subject in r.get("subject_ids", [])]

    proc = memgov(home, "rollback", "--to", "r0002", "--key", keyholder(home, "bob", "ml-lead"), "--role", "ml-lead", "--reason", "regression")
    assert proc.returncode == 2 and "tainted" in proc.stdout, "a release trained on forgotten data never returns"
    proc = memgov(home, "rollback", "--to", "r0001", "--key", keyholder(home, "bob", "ml-lead"), "--role", "ml-lead", "--reason", "regression")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ws.registry.champion() == "r0001"
    assert memgov(home, "log", "verify").returncode == 0


def test_a_gpt2_checkpoint_is_admitted_updated_and_measured(tmp_path):
    from pipelines.deployment.workspace import Workspace

    checkpoint = trained_checkpoint(tmp_path / "gpt2", "gpt2", [domain_fact(i) for i in KNOWN])
    data = write_data_dir(tmp_path / "data", KNOWN, UNSEEN)
    home, policy = tmp_path / "home", team_policy(tmp_path)
    assert memgov(home, "init", "--base-model", str(checkpoint), "--data", str(data), policy=policy).returncode == 0
    batch(home, "b001", [domain_fact(i) for i in NEW])
    memgov(home, "run", policy=policy)
    ws = Workspace.open(home)
    candidate = ws.registry.get("r0002")
    assert candidate.adapters and candidate.adapters[-1]["method"] == "lora"
    metrics = json.loads((home / "cards" / "r0002" / "card.json").read_text())["metrics"]
    assert metrics["new_fact_recall"] is not None and metrics["perplexity"] is not None


def _not_a_model(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    return str(tmp / "empty")


def _unknown_architecture(tmp: Path) -> str:
    return str(write_unknown_architecture(tmp / "bloom"))


def _no_pad_token(tmp: Path) -> str:
    return str(write_without_pad_or_eos(tmp / "m"))


@pytest.mark.parametrize(("build", "phrase"), [
    (_not_a_model, "no config.json"),
    (_unknown_architecture, "'bloom'"),
    (_no_pad_token, "neither a pad token nor an eos token"),
], ids=["not-a-model", "unknown-architecture", "no-pad-token"])
def test_init_refuses_a_bad_checkpoint_and_writes_nothing(tmp_path, build, phrase):
    home = tmp_path / "home"
    proc = memgov(home, "init", "--base-model", build(tmp_path))
    assert proc.returncode == 2 and phrase in proc.stdout and "fix" in proc.stdout.lower(), proc.stdout + proc.stderr
    assert not home.exists(), "nothing is written"


def test_init_refuses_data_that_breaks_the_contract_and_writes_nothing(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "llama", "llama")
    data = write_data_dir(tmp_path / "data", range(0, 5), range(120, 125))
    with (data / "facts.jsonl").open("a") as fh:
        fh.write(json.dumps({**domain_fact(7), "subject_ids": "town-arden"}) + "\n")
        fh.write(json.dumps({**domain_fact(8), "kind": "poem"}) + "\n")
    with (data / "retention.jsonl").open("a") as fh:  # the table is the file: a row's own kind does not beat it
        fh.write(json.dumps({**domain_fact(9), "id": "ret-0009", "kind": "fact"}) + "\n")
    with (data / "general.jsonl").open("a") as fh:
        fh.write(json.dumps({"id": "gen-doc", "kind": "document", "text": "The ferry leaves at noon.",
                             "subject_ids": [], "source": "guide", "license": "cc0"}) + "\n")
    home = tmp_path / "home"
    proc = memgov(home, "init", "--base-model", str(checkpoint), "--data", str(data))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "facts.jsonl row 'fact-0007': subject_ids must be a list of strings" in out
    assert "facts.jsonl row 'fact-0008': kind 'poem' is not part of the data contract" in out
    assert ("retention.jsonl row 'ret-0009': field kind is 'fact' but every row of retention.jsonl is a retention "
            "row; fix: drop the row's kind (or write 'retention'), or move the row to facts.jsonl") in out, out
    assert "general.jsonl row 'gen-doc': field kind is 'document' but every row of general.jsonl is a general row" in out
    assert not home.exists(), "nothing is written"


# -- read as written, scored as used, forgotten everywhere ---------------------------------------------------------
def _rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _without_id(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "fact_id"}


def team_tables(dest: Path) -> Path:
    """Tables as a team writes them: half the facts without fact_id, a retention table that names the other half by
    fact_id and writes two facts out (without ids), and no `kind` on evaluation rows (the file says it)."""
    write_data_dir(dest, KNOWN, UNSEEN)
    facts = [domain_fact(i) for i in KNOWN]
    _rows(dest / "facts.jsonl", [f if i < 20 else _without_id(f) for i, f in enumerate(facts)])
    named = [{"id": f"keep-{i:04d}", "text": "must stay known", "fact_id": facts[i]["fact_id"],
              "subject_ids": facts[i]["subject_ids"], "source": "qa", "license": "internal"} for i in range(20)]
    written = [{k: v for k, v in _without_id(facts[i]).items() if k != "kind"} | {"id": f"keep-out-{i:04d}"}
               for i in (30, 31)]
    _rows(dest / "retention.jsonl", [*named, *written])
    return dest


def model_folders(ws) -> dict[str, Path]:
    """Every model and adapter folder left anywhere: the store's folders (read from its blobs, named by a release or
    not) restored to disk, and every folder under the home that holds a config."""
    import tempfile

    from pipelines.core.digests import DIR_KIND
    out: dict[str, Path] = {}
    for blob in (ws.store.root / "blobs" / "sha256").glob("*/*"):
        if blob.stat().st_size > 200_000:
            continue
        try:
            manifest = json.loads(blob.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        names = {f["path"] for f in manifest.get("files", [])} if isinstance(manifest, dict) else set()
        if manifest.get("kind") == DIR_KIND and names & {"config.json", "adapter_config.json"}:
            dest = Path(tempfile.mkdtemp(prefix="left-")) / blob.name[:12]
            out[f"store:{blob.name[:12]}"] = ws.store.get_dir(f"sha256:{blob.name}", dest)
    for config in [*ws.home.rglob("config.json"), *ws.home.rglob("adapter_config.json")]:
        out[f"home:{config.parent.relative_to(ws.home)}"] = config.parent
    return out


def recall_of(folder: Path, base: Path, facts: list[dict]) -> float:
    from pipelines.model.lm import exact_match, load_causal_lm

    if (folder / "adapter_config.json").exists():  # an adapter answers on the model it was trained from
        from peft import PeftModel

        model, tokenizer = load_causal_lm(base)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    else:
        model, tokenizer = load_causal_lm(folder)
    return float(exact_match(model, tokenizer, [f["prompt"] for f in facts], [f["target"] for f in facts]).mean())


def test_a_gpt_neox_deployment_is_read_as_written_and_forgets_everywhere_without_waiting_for_data(tmp_path, monkeypatch):
    """Issue 33's acceptance on a GPT-NeoX checkpoint with a byte-level BPE that adds no BOS: the tables are read as
    written, the gate's recall is a plain caller's, and a forget request with no batch after it is verified by
    `memgov run` alone, after which no model anywhere answers the forgotten questions."""
    from assets.runner import tick_sensor
    from pipelines.deployment.workspace import Workspace

    checkpoint = trained_checkpoint(tmp_path / "neox", "gpt_neox", [domain_fact(i) for i in KNOWN])
    data, policy, home = team_tables(tmp_path / "data"), team_policy(tmp_path), tmp_path / "home"

    conflicting = tmp_path / "conflicting"
    team_tables(conflicting)
    with (conflicting / "unseen.jsonl").open("a") as fh:
        fh.write(json.dumps(domain_fact(150)) + "\n")  # kind 'fact' in the unseen table: never trained on
    proc = memgov(home, "validate", "--base-model", str(checkpoint), "--data", str(conflicting))
    assert proc.returncode == 2 and "unseen.jsonl row 'fact-0150': field kind is 'fact'" in " ".join(proc.stdout.split())

    proc = memgov(home, "validate", "--base-model", str(checkpoint), "--data", str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "retention.jsonl │ retention │ 22" in out and "facts.jsonl │ fact │ 40 │ 20" in out, out
    assert "tokenizer(prompt) adds no special token" in out, "the detected prompt format is stated"
    assert not home.exists(), "validate writes nothing"

    assert memgov(home, "init", "--base-model", str(checkpoint), "--data", str(data), policy=policy).returncode == 0
    # Where the deployed model holds its facts: one indirect effect per layer; corrupting the subject costs the answer.
    proc = memgov(home, "edit", "trace", "--facts", "6", "--samples", "3")
    traced = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "causal trace of r0001: 6 fact(s), subject token" in traced, traced + proc.stderr
    clean, corrupted = map(float, re.search(r"clean ([\d.]+), subject corrupted ([\d.]+)", traced).groups())
    assert corrupted < clean and "│ 0 │" in traced and "│ 1 │" in traced, traced  # a row per layer of its 2 layers
    proc = memgov(home, "edit", "trace", "--prompt", "The museum in Yarm opens early on", "--subject", "Arden")
    assert proc.returncode == 2 and "does not contain its subject 'Arden'" in " ".join(proc.stdout.split())
    ws = Workspace.open(home)
    bad_edit = {**domain_fact(62), "id": "edit-no-previous", "kind": "edit"}
    old = domain_fact(3)
    edit = {**domain_fact(3, day=" Sunday" if old["target"] != " Sunday" else " Monday"), "id": "edit-0003",
            "kind": "edit", "previous_target": old["target"]}  # edited after the LoRA merge: a pre-edit model exists
    batch(home, "b001", [*(_without_id(domain_fact(i)) for i in NEW), bad_edit, edit])
    proc = memgov(home, "run", policy=policy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    quarantined = {r["id"]: r["quarantine_reasons"] for r in ws.data.records("quarantine")}
    assert quarantined == {"edit-no-previous": ["kind 'edit' requires previous_target (policies/contract.json); fix: "
                                                "add previous_target to the row, or give it the kind it is"]}
    assert [r for r in ws.data.rows("selections", "b001") if r.get("role") == "replay"], "facts without ids replay"
    card = json.loads((home / "cards" / "r0002" / "card.json").read_text())
    assert card["set_sources"]["retention"].startswith("table `retention`: the "), card["set_sources"]
    assert "(20 name admitted facts by fact_id)" in card["set_sources"]["retention"]
    assert "adds no special token" in card["prompt_format"]
    assert ws.registry.champion() == "r0002", proc.stdout[-3000:]

    forgotten = [domain_fact(i) for i in NEW if domain_fact(i)["subject_ids"] == domain_fact(61)["subject_ids"]]
    r2 = ws.registry.get("r0002")
    from pipelines.deployment.artifacts import model_path

    assert len(r2.intermediates) == 1, "the release names the LoRA-merged model stored before its edit"
    for folder in (r2.model, r2.intermediates[0]):
        assert recall_of(model_path(ws, folder), checkpoint, forgotten) == 1.0, \
            "both answer the questions about to be forgotten: the search below has teeth"
    never = recall_of(checkpoint, checkpoint, forgotten)

    proc = memgov(home, "forget", "--id", "req-lydd", "--key", keyholder(home, "privacy-office"), "--subject-id",
                  forgotten[0]["subject_ids"][0], "--reason", "erasure request", policy=policy)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("MEMGOV_POLICY", str(policy))
    monkeypatch.setenv("MEMGOV_HOME", str(home))
    assert len(tick_sensor(ws, "forget_request_sensor")) == 1
    assert ws.requests.get("req-lydd").state == "planned", "scrubbed; its model side waits"
    proc = memgov(home, "run", policy=policy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "building an unlearning-only candidate" in proc.stdout
    req = ws.requests.get("req-lydd")
    assert req.state == "verified", (req.state, req.notes[-3:])
    assert ws.registry.status("r0002") == "tainted"
    assert not ws.store.has(r2.model) and not ws.store.has(r2.intermediates[0]), "its weights and its intermediate"

    left = model_folders(ws)
    assert any(name.startswith("store:") for name in left), "the search reads the store's folders"
    answers = {name: recall_of(folder, checkpoint, forgotten) for name, folder in left.items()}
    assert all(v <= never for v in answers.values()), (answers, never)
