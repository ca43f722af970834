"""Jobs a person launches from the Launchpad (approve, reject, roll back) and the ones sensors launch."""

import functools
from enum import Enum

from dagster import AssetSelection, Config, Failure, OpExecutionContext, define_asset_job, job, op
from pydantic import Field

from assets.cycle import mark_interrupted
from assets.executors import deployment_executor
from assets.resources import GPU_TAGS, MemgovResource, shared_embedder
from assets.views import RELEASES, publish_releases
from pipelines.cycle import lock as cycle_lock
from pipelines.cycle.lock import CycleBusy
from pipelines.cycle.urgent import unlearning_cycle, urgent_cycle, waiting_requests
from pipelines.forget import process_request
from pipelines.forget.scrub import scrub_complete
from pipelines.governance import approvals
from pipelines.governance.promotion import ApprovalRefused
from pipelines.governance.rollback import rollback as roll_back
from pipelines.state.requests.models import LEGAL_BASES, deadline_after
from pipelines.trust.decisions import SignatureRefused
from pipelines.trust.identity import USER_TAG, IdentityRefused, UiUser, check_claim, ui_user
from pipelines.trust.keyring import same_person

CYCLE_TAG = "memgov/cycle"
FORGET_WAITS_FOR_CYCLE_S = 3600.0  # a forget run queued behind a cycle waits this long before it reports busy

cycle_job = define_asset_job(
    "governed_cycle",
    selection=AssetSelection.groups("cycle") | AssetSelection.assets(RELEASES),
    description="One cycle: admit a batch, select, update, edit/forget, refresh the index, evaluate, gate, release.",
    executor_def=deployment_executor(),  # in-process here: one process holds the cycle lock (assets/executors.py)
    tags={CYCLE_TAG: "1"},  # the run queue admits one cycle at a time (dagster.yaml tag_concurrency_limits)
)

REFUSALS = (ApprovalRefused, IdentityRefused, SignatureRefused, CycleBusy)


def refusals_as_verdicts(fn):
    """A refused decision ends its run as a verdict: Dagster's Failure with the rule as its description and
    metadata, no traceback to read through. Anything else still fails as the error it is."""
    @functools.wraps(fn)
    def run(context: OpExecutionContext, *args, **kwargs):
        try:
            return fn(context, *args, **kwargs)
        except REFUSALS as exc:
            context.log.error(f"refused: {exc}")
            raise Failure(description=f"refused: {exc}", metadata={"verdict": "refused", "rule": str(exc)},
                          allow_retries=False) from None
    return run



def signed_in_user(context: OpExecutionContext, ws, job: str) -> UiUser:
    """Who launched this run, as the UI server sealed it into the run's tags; a re-executed run is refused."""
    if context.run.tags.get("dagster/parent_run_id"):
        raise IdentityRefused(f"this {job} run re-executes an earlier run: a decision is made afresh, never replayed")
    return ui_user(ws.keyring(), dict(context.run.tags), job)


def signed_in(context: OpExecutionContext, ws, job: str, claimed: str, field: str, role: str, roles: str) -> UiUser:
    """The signed-in user, who must hold the role claimed and be the person any `field` of the config names."""
    user = signed_in_user(context, ws, job)
    check_claim(user, claimed, field, roles, role, ws.keyring())
    context.log.info(f"decision by {user.name} (signed in via {user.via})")
    return user

class Decision(Enum):
    approve = "approve"
    reject = "reject"


class DecisionConfig(Config):
    release_id: str = Field(description="a candidate waiting for a decision (see the releases asset)")
    decision: Decision = Field(Decision.approve, description="approve or reject")
    role: str = Field(description="a deciding role the policy names and you are granted")
    reason: str = Field(description="why; recorded in the change log under your name")
    approver: str = ""  # optional: who decides is the signed-in user; a different name here is refused

class WaiverConfig(Config):
    release_id: str
    role: str
    gates: list[str]
    reason: str
    waived_by: str = ""  # optional: the signed-in user waives; a different name here is refused


class RollbackConfig(Config):
    to_release: str
    role: str
    reason: str
    actor: str = ""  # optional: the signed-in user rolls back; a different name here is refused


def decision_op(name: str, config_cls: type[Config], job_name: str, claimed: str, roles: str, verb: str,
                apply, doc: str, logged: str):
    """One governed decision as an op: the deployment's own stores and policy, the signed-in user holding the role
    they claim (and being whoever the config's `claimed` field names), the rule applied by `governance`, the
    releases view refreshed. Approval, waiver and rollback differ only in their config and in `apply`."""

    def decide(context, config, memgov):
        ws, policy = memgov.governed()
        allowed = getattr(policy.approval, roles)
        user = signed_in(context, ws, job_name, getattr(config, claimed), claimed, config.role,
                         f"the policy lets {', '.join(allowed) or 'nobody'} {verb}")
        result = apply(ws, policy, config, user.name, run_id=context.run_id, proof=user.proof(context.run_id))
        context.log.info(f"{logged}: {result}")
        publish_releases(context, ws, policy)
        return result

    decide.__doc__ = doc
    # Real classes, not the strings `from __future__ import annotations` makes: Dagster reads the config type here.
    decide.__annotations__ = {"context": OpExecutionContext, "config": config_cls, "memgov": MemgovResource,
                              "return": dict}
    return op(name=name)(refusals_as_verdicts(decide))


decide_release = decision_op(
    "decide_release", DecisionConfig, "release_decision", "approver", "roles", "decide",
    lambda ws, policy, c, who, **kw: approvals.decide_release(ws, policy, c.release_id, c.decision.value, who, c.role,
                                                              c.reason, **kw),
    "Apply the signed-in user's decision under the policy's rules; approval promotes by compare-and-swap.",
    "decision recorded")
waive_gates = decision_op(
    "waive_gates", WaiverConfig, "gate_waiver", "waived_by", "waiver_roles", "waive",
    lambda ws, policy, c, who, **kw: approvals.waive_gates(ws, policy, c.release_id, who, c.role, c.reason, c.gates,
                                                           **kw),
    "The logged exception to a failed gate, by a role the policy names; the release still needs approval.",
    "waiver recorded")
rollback_release = decision_op(
    "rollback_release", RollbackConfig, "rollback", "actor", "rollback_roles", "roll back",
    lambda ws, policy, c, who, **kw: roll_back(ws, policy, c.to_release, who, c.role, c.reason, **kw),
    "Serve an earlier release again; refused for releases tainted by a forget request.", "rolled back")


@job(description="Approve or reject a candidate release as the signed-in user: release, decision, role and reason "
                 "go in the run config (launching needs `memgov ui` with sign-in configured).")
def release_decision():
    decide_release()


@job(description="Waive the failed gates of a rejected candidate (names every failed gate; logged; approval still needed).")
def gate_waiver():
    waive_gates()


@job(description="Roll the champion back to an earlier release (model, adapters, edits and index together).")
def rollback():
    rollback_release()


class ForgetConfig(Config):
    request_id: str
    launched_by: str = ""  # optional: from the UI the launcher is the signed-in user; a different name is refused

def forget_launcher(context: OpExecutionContext, ws, claimed: str) -> str:
    """Who started this forget run: the sealed signed-in user for a UI launch, else the sensor or the CLI. The
    request itself carries its requester's signature; the launcher only says who set it going."""
    tags = dict(context.run.tags)
    if USER_TAG in tags or claimed.strip():
        user = ui_user(ws.keyring(), tags, "forget_request")
        if claimed.strip() and same_person(claimed) != same_person(user.name):
            raise IdentityRefused(f"config launched_by is {claimed!r} but you are signed in as {user.name}: leave "
                                  "launched_by empty")
        return user.name
    return f"system:sensor:{tags['dagster/sensor_name']}" if tags.get("dagster/sensor_name") else "system:launch"

LegalBasis = Enum("LegalBasis", {basis: basis for basis in LEGAL_BASES})  # the Launchpad offers the valid ones


class FilingConfig(Config):
    request_id: str = Field(description="an id for the request (letters, digits, - _ .); the same id twice is one request")
    subject_ids: list[str] = Field(default_factory=list, description="subject ids whose rows are forgotten")
    row_ids: list[str] = Field(default_factory=list, description="row ids to forget")
    subject: str = Field("", description="a subject's name as it appears in the data")
    text_regex: str = Field("", description="a regular expression over row text")
    reason: str = Field(description="why the data must be forgotten")
    legal_basis: LegalBasis = Field(LegalBasis.gdpr_art17, description="the legal ground for deleting")
    deadline_days: float = Field(30.0, description="deadline, in days from now")
    urgent: bool = Field(False, description="an unlearning-only candidate at once instead of the next cycle")
    requester: str = ""  # optional: the signed-in user is the requester; a different name here is refused


@op
@refusals_as_verdicts
def file_forget_request(context: OpExecutionContext, config: FilingConfig, memgov: MemgovResource) -> dict:
    """File a forget request as the signed-in user, with the CLI's validation; the forget sensor then runs it."""
    from pipelines.forget.filing import file_request_from_ui

    ws, policy = memgov.governed()
    user = signed_in_user(context, ws, "forget_filing")
    selector = {"subject_ids": config.subject_ids, "row_ids": config.row_ids,
                **({"subject": config.subject} if config.subject.strip() else {}),
                **({"text_regex": config.text_regex} if config.text_regex.strip() else {})}
    fields = {"request_id": config.request_id, "requester": config.requester, "selector": selector,
              "reason": config.reason, "legal_basis": config.legal_basis.value,
              "deadline": deadline_after(config.deadline_days, "deadline_days"), "urgent": config.urgent}
    stored, created = file_request_from_ui(ws, fields, user.name, user.via, context.run_id)
    context.log.info(f"forget request {stored.request_id} {'received' if created else 'already on file'} "
                     f"(state: {stored.state}; requester {stored.requester})")
    publish_releases(context, ws, policy)
    return {"request_id": stored.request_id, "state": stored.state, "created": created}


@job(description="File a forget request as the signed-in user (selector, reason, legal basis, deadline); the "
                 "forget-request sensor turns it into exactly one forget_request run.")
def forget_filing():
    file_forget_request()


@op(tags=GPU_TAGS)
@refusals_as_verdicts
def process_forget_request(context: OpExecutionContext, config: ForgetConfig, memgov: MemgovResource) -> dict:
    """Scrub the request's data from every store at once; urgent requests also get an unlearning-only candidate."""
    ws, policy = memgov.governed()
    launcher = forget_launcher(context, ws, config.launched_by)
    context.log.info(f"forget request {config.request_id} launched by {launcher}")
    # The scrub and an urgent candidate change what a cycle reads and registers: they wait for a running cycle.
    held = cycle_lock.acquire(ws, "forget_request", run_id=context.run_id, wait_s=FORGET_WAITS_FOR_CYCLE_S)
    try:
        if held.interrupted:
            mark_interrupted(context, ws, held.interrupted)
        result = process_request(ws, config.request_id, embedder=shared_embedder(), run_id=context.run_id,
                                 policy=policy)
        result["launched_by"] = launcher
        req = ws.requests.get(config.request_id)
        if req.urgent and req.state == "planned" and scrub_complete(req.evidence):
            result["urgent_cycle"] = urgent_cycle(ws, policy, config.request_id, shared_embedder(),
                                                  run_id=context.run_id).model_dump()
    finally:
        cycle_lock.release(ws)
    context.log.info(f"forget request processed: {result.get('state')}")
    publish_releases(context, ws, policy)
    return result

@job(description="Process one forget request (launched by the forget-request sensor, run_key = request id).",
     tags={CYCLE_TAG: "1"})  # queued with the cycles: one of them changes the deployment's data at a time
def forget_request():
    process_forget_request()


@op(tags=GPU_TAGS)
@refusals_as_verdicts
def unlearn_waiting_requests(context: OpExecutionContext, memgov: MemgovResource) -> dict:
    """An unlearning-only candidate for every forget request scrubbed from the data and waiting for its model-side
    forgetting, when no batch is coming to carry it: `memgov run` launches this when the inbox is empty."""
    ws, policy = memgov.governed()
    held = cycle_lock.acquire(ws, "unlearning_only", run_id=context.run_id, wait_s=FORGET_WAITS_FOR_CYCLE_S)
    try:
        if held.interrupted:
            mark_interrupted(context, ws, held.interrupted)
        waiting = [r.request_id for r in waiting_requests(ws)]
        if not waiting:
            context.log.info("no forget request waits for model-side forgetting")
            return {"requests": [], "release": None}
        context.log.info(f"unlearning-only candidate for {', '.join(waiting)}")
        outcome = unlearning_cycle(ws, policy, waiting, shared_embedder(), run_id=context.run_id)
    finally:
        cycle_lock.release(ws)
    publish_releases(context, ws, policy)
    return {"requests": waiting, "release": outcome.model_dump()}


@job(description="Model-side forgetting without waiting for data: the champion with every scrubbed, pending forget "
                 "request applied, measured and decided like any candidate (`memgov run` with an empty inbox).",
     tags={CYCLE_TAG: "1"})
def unlearning_only():
    unlearn_waiting_requests()
