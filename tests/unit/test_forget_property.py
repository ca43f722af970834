"""The forgetting invariant, as a property: whatever sequence of batches, cycles, forget requests, decisions,
rollbacks and failures part-way through a scrub, after every step

- no store, snapshot, candidate index, replay pool, selection cache or inbox file holds a row or document covered
  by a request whose scrub completed;
- every request is verified, failed with its reasons, held for a confirmation, scrubbed with model-side forgetting
  pending, or in progress with a journal that the next attempt resumes;
- every blob a table, snapshot or release names exists;
- the change log verifies.

Real stores throughout (local artifact store, SQLite request store, FAISS snapshots, GX admission); the model step
is the only stand-in: a candidate carries its champion's weights.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from support_forget import HashEmbedder, fact, file, holdings, small_deployment, subject, write_batch

from pipelines.cycle import stages
from pipelines.forget import confirm_request, process_request, resolve_selector
from pipelines.forget.refs import missing_blobs
from pipelines.forget.scrub import journal
from policies import load_policy

N_SUBJECTS = 8
_DEFAULT = load_policy("default")
# A deployment of 8 subjects: one subject is 1/8 of it, so the share that needs a confirmation is raised to let
# single-subject requests run unconfirmed while `.*` is still held.
POLICY = _DEFAULT.model_copy(update={"unlearning": _DEFAULT.unlearning.model_copy(update={"max_share": 0.3})})
SELECTORS = st.one_of(
    st.builds(lambda i: {"subject_ids": [subject(i)]}, st.integers(0, N_SUBJECTS + 2)),
    st.builds(lambda i, k: {"row_ids": [f"f-{subject(i)}-{k}"]}, st.integers(0, N_SUBJECTS), st.integers(0, 3)),
    st.sampled_from([{"text_regex": r"value[13]x"}, {"text_regex": ".*"}, {"text_regex": "(a+)+$"},
                     {"subject": "nobody"}]),
)


class InjectedFault(OSError):
    """A store write that fails, as a full disk or a dropped connection would."""


class Flaky:
    """Make the k-th mutating call on the artifact store raise (k=None: never)."""

    METHODS = ("put_bytes", "write_text", "compare_and_swap", "delete_blob", "delete_key")

    def __init__(self, store, k: int | None) -> None:
        self.store, self.k, self.calls = store, k, 0
        self.saved = {m: getattr(store, m) for m in self.METHODS}

    def __enter__(self) -> Flaky:
        for name, real in self.saved.items():
            setattr(self.store, name, self._wrap(real))
        return self

    def _wrap(self, real):
        def call(*args, **kwargs):
            self.calls += 1
            if self.k is not None and self.calls == self.k:
                raise InjectedFault(f"injected fault at store call {self.calls}")
            return real(*args, **kwargs)

        return call

    def __exit__(self, *exc) -> None:
        for name in self.METHODS:
            delattr(self.store, name)


class ForgettingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="memgov-prop-"))
        self.ws = small_deployment(self.tmp / "home", n_subjects=N_SUBJECTS)
        self.ids = itertools.count(1)
        self.plans: dict[str, dict[str, list[str]]] = {}
        self.embedder = HashEmbedder()
        self.recent: list[int] = []  # subjects of the latest batch: what a request most often asks to forget

    def teardown(self) -> None:
        for req in self.ws.requests.list():
            event(f"request ended {req.state}{' (scrub complete)' if journal(req.evidence).get('complete') else ''}")
        self.ws.requests.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize()
    def start(self) -> None:
        assert self.ws.registry.champion() == "r0001"

    # -- data arrives and cycles run ------------------------------------------------------------------------------
    @rule(kind=st.sampled_from(["new", "duplicate", "empty", "bad", "poison", "mixed"]),
          subjects=st.lists(st.integers(0, N_SUBJECTS + 2), min_size=1, max_size=3))
    def cycle(self, kind: str, subjects: list[int]) -> None:
        n = next(self.ids)
        rows: list = {
            "new": [fact(i, 10 + n) for i in subjects],
            "duplicate": [fact(i, 0) for i in subjects],  # content the deployment already holds
            "empty": [],
            "bad": [{**fact(i, 10 + n), "license": "proprietary"} for i in subjects],
            "poison": ["[" * 3000 + "]" * 3000, b"\xff\xfe not utf-8"],
            "mixed": [fact(subjects[0], 10 + n), {**fact(subjects[-1], 20 + n), "subject_ids": subject(subjects[-1])}],
        }[kind]
        write_batch(self.ws, f"b{n:03d}", rows)
        self.recent = list(subjects)
        admitted = stages.admit(self.ws, POLICY, f"b{n:03d}.jsonl")
        if not admitted.has_new_data:
            return
        chosen = self.ws.data.rows("admitted", admitted.batch)
        self.ws.data.put_part("selections", admitted.batch, [{**r, "role": "sample"} for r in chosen])
        index = stages.candidate_index(self.ws, POLICY, admitted, self.embedder)
        champion = self.ws.registry.get(self.ws.registry.champion())
        self.ws.registry.create(
            {"parent": champion.release_id, "base_model": champion.base_model, "model": champion.model,
             "index_snapshot": index.index_snapshot, "policy_version": "test", "cycle": admitted.batch,
             "lineage": {"subject_ids": sorted({s for r in chosen for s in r["subject_ids"]}),
                         "row_ids": [r["id"] for r in chosen]}},
            actor="system:cycle", reason="candidate")

    # -- forget requests -----------------------------------------------------------------------------------------
    @rule(data=st.data(), fault_at=st.one_of(st.none(), st.integers(1, 40)))
    def forget(self, data, fault_at: int | None) -> None:
        recent = [{"subject_ids": [subject(i)]} for i in self.recent]
        selector = data.draw(st.sampled_from(recent) if recent and data.draw(st.booleans()) else SELECTORS)
        rid = f"req-{next(self.ids)}"
        file(self.ws, rid, **selector)
        # What it covers, resolved independently of the scrub (a verified request keeps only counts of its ids).
        self.plans[rid] = resolve_selector(self.ws.data, selector).ids()
        with Flaky(self.ws.store, fault_at):
            try:
                process_request(self.ws, rid, embedder=self.embedder, policy=POLICY)
            except InjectedFault:
                pass  # a fault outside the journaled steps (planning, the final log line): the request says where it is

    @rule()
    def resume(self) -> None:
        """The sensor's next tick, or the next cycle: every request in progress is resumed."""
        for req in self.ws.requests.list(states=["received", "planned"]):
            process_request(self.ws, req.request_id, embedder=self.embedder, policy=POLICY)

    @rule(data=st.data())
    def confirm(self, data) -> None:
        held = self.ws.requests.list(states=["held"])
        if held:
            req = data.draw(st.sampled_from(held))
            confirm_request(self.ws, POLICY, req.request_id, "erin", "governance", "reviewed the plan")

    # -- decisions -------------------------------------------------------------------------------------------------
    @rule(data=st.data(), approve=st.booleans())
    def decide(self, data, approve: bool) -> None:
        waiting = [r for r in self.ws.registry.list() if r.status == "candidate"]
        if not waiting:
            return
        rel = data.draw(st.sampled_from(waiting))
        if approve:
            self.ws.registry.set_status(rel.release_id, "approved", "alice", "card reviewed")
            self.ws.registry.promote(rel.release_id, "alice", "promote")
        else:
            self.ws.registry.set_status(rel.release_id, "rejected", "alice", "not good enough")

    @rule(data=st.data())
    def rollback(self, data) -> None:
        older = [r for r in self.ws.registry.list() if r.status in ("retired", "tainted")]
        if not older:
            return
        rel = data.draw(st.sampled_from(older))
        try:
            self.ws.registry.rollback(rel.release_id, "bob", "regression")
        except ValueError as exc:
            assert rel.status == "tainted" and "tainted" in str(exc), exc

    # -- what must hold after every step ------------------------------------------------------------------------
    @invariant()
    def forgotten_data_is_nowhere(self) -> None:
        for req in self.ws.requests.list():
            j = journal(req.evidence)
            if j.get("complete"):
                ids = self.plans[req.request_id]
                left = holdings(self.ws, set(ids["subject_ids"]), set(ids["row_ids"]) | set(ids["doc_ids"]),
                                set(ids["fact_ids"]))
                assert not left, f"{req.request_id} verified scrubbed, but {left}"

    @invariant()
    def every_request_is_in_a_state_a_person_can_act_on(self) -> None:
        for req in self.ws.requests.list():
            j = journal(req.evidence)
            if req.state == "failed":
                assert req.evidence.get("failure"), f"{req.request_id} failed without a reason"
            elif req.state == "planned" and not j.get("complete"):
                last = (j.get("attempts") or [{}])[-1]
                assert j.get("plan") is not None and last.get("error"), f"{req.request_id} stuck without a journal"
            elif req.state == "received":
                assert (j.get("attempts") or [{}])[-1].get("error") or req.evidence.get("confirmation"), \
                    f"{req.request_id} received but never tried"
            else:
                assert req.state in ("held", "planned", "applied", "verified")
                if req.state != "held":
                    assert j.get("complete") or "scrub" in req.evidence

    @invariant()
    def no_named_blob_is_missing(self) -> None:
        assert missing_blobs(self.ws) == []

    @invariant()
    def the_log_verifies(self) -> None:
        result = self.ws.log.verify()
        assert result.ok, result.problem


ForgettingMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("MEMGOV_PROPERTY_EXAMPLES", "15")), stateful_step_count=12,
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], derandomize=True,
    phases=[Phase.generate] if os.environ.get("MEMGOV_PROPERTY_NO_SHRINK") else list(Phase))
test_forgetting_invariant = pytest.mark.slow(ForgettingMachine.TestCase)
