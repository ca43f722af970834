"""memgov CLI: run cycles, file forget requests, decide and roll back releases, read and verify the change log.

Heavy libraries (torch, dagster, transformers) are imported inside the commands that need them, so that
`memgov forget`, `memgov status` and `memgov log verify` answer quickly.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Governed model updates: admit, select, update, forget, gate, approve, promote, roll back.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
forget_app = typer.Typer(help="File a forget request (see `memgov forget --help`) or show one (`memgov forget status ID`).")
log_app = typer.Typer(help="The tamper-evident change log.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys and the deployment's keyring (who holds which key, which roles).",
                       no_args_is_help=True)
policy_app = typer.Typer(help="The deployment's policy: which one is in force, and changing it (signed, logged).",
                         no_args_is_help=True)
app.add_typer(forget_app, name="forget")
app.add_typer(log_app, name="log")
app.add_typer(keys_app, name="keys")
app.add_typer(policy_app, name="policy")
edit_app = typer.Typer(help="Knowledge edits: where a deployed model holds a fact (`memgov edit trace`).",
                       no_args_is_help=True)
app.add_typer(edit_app, name="edit")
console = Console()

HomeOpt = Annotated[str | None, typer.Option("--home", envvar="MEMGOV_HOME", help="State folder (default ./.memgov).")]
KeyOpt = Annotated[Path | None, typer.Option("--key", envvar="MEMGOV_KEY",
                                               help="Your Ed25519 private key file (memgov keys new); signs the act.")]
PolicyOpt = Annotated[str, typer.Option("--policy", envvar="MEMGOV_POLICY",
                                          help="Only to check: the deployment's policy is used, and a different one is "
                                          "refused (change it with `memgov policy adopt`).")]
InitPolicyOpt = Annotated[str, typer.Option("--policy", envvar="MEMGOV_POLICY",
                                              help="Policy name in policies/ or a YAML path; the deployment adopts it.")]


def _ws(home: str | None):
    from pipelines.deployment.workspace import Workspace

    return Workspace.open(home)


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _policy(ws, requested: str):
    """The deployment's policy in force; asking for another one is a one-line refusal (exit 2)."""
    from pipelines.governance.policy_in_force import PolicyNotInForce, policy_in_force
    from policies import PolicyError

    try:
        return policy_in_force(ws, requested or None)
    except (PolicyNotInForce, PolicyError) as exc:
        _fail(str(exc), 2)


@app.command()
def init(base_model: Annotated[str, typer.Option("--base-model", help="A Hugging Face causal LM: a folder or a cached hub id.")],
         data: Annotated[str | None, typer.Option("--data", help="Folder of contract tables (facts.jsonl, documents.jsonl, "
                                                  "general.jsonl, unseen.jsonl, ...; see policies/contract.json).")] = None,
         home: HomeOpt = None, policy: InitPolicyOpt = "default",
         admin: Annotated[list[str] | None, typer.Option("--admin", help="A keyring administrator, "
                                                         "NAME=ed25519:… (repeat): the keyring's root of trust.")] = None
         ) -> None:
    """Start a deployment from your own model and data: r0001 is the checkpoint, unchanged. Prints where the
    secrets live (outside the home): back that folder up, and keep it away from whoever writes the data."""

    from pipelines.governance.initialise import InitError, init_deployment, validate_tables
    from policies import load_policy

    pol = load_policy(policy)
    try:
        admins = _admins(admin)
        checked = validate_tables(pol, base_model, Path(data) if data else None)  # before anything is written
        out = init_deployment(_ws(home), pol, base_model, checked.rows, checked.info, admins=admins)
    except (InitError, ValueError) as exc:
        _fail(str(exc), 2)
    info = checked.info
    console.print_json(json.dumps({**out, "checkpoint": info.to_dict()}, default=str))
    notes = Console(stderr=True)  # stdout stays one JSON document
    _print_tables(notes, checked)
    notes.print(f"secrets (system key, UI secret, log witness): {out['secrets']} (mode 700; outside the home)")
    if not admins:
        notes.print("no keyring administrator pinned yet: `memgov keys pin-admins --admin NAME=ed25519:…`")


def _print_tables(out: Console, checked) -> None:
    """Each table of --data, its rows and what it will be used for, and the prompt format detected."""
    table = Table(title="tables")
    for col in ("file", "kind", "rows", "fact ids derived", "used for"):
        table.add_column(col)
    for t in checked.tables:
        table.add_row(t.file, t.kind, str(t.rows), str(t.fact_ids_derived or ""), t.used_for)
    if checked.tables:
        out.print(table)
    out.print(f"prompt format ({checked.info.architecture}): {checked.info.prompt_format}")


@app.command("validate")
def validate_cmd(base_model: Annotated[str, typer.Option("--base-model", help="A Hugging Face causal LM: a folder or "
                                                         "a cached hub id.")],
                 data: Annotated[str | None, typer.Option("--data", help="Folder of contract tables, as for init.")] = None,
                 policy: InitPolicyOpt = "default") -> None:
    """Check a checkpoint and its tables exactly as `memgov init` would, and say what each table will be used for;
    writes nothing. Exit 2 naming every problem and its fix."""
    from pipelines.governance.initialise import InitError, validate_tables
    from policies import load_policy

    try:
        checked = validate_tables(load_policy(policy), base_model, Path(data) if data else None)
    except (InitError, ValueError) as exc:
        _fail(str(exc).replace("nothing was written", "nothing would be admitted"), 2)
    _print_tables(console, checked)


def _admins(values: list[str] | None) -> dict[str, str]:
    """NAME=ed25519:… pairs as given to --admin."""
    out = {}
    for value in values or []:
        name, sep, public = value.partition("=")
        if not sep or not name.strip() or not public.strip():
            raise ValueError(f"--admin {value!r}: write NAME=ed25519:… (the public key `memgov keys new` prints)")
        out[name.strip()] = public.strip()
    return out


@app.command()
def run(batch: Annotated[str, typer.Option(help="Batch file in the inbox; default: the oldest unprocessed.")] = "",
        home: HomeOpt = None, policy: PolicyOpt = "") -> None:
    """Run one governed cycle through Dagster (recorded in the local instance, visible in the UI)."""
    import os

    from memgov.report import print_cycle
    from pipelines.cycle.stages import pending_batches

    ws = _ws(home)
    _ensure_deployment(ws, policy)
    _policy(ws, policy)  # a run on another policy than the deployment's is refused before anything starts
    if policy:
        os.environ["MEMGOV_POLICY"] = policy
    if not batch and not pending_batches(ws):
        _unlearning_only(ws)
        return
    from assets.runner import run_cycle
    from pipelines.cycle.lock import CycleBusy

    try:
        result = run_cycle(ws, batch or None)
    except CycleBusy as exc:
        _fail(str(exc), 3)
    print_cycle(console, ws, result)
    if not result.success:
        raise typer.Exit(1)


def _unlearning_only(ws) -> None:
    """No batch: forget requests waiting for their model-side forgetting get an unlearning-only candidate now."""
    from assets.runner import output_of, run_job
    from pipelines.cycle.urgent import waiting_requests

    waiting = [r.request_id for r in waiting_requests(ws)]
    if not waiting:
        _fail(f"no new batch in {ws.inbox} and no forget request waiting: drop a .jsonl or .parquet file there (or "
              "run `memgov demo`)")
    console.print(f"no new batch; {len(waiting)} forget request(s) wait for model-side forgetting "
                  f"({', '.join(waiting)}): building an unlearning-only candidate")
    result = run_job(ws, "unlearning_only", tags={"memgov/trigger": "cli"})
    out = output_of(result, "unlearn_waiting_requests") or {}
    if not result.success or out.get("refused"):
        _fail(f"the unlearning-only run failed: {out.get('refused') or 'see the run in the UI'}", 1)
    rel = out.get("release") or {}
    table = Table(title=f"gates for {rel.get('release_id')}")
    for col in ("metric", "value", "champion", "threshold", "verdict"):
        table.add_column(col)
    for v in rel.get("verdicts") or []:
        table.add_row(v["metric"], _fmt(v.get("value")), _fmt(v.get("champion_value")), str(v.get("threshold")),
                      "[green]pass[/green]" if v.get("passed") else "[red]FAIL[/red]")
    console.print(table)
    console.print(f"release {rel.get('release_id')}: {rel.get('status')}; champion now: {ws.registry.champion()}")
    for rid in waiting:
        console.print(f"forget request {rid}: {ws.requests.get(rid).state}")
    if not rel.get("passed"):
        raise typer.Exit(1)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command()
def submit(file: Annotated[Path, typer.Argument(help="A .jsonl or .parquet batch of contract rows.")],
           key: KeyOpt = None,
           name: Annotated[str | None, typer.Option(help="Batch name in the inbox (default: the file's stem).")] = None,
           home: HomeOpt = None) -> None:
    """Put a batch into the inbox, signed with your key over its name and hash: the keyring's holder of the key is
    its submitter, who may not approve the release trained on it."""
    from pipelines.governance.submission import submit as do_submit
    from pipelines.trust.decisions import SignatureRefused
    from pipelines.trust.keys import KeyFileError

    if key is None:
        _fail("an unsigned submission is refused: sign it with your key (--key FILE or MEMGOV_KEY; create one with "
              "`memgov keys new FILE` and have it granted with `memgov keys grant`)", 2)
    try:
        done = do_submit(_ws(home), file, key, name)
    except (ValueError, KeyFileError, SignatureRefused) as exc:
        _fail(str(exc), 2)
    console.print(f"batch [bold]{done.batch}[/bold] submitted by {done.submitted_by} (sha256 {done.sha256[:12]})")


def _ensure_deployment(ws, policy: str) -> None:
    """A first `memgov run` with `base_model.path` (and `base_model.data`) in the policy is `memgov init` with them."""
    if ws.registry.list():
        return

    from pipelines.governance.initialise import InitError, init_deployment, validate
    from policies import load_policy

    pol = load_policy(policy or "default")
    if not pol.base_model.path:
        _fail(f"no deployment in {ws.home}: run `memgov init --base-model PATH_OR_ID --data DIR` (or set "
              "base_model.path and base_model.data in the policy), or `memgov demo` for the demo world", 2)
    try:
        info, rows = validate(pol, pol.base_model.path, Path(pol.base_model.data) if pol.base_model.data else None)
        init_deployment(ws, pol, pol.base_model.path, rows, info)
    except InitError as exc:
        _fail(str(exc), 2)


@app.command()
def history(home: HomeOpt = None) -> None:
    """Which release served from when to when, who put it there and who approved it (from the change log)."""
    from pipelines.deployment.registry.history import service_periods

    table = Table(title="release history")
    for col in ("release", "from", "until", "how", "by", "reason", "approved by"):
        table.add_column(col)
    for p in service_periods(_ws(home).log.events()):
        table.add_row(p.release_id, p.start[:19], (p.end or "now")[:19], p.how, p.by, p.reason, "; ".join(p.approvals))
    console.print(table)


STATUS_ROWS = 20  # open requests listed by `memgov status`, nearest deadline first


@app.command()
def status(at: Annotated[str | None, typer.Option("--at", help="An ISO time: which release served then.")] = None,
           home: HomeOpt = None) -> None:
    """Champion, candidates and pending forget requests; with --at, the release in service at that time."""
    ws = _ws(home)
    if at is not None:
        _serving_at(ws, at)
        return
    champion = ws.registry.champion()
    table = Table(title=f"releases (champion: {champion or 'none'})")
    for col in ("release", "status", "cycle", "parent", "index", "created"):
        table.add_column(col)
    for rel in ws.registry.list():
        table.add_row(rel.release_id, rel.status, str(rel.cycle), str(rel.parent or ""), str(rel.index_snapshot),
                      str(rel.created_at)[:19])
    console.print(table)
    from pipelines.forget.deadlines import OPEN

    counts = ws.requests.state_counts()
    n_open = sum(counts.get(state, 0) for state in OPEN)
    shown = ws.requests.most_pressing(OPEN, STATUS_ROWS)
    req_table = Table(title=f"open forget requests ({n_open}; by state: "
                            f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'})")
    for col in ("request", "state", "requester", "deadline", "urgent"):
        req_table.add_column(col)
    for req in shown:
        req_table.add_row(req.request_id, req.state, req.requester, str(req.deadline)[:19], str(req.urgent))
    console.print(req_table)
    if n_open > len(shown):
        console.print(f"… the {len(shown)} nearest deadlines of {n_open}; `memgov forget status ID` shows one")
    from pipelines.governance.policy_in_force import PolicyNotInForce, deployed_policy

    try:
        current = deployed_policy(ws)
        console.print(f"policy in force: {current.label if current else 'none adopted yet (memgov init adopts one)'}")
    except PolicyNotInForce as exc:
        console.print(f"[red]policy: {exc}[/red]")


def _serving_at(ws, at: str) -> None:
    from pipelines.deployment.registry.history import service_periods, serving_at

    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--at {at!r} is not an ISO time; fix: give e.g. 2026-12-01T14:30:00Z", 2)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    period = serving_at(service_periods(ws.log.events()), when)
    if period is None:
        console.print(f"no release was in service at {when.isoformat()}")
        return
    approved = "; ".join(period.approvals) or "no approval recorded (initial or automatic release)"
    console.print(f"at {when.isoformat()}: [bold]{period.release_id}[/bold] served ({period.how} by {period.by} at "
                  f"{period.start[:19]}: {period.reason}; approved by {approved})")


@forget_app.callback(invoke_without_command=True)
def forget(
    ctx: typer.Context,
    request_id: Annotated[str | None, typer.Option("--id", help="Request id (idempotent: the same id twice is one request).")] = None,
    requester: Annotated[str | None, typer.Option(help="Optional: must be the key holder's name in the keyring.")] = None,
    subject_id: Annotated[list[str] | None, typer.Option("--subject-id", help="Subject id to forget (repeatable).")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject name as it appears in the data.")] = None,
    row_id: Annotated[list[str] | None, typer.Option("--row-id", help="Row id to forget (repeatable).")] = None,
    regex: Annotated[str | None, typer.Option(help="Regular expression over row text.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why the data must be forgotten.")] = None,
    legal_basis: Annotated[str, typer.Option(help="gdpr_art17 | ccpa_delete | copyright | contract_end | safety | other")] = "gdpr_art17",
    deadline_days: Annotated[float, typer.Option(help="Deadline, in days from now.")] = 30.0,
    urgent: Annotated[bool, typer.Option(help="Run out of cycle: an unlearning-only candidate at once.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what the selector covers, store by store; change nothing.")] = False,
    key: KeyOpt = None,
    home: HomeOpt = None,
    policy: PolicyOpt = "",
) -> None:
    """File a forget request signed with your key (you are its requester); a sensor turns it into exactly one run."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, value in (("--id", request_id), ("--reason", reason)) if not value]
    if missing:
        _fail(f"missing {', '.join(missing)}: a forget request needs an id and a reason", 2)
    if key is None and not dry_run:
        _fail("an unsigned forget request is refused: sign it with your key (--key FILE or MEMGOV_KEY; create one "
              "with `memgov keys new FILE` and have it granted with `memgov keys grant`); you are its requester", 2)
    from rich.markup import escape

    from pipelines.forget.filing import holder_of, sign_request
    from pipelines.state.requests import ForgetRequest, Selector
    from pipelines.state.requests.models import deadline_after
    from pipelines.trust.keys import KeyFileError

    ws = _ws(home)
    try:
        selector = Selector.parse(subject_ids=subject_id or [], subject=subject, row_ids=row_id or [], text_regex=regex)
        if dry_run:
            from pipelines.forget import dry_run_report, resolve_selector

            report = dry_run_report(ws, resolve_selector(ws.data, selector), _policy(ws, policy))
            console.print_json(json.dumps(report))
            if report["confirmation_needed"]:
                console.print(f"[yellow]confirmation needed:[/yellow] this plan covers more than "
                              f"{report['max_share']:.0%} of the deployment; a {' or '.join(report['confirmation_needed']['roles'])} "
                              f"must confirm it with `memgov forget confirm {request_id} --key FILE --role ROLE --reason TEXT`")
            return
        requester = requester or holder_of(ws, key)
        existing = _existing_request(ws, request_id)
        if existing is not None and _same_request(existing, requester, selector, reason, legal_basis, urgent):
            console.print(f"forget request [bold]{request_id}[/bold] already on file (state: {existing.state})")
            return
        req = ForgetRequest(request_id=request_id, requester=requester, selector=selector, reason=reason,
                            legal_basis=legal_basis, deadline=deadline_after(deadline_days, "--deadline-days"),
                            urgent=urgent)
        from pipelines.forget.filing import file_request

        stored, created = file_request(ws, req, sign_request(key, req))
    except (ValueError, KeyFileError) as exc:  # SignatureRefused is a ValueError
        _fail(escape(str(exc)), 2)  # the message quotes what was typed: never rich markup
    console.print(f"forget request [bold]{stored.request_id}[/bold] {'received' if created else 'already on file'} "
                  f"(state: {stored.state}; requester {stored.requester})")


def _existing_request(ws, request_id: str):
    from pipelines.forget.filing import existing_request

    return existing_request(ws, request_id)


def _same_request(stored, requester, selector, reason, legal_basis, urgent) -> bool:
    """A resubmission from the CLI recomputes its deadline from now; the request is the same if the rest is."""
    stored_selector = stored.selector if isinstance(stored.selector, dict) else getattr(stored.selector, "model_dump", dict)()
    return (stored.requester == requester and stored.reason == reason and stored.legal_basis == legal_basis
            and bool(stored.urgent) == urgent and stored_selector == selector.model_dump())


def _signed_request_act(ws, action: str, request_id: str, key: Path | None, role: str, reason: str,
                        claimed: str | None):
    """A confirmation or retry of a forget request, signed: who acts is the key's holder in the keyring."""
    from pipelines.governance.approvals import ApprovalRefused, signed
    from pipelines.trust.decisions import SignatureRefused, content_subject

    req = _existing_request(ws, request_id)
    if req is None:
        _fail(f"no forget request {request_id!r}: `memgov forget status ID` names the ones on file", 2)
    subject = content_subject("request", request_id, {"state": req.state, "selector_hash": req.selector_hash})
    envelope = _envelope(action, subject, key, None, role or "requester", reason)
    try:
        return signed(ws, envelope, action, subject, claimed, need_role=action == "confirm")
    except (SignatureRefused, ApprovalRefused) as exc:
        _fail(str(exc), 2)


@forget_app.command("retry")
def forget_retry(request_id: str, reason: Annotated[str, typer.Option(help="Why, e.g. which policy or method changed.")],
                 key: KeyOpt = None,
                 by: Annotated[str | None, typer.Option(help="Optional: must be the key holder's name.")] = None,
                 home: HomeOpt = None) -> None:
    """Retry a failed request's model-side forgetting (signed): urgent ones run now, others with the next cycle."""
    from pipelines.forget import retry_request

    ws = _ws(home)
    who = _signed_request_act(ws, "retry", request_id, key, "", reason, by)
    try:
        out = retry_request(ws, request_id, who.person, who.reason, proof=who.proof())
    except (KeyError, ValueError) as exc:
        _fail(str(exc), 2)
    if out["urgent"]:
        from assets.runner import run_job

        result = run_job(ws, "forget_request", {"ops": {"process_forget_request": {"config": {"request_id": request_id}}}},
                         tags={"memgov/trigger": "retry", "memgov/request": request_id})
        out = {**out, "run_id": result.run_id, "run_succeeded": result.success,
               "state": ws.requests.get(request_id).state}
    console.print_json(json.dumps(out, default=str))


@forget_app.command("confirm")
def forget_confirm(request_id: str,
                   role: Annotated[str, typer.Option(help="A role the keyring grants you, in unlearning.confirm_roles.")],
                   reason: Annotated[str, typer.Option(help="Why a plan this broad is right.")],
                   key: KeyOpt = None,
                   by: Annotated[str | None, typer.Option(help="Optional: must be the key holder's name.")] = None,
                   home: HomeOpt = None, policy: PolicyOpt = "") -> None:
    """Confirm (signed) a held request whose plan covers more than the policy's share of the data."""
    from pipelines.forget import confirm_request

    ws = _ws(home)
    pol = _policy(ws, policy)
    who = _signed_request_act(ws, "confirm", request_id, key, role, reason, by)
    try:
        out = confirm_request(ws, pol, request_id, who.person, who.role, who.reason, proof=who.proof())
    except (KeyError, ValueError) as exc:
        _fail(str(exc), 2)
    console.print_json(json.dumps(out))


@forget_app.command("status")
def forget_status(request_id: str, home: HomeOpt = None) -> None:
    """State, timestamps, evidence and deadline of one forget request."""
    ws = _ws(home)
    try:
        req = ws.requests.get(request_id)
    except (KeyError, ValueError) as exc:
        _fail(str(exc), 2)
    out = {"request_id": req.request_id, "state": req.state, "requester": req.requester, "urgent": req.urgent,
           "deadline": str(req.deadline), "timestamps": req.timestamps, "deadline_report": ws.requests.deadline_report(request_id),
           "evidence": {k: v for k, v in (req.evidence or {}).items() if k != "plan"}}
    console.print_json(json.dumps(out, default=str))


SignedOpt = Annotated[Path | None, typer.Option("--signed", help="A decision already signed with `memgov sign`.")]


def _envelope(action: str, subject: dict, key: Path | None, signed_file: Path | None, role: str, reason: str,
              details: dict | None = None) -> dict:
    """The signed statement for this act: read from --signed, or made now with --key; neither is refused."""
    from pipelines.trust.decisions import sign_statement, statement
    from pipelines.trust.keys import KeyFileError

    if signed_file is not None:
        try:
            return json.loads(signed_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            _fail(f"--signed {signed_file}: not a readable signed decision ({exc})", 2)
    if key is None:
        _fail(f"an unsigned {action} is refused: sign it with your key (--key FILE or MEMGOV_KEY; create one with "
              "`memgov keys new FILE` and have it granted with `memgov keys grant`) or pass --signed FILE", 2)
    if not role.strip() or not reason.strip():
        _fail("--role and --reason are required: the role the keyring grants you and why", 2)
    try:
        return sign_statement(key, statement(action, subject, role, reason, details))
    except KeyFileError as exc:
        _fail(str(exc), 2)


def _governed(act):
    """Run one governance act; a refusal is a one-line verdict (exit 2), never a traceback."""
    from pipelines.deployment.registry.registry import RecordTampered
    from pipelines.governance.approvals import ApprovalRefused
    from pipelines.trust.decisions import SignatureRefused

    try:
        return act()
    except (ApprovalRefused, SignatureRefused, RecordTampered, ValueError, KeyError) as exc:
        _fail(_message(exc), 2)


def _release(ws, release_id: str):
    try:
        return ws.registry.get(release_id)
    except (KeyError, ValueError) as exc:
        _fail(_message(exc), 2)


def _subject(ws, action: str, release_id: str) -> dict:
    """What the signature must cover (the same definition the check uses), or a one-line error."""
    from pipelines.governance.approvals import decision_subject

    try:
        return decision_subject(ws, action, release_id)
    except (KeyError, ValueError) as exc:
        _fail(_message(exc), 2)


def _message(exc: Exception) -> str:
    """A KeyError's str() is its repr; people should read the message itself."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _decide(decision: str, release_id: str, approver: str | None, role: str, reason: str, key: Path | None,
            signed_file: Path | None, home: str | None, policy: str) -> None:
    from pipelines.governance.approvals import decide_signed

    ws = _ws(home)
    pol = _policy(ws, policy)
    envelope = _envelope(decision, _subject(ws, decision, release_id), key, signed_file, role, reason)
    console.print(_governed(lambda: decide_signed(ws, pol, release_id, decision, envelope, approver)))


ApproverOpt = Annotated[str | None, typer.Option(help="Optional: must be the key holder's name in the keyring.")]
RoleOpt = Annotated[str, typer.Option(help="A role the keyring grants you and the policy allows for this act.")]
ReasonOpt = Annotated[str, typer.Option(help="Why; signed with the decision.")]


@app.command()
def approve(release_id: str, role: RoleOpt = "", reason: ReasonOpt = "", key: KeyOpt = None, signed: SignedOpt = None,
            approver: ApproverOpt = None, home: HomeOpt = None, policy: PolicyOpt = "") -> None:
    """Approve a candidate with a signed decision (same rules as the UI's approval job)."""
    _decide("approve", release_id, approver, role, reason, key, signed, home, policy)


@app.command()
def reject(release_id: str, role: RoleOpt = "", reason: ReasonOpt = "", key: KeyOpt = None, signed: SignedOpt = None,
           approver: ApproverOpt = None, home: HomeOpt = None, policy: PolicyOpt = "") -> None:
    """Reject a candidate with a signed decision."""
    _decide("reject", release_id, approver, role, reason, key, signed, home, policy)


@app.command()
def waive(release_id: str,
          gate: Annotated[list[str] | None, typer.Option(help="A failed gate the waiver covers; repeat for each.")] = None,
          role: RoleOpt = "", reason: ReasonOpt = "", key: KeyOpt = None, signed: SignedOpt = None,
          by: ApproverOpt = None, home: HomeOpt = None, policy: PolicyOpt = "") -> None:
    """Waive the failed gates of a rejected candidate (signed, logged); it then still needs its approvals."""
    from pipelines.governance.approvals import waive_signed

    ws = _ws(home)
    pol = _policy(ws, policy)
    envelope = _envelope("waive", _subject(ws, "waive", release_id), key, signed, role, reason,
                         {"gates": sorted(gate or [])})
    console.print(_governed(lambda: waive_signed(ws, pol, release_id, envelope, by)))


@app.command()
def rollback(to: Annotated[str, typer.Option("--to", help="Release to serve again.")],
             role: RoleOpt = "", reason: ReasonOpt = "", key: KeyOpt = None, signed: SignedOpt = None,
             actor: ApproverOpt = None, policy: PolicyOpt = "", home: HomeOpt = None) -> None:
    """Serve an earlier release again (signed; a role from approval.rollback_roles); tainted releases are refused."""
    from pipelines.governance.rollback import rollback_signed

    ws = _ws(home)
    pol = _policy(ws, policy)
    envelope = _envelope("rollback", _subject(ws, "rollback", to), key, signed, role, reason)
    console.print(_governed(lambda: rollback_signed(ws, pol, to, envelope, actor)))


@app.command()
def sign(action: Annotated[str, typer.Argument(help="approve | reject | waive | rollback | adopt_policy")],
         release_id: Annotated[str, typer.Argument(help="The release decided on (for rollback: the target; for "
                                                   "adopt_policy: the policy name or YAML path).")],
         key: Annotated[Path, typer.Option("--key", envvar="MEMGOV_KEY", help="Your private key file.")],
         role: RoleOpt, reason: ReasonOpt,
         out: Annotated[Path, typer.Option("--out", help="Where to write the signed decision (JSON).")],
         gate: Annotated[list[str] | None, typer.Option(help="waive: a failed gate it covers (repeat).")] = None,
         home: HomeOpt = None) -> None:
    """Sign a decision for someone else to file (`memgov approve ID --signed FILE`); it covers this release's
    current manifest, weights and card digests (and, for a rollback, the champion it replaces)."""
    if action not in ("approve", "reject", "waive", "rollback", "adopt_policy"):
        _fail(f"action {action!r}: sign one of approve, reject, waive, rollback, adopt_policy", 2)
    details = {"gates": sorted(gate or [])} if action == "waive" else None
    if action == "adopt_policy":  # covers the policy's whole content (`memgov policy adopt NAME --signed F`)
        from pipelines.governance.approvals import policy_subject
        from policies import PolicyError, load_policy

        try:
            subject = policy_subject(load_policy(release_id))
        except PolicyError as exc:
            _fail(str(exc), 2)
    else:
        subject = _subject(_ws(home), action, release_id)
    envelope = _envelope(action, subject, key, None, role, reason, details)
    out.write_text(json.dumps(envelope, indent=1), encoding="utf-8")
    console.print(f"signed {action} of {release_id} written to {out}")


@app.command()
def verify(release_id: str, home: HomeOpt = None) -> None:
    """Check a release: its signed attestation, its sealed status record and the digest of every artifact."""
    ws = _ws(home)
    _release(ws, release_id)
    problems = ws.registry.release_problems(release_id) + ws.registry.pointer_problems()
    if problems:
        console.print("[red]release " + release_id + " does NOT verify:[/red]\n  " + "\n  ".join(problems))
        raise typer.Exit(1)
    release = ws.registry.get(release_id)
    console.print(f"release {release_id} verifies: attestation signed by the system key, status record "
                  f"'{release.status}' sealed and logged, manifest and artifacts match their digests")


@log_app.command("show")
def log_show(n: Annotated[int, typer.Option("-n", help="Last N events.")] = 30, home: HomeOpt = None) -> None:
    """The last events of the change log."""
    events = _ws(home).log.events()[-n:]
    table = Table(title="change log")
    for col in ("seq", "time", "actor", "action", "object", "reason"):
        table.add_column(col, overflow="fold")
    for e in events:
        table.add_row(str(e["seq"]), e["time"][:19], e["actor"], e["action"], str(e["object"]), str(e.get("reason", ""))[:80])
    console.print(table)


@log_app.command("verify")
def log_verify(home: HomeOpt = None) -> None:
    """Prove the hash chain whole, every release's anchor in it and, with a mirror, every version of every mirrored
    event; exits 1 naming each problem, 2 when the mirror is misconfigured or cannot be read."""
    from pipelines.deployment.registry.anchors import anchor_problems
    from pipelines.state.ledger.mirror import MirrorUnavailable

    ws = _ws(home)
    try:
        log = ws.log
    except ValueError as exc:  # MEMGOV_LOG_MIRROR or MEMGOV_LOG_RETENTION_DAYS is wrong
        _fail(str(exc), 2)
    result = log.verify()
    if not result.ok:
        console.print(f"[red]change log BROKEN at line {result.first_bad_line}: {result.problem}[/red]")
    checked, problems = anchor_problems(ws.registry, log) if result.ok else (0, [])
    if result.ok:
        problems += _crossed(ws, log.events())
    try:
        mirrored = [text for _, text in log.mirror_problems()] if log.mirror is not None else []
    except MirrorUnavailable as exc:
        _fail(f"{exc}; the mirror was not checked", 1 if problems or not result.ok else 2)
    problems += mirrored[:20] + ([f"... and {len(mirrored) - 20} more mirror problems"] if len(mirrored) > 20 else [])
    if problems:
        console.print("[red]change log BROKEN: " + "; ".join(problems) + "[/red]")
    if problems or not result.ok:
        raise typer.Exit(1)
    mirror = (f", every event held once in the mirror {log.mirror.uri}" if log.mirror else
              ", its newest event witnessed with the secrets" if log.witness else ", no mirror configured")
    console.print(f"change log OK: {result.n_events} events, hash chain intact, {checked} release anchors hold, "
                  f"every release, status record, the champion pointer and the keyring match it{mirror}")


def _crossed(ws, events: list[dict]) -> list[str]:
    """The registry and the keyring crossed with the log (what the chain alone cannot vouch for)."""
    from pipelines.deployment.registry.anchors import registry_problems
    from pipelines.trust.keyring import log_problems

    return registry_problems(ws.registry, events) + log_problems(ws.home, events)


@keys_app.command("new")
def keys_new(path: Annotated[Path, typer.Argument(help="Where to write the private key (mode 600).")]) -> None:
    """Create your signing key; give the printed public key to whoever administers the keyring."""
    from pipelines.trust.keys import KeyFileError, generate

    try:
        public = generate(path)
    except KeyFileError as exc:
        _fail(str(exc), 2)
    console.print(public)


ByOpt = Annotated[str, typer.Option(help="A keyring administrator's private key file: the signer of the change.")]


@keys_app.command("pin-admins")
def keys_pin_admins(admin: Annotated[list[str], typer.Option("--admin", help="NAME=ed25519:… (repeat).")],
                    home: HomeOpt = None) -> None:
    """Pin the keyring's administrators, once (needs the deployment's secrets: the root is sealed by the system
    key). Every later change to the keyring is signed by one of them."""
    from pipelines.trust.grants import pin_admins
    from pipelines.trust.keys import KeyFileError

    try:
        ws = _ws(home)
        ring = pin_admins(ws.home, ws.log, _admins(admin))
    except (KeyFileError, ValueError) as exc:
        _fail(str(exc), 2)
    console.print(f"keyring administrators pinned: {', '.join(sorted(ring.admins))}")


@keys_app.command("admins")
def keys_admins(by: ByOpt, reason: Annotated[str, typer.Option(help="Why (logged).")],
                add: Annotated[list[str] | None, typer.Option("--add", help="NAME=ed25519:… (repeat).")] = None,
                remove: Annotated[list[str] | None, typer.Option("--remove", help="NAME (repeat).")] = None,
                home: HomeOpt = None) -> None:
    """Add or remove keyring administrators, signed by one in force."""
    from pipelines.trust.grants import change_admins
    from pipelines.trust.keys import KeyFileError

    try:
        ws = _ws(home)
        ring = change_admins(ws.home, ws.log, by, reason, _admins(add), list(remove or []))
    except (KeyFileError, ValueError) as exc:
        _fail(str(exc), 2)
    console.print(f"keyring administrators: {', '.join(sorted(ring.admins))}")


@keys_app.command("ui")
def keys_ui(by: ByOpt, reason: Annotated[str, typer.Option(help="Why (logged).")],
            trusted_proxy: Annotated[list[str] | None, typer.Option("--trusted-proxy", help="An address whose "
                                                                    "identity header is believed (repeat).")] = None,
            user_header: Annotated[str | None, typer.Option(help="The header a trusted proxy sets.")] = None,
            local_login: Annotated[bool | None, typer.Option("--local-login/--no-local-login")] = None,
            home: HomeOpt = None) -> None:
    """How the UI learns who is at the browser: a signed change to the keyring's ui section."""
    from pipelines.trust.grants import configure_ui
    from pipelines.trust.keys import KeyFileError

    settings = {k: v for k, v in {"trusted_proxies": trusted_proxy, "user_header": user_header,
                                  "local_login": local_login}.items() if v is not None}
    try:
        ws = _ws(home)
        ring = configure_ui(ws.home, ws.log, by, reason, **settings)
    except (KeyFileError, ValueError) as exc:
        _fail(str(exc), 2)
    console.print(ring.ui.model_dump())


@keys_app.command("grant")
def keys_grant(name: Annotated[str, typer.Argument(help="The person, as decisions will record them.")],
               role: Annotated[list[str], typer.Option(help="A role granted (repeat).")],
               by: ByOpt,
               reason: Annotated[str, typer.Option(help="Why (logged).")],
               key: Annotated[list[str] | None, typer.Option("--key", help="A public key 'ed25519:…' (repeat).")] = None,
               home: HomeOpt = None) -> None:
    """Grant a person keys and roles, a statement signed by a keyring administrator's key; the change is logged."""
    from pipelines.trust.grants import grant
    from pipelines.trust.keys import KeyFileError

    try:
        ws = _ws(home)
        console.print(grant(ws.home, ws.log, name, list(key or []), list(role), by, reason))
    except (KeyFileError, ValueError) as exc:
        _fail(str(exc), 2)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The person.")],
                by: ByOpt,
                reason: Annotated[str, typer.Option(help="Why (logged).")],
                key: Annotated[list[str] | None, typer.Option("--key", help="A public key 'ed25519:…' (repeat).")] = None,
                role: Annotated[list[str] | None, typer.Option(help="A role taken away (repeat).")] = None,
                home: HomeOpt = None) -> None:
    """Take keys or roles from a person (key rotation: grant the new key first, then revoke the old one)."""
    from pipelines.trust.grants import revoke
    from pipelines.trust.keys import KeyFileError

    try:
        ws = _ws(home)
        console.print(revoke(ws.home, ws.log, name, list(key or []), list(role or []), by, reason))
    except (KeyFileError, ValueError) as exc:
        _fail(str(exc), 2)


@keys_app.command("rotate-ui-secret")
def keys_rotate_ui_secret(by: ByOpt,
                          reason: Annotated[str, typer.Option(help="Why (logged).")],
                          home: HomeOpt = None) -> None:
    """A new UI secret: every session ends, and UI-filed forget requests not yet run must be filed again."""
    from pipelines.trust.grants import rotate_ui_secret

    try:
        ws = _ws(home)
        rotate_ui_secret(ws.home, ws.log, by, reason)
    except ValueError as exc:  # KeyFileError is a ValueError
        _fail(str(exc), 2)
    console.print("UI secret rotated: everyone signs in again")


@keys_app.command("rotate-system-key")
def keys_rotate_system_key(by: ByOpt, reason: Annotated[str, typer.Option(help="Why (logged).")],
                           new_key: Annotated[Path | None, typer.Option(help="A new key made elsewhere (production: "
                                                                        "mount it as the Secret afterwards).")] = None,
                           home: HomeOpt = None) -> None:
    """Re-seal every status record, attestation, the champion pointer, the keyring root and the log witness under a
    new system key, then swap it in; ordered by a keyring administrator. Holds the cycle lock."""
    from pipelines.cycle import lock
    from pipelines.deployment.rotation import rotate_system_key
    from pipelines.trust.grants import _admin
    from pipelines.trust.keys import KeyFileError

    ws = _ws(home)
    try:
        lock.acquire(ws, "system-key rotation", wait_s=0)
    except lock.CycleBusy as exc:
        _fail(str(exc), 3)
    try:
        out = rotate_system_key(ws, _admin(by), reason, new_key)
    except (KeyFileError, ValueError) as exc:
        _fail(str(exc), 2)
    finally:
        lock.release(ws)
    console.print_json(json.dumps(out))
    if not out["installed"]:
        console.print(f"now mount {new_key} as the deployment's system key (MEMGOV_SYSTEM_KEY) and "
                      f"{out['lineage_key']} as MEMGOV_LINEAGE_KEY in every pod")


@keys_app.command("list")
def keys_list(home: HomeOpt = None) -> None:
    """People in the keyring, their key ids and roles."""
    from pipelines.trust.keys import key_id

    ring = _ws(home).keyring()
    table = Table(title="keyring")
    for col in ("person", "keys", "roles", "UI password"):
        table.add_column(col)
    for name, person in sorted(ring.people.items()):
        table.add_row(name, ", ".join(key_id(k) for k in person.keys), ", ".join(person.roles),
                      "set" if person.password else "-")
    console.print(table)


@keys_app.command("password")
def keys_password(name: str, by: ByOpt,
                  password_file: Annotated[Path | None, typer.Option(help="Read the password from this file "
                                                                     "instead of the prompt.")] = None,
                  home: HomeOpt = None) -> None:
    """Set a person's password for the UI's local login (stored as an scrypt hash in the keyring)."""
    from pipelines.trust.grants import set_password

    secret = (password_file.read_text(encoding="utf-8").strip() if password_file
              else typer.prompt("password", hide_input=True, confirmation_prompt=True))
    try:
        ws = _ws(home)
        ring = set_password(ws.home, ws.log, name, secret, by)
    except ValueError as exc:
        _fail(str(exc), 2)
    console.print(f"UI password set for {name}")
    if not ring.ui.local_login:
        console.print("note: the UI's local login is off, so this password signs nobody in yet; turn it on with "
                      "`memgov keys ui --local-login --by ADMIN_KEY --reason …`")


@app.command()
def ui(port: Annotated[int, typer.Option()] = 3000,
       host: Annotated[str, typer.Option(help="Address to bind; behind a proxy, the proxy's side.")] = "127.0.0.1",
       home: HomeOpt = None) -> None:
    """The Dagster web UI behind memgov's authentication layer (who is signed in decides; see Security model)."""
    import os

    from assets.runner import ensure_instance_home
    from memgov.webui import serve

    ws = _ws(home)
    ensure_instance_home(ws)
    os.environ.update({"DAGSTER_HOME": str(ws.dagster_home), "MEMGOV_HOME": str(ws.home)})
    ws.system_key  # noqa: B018 - the keyring (and its UI secret) exists before the first visitor
    auth = ws.keyring().ui
    how = (f"sign-in: {'trusted proxies ' + ', '.join(auth.trusted_proxies) if auth.trusted_proxies else ''}"
           f"{' + ' if auth.trusted_proxies and auth.local_login else ''}{'local login' if auth.local_login else ''}"
           if auth.configured else "no authentication configured: governance jobs are read-only")
    console.print(f"Dagster UI on http://{host}:{port}  (state: {ws.home}; {how})")
    code = serve(ws.home, host, port)
    # Everything is stopped and closed; skip the interpreter's teardown of native extensions (gRPC, torch), which
    # takes seconds a pod between SIGTERM and its kill does not have.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@policy_app.command("show")
def policy_show(home: HomeOpt = None) -> None:
    """The policy in force (checked against the change log) and every adoption before it."""
    from pipelines.governance.policy_in_force import PolicyNotInForce, adoptions, deployed_policy

    ws = _ws(home)
    try:
        current = deployed_policy(ws)
    except PolicyNotInForce as exc:
        _fail(str(exc), 1)
    if current is None:
        console.print(f"no policy adopted in {ws.home} yet: `memgov init` adopts one")
        return
    table = Table(title=f"policy in force: {current.label}")
    for col in ("seq", "time", "policy", "by", "reason"):
        table.add_column(col, overflow="fold")
    for a in adoptions(ws):
        table.add_row(str(a["seq"]), a["time"][:19], a["label"], a["by"], a["reason"])
    console.print(table)


@policy_app.command("adopt")
def policy_adopt(policy: Annotated[str, typer.Argument(help="Policy name in policies/ or a YAML path.")],
                 role: RoleOpt = "", reason: ReasonOpt = "", key: KeyOpt = None, signed: SignedOpt = None,
                 home: HomeOpt = None) -> None:
    """Make another policy the deployment's: signed by a role the policy in force names (approval.policy_roles)."""
    from pipelines.governance.approvals import adopt_policy_signed, policy_subject
    from policies import PolicyError, load_policy

    ws = _ws(home)
    current = _policy(ws, "")
    try:
        new = load_policy(policy)
    except PolicyError as exc:
        _fail(str(exc), 2)
    envelope = _envelope("adopt_policy", policy_subject(new), key, signed, role, reason)
    console.print_json(json.dumps(_governed(lambda: adopt_policy_signed(ws, current, new, envelope))))


@edit_app.command("trace")
def edit_trace(
    prompt: Annotated[str | None, typer.Option(help="A prompt to trace; without it, a sample of the deployment's "
                                               "facts that name their subject.")] = None,
    subject: Annotated[str | None, typer.Option(help="The subject as written in --prompt (its tokens are corrupted).")] = None,
    answer: Annotated[str | None, typer.Option(help="The answer traced; default: the model's own greedy answer.")] = None,
    release: Annotated[str | None, typer.Option(help="Release to trace (default: the champion).")] = None,
    facts: Annotated[int, typer.Option(min=1, help="Facts traced without --prompt.")] = 20,
    samples: Annotated[int, typer.Option(min=1, help="Noise draws per fact.")] = 10,
    window: Annotated[int, typer.Option(min=1, help="Adjacent layers restored together.")] = 1,
    position: Annotated[str, typer.Option(help="subject (its last token, as ROME reads keys) or last (the prompt's "
                                          "last token).")] = "subject",
    home: HomeOpt = None,
) -> None:
    """Causal tracing: each layer's indirect effect (how much of the answer that layer's MLP alone brings back once
    the subject is corrupted with noise); ROME with `edit.params.layer: trace` writes where it peaks."""
    from pipelines.deployment.tracing import trace_release

    if position not in ("subject", "last"):
        _fail(f"--position {position!r}: use subject or last", 2)
    try:
        out = trace_release(_ws(home), release, prompt=prompt, subject=subject, answer=answer, n_facts=facts,
                            samples=samples, window=window, position=position)  # type: ignore[arg-type]
    except ValueError as exc:
        _fail(str(exc), 2)
    trace = out.trace
    console.print(f"causal trace of {out.release_id}: {trace.facts} fact(s), {position} token, window {window}")
    table = Table()
    table.add_column("layer", justify="right")
    table.add_column("indirect effect", justify="right")
    table.add_column("")
    top = max(max(trace.effects), 1e-12)
    for layer, effect in enumerate(trace.effects):
        bar = "#" * max(0, round(30 * effect / top))
        table.add_row(str(layer) + (" *" if trace.informative and layer == trace.best_layer else ""), f"{effect:+.4f}",
                      bar)
    console.print(table)
    peak = (f"peak at layer {trace.best_layer}" if trace.informative else
            f"no layer's MLP at the {position} token brings the answer back (try --position last)")
    console.print(f"answer probability: clean {trace.clean:.4f}, subject corrupted {trace.corrupted:.4f}; {peak}")
    for note in trace.skipped:
        console.print(f"[yellow]skipped:[/yellow] {note}")


@app.command()
def demo(fresh: Annotated[bool, typer.Option(help="Start from an empty state folder.")] = False, home: HomeOpt = None) -> None:
    """Three governed cycles on the bundled demo world, with a forget request filed between cycles 1 and 2."""
    from memgov.demo import run_demo

    sys.exit(run_demo(home, fresh=fresh, console=console))


def main() -> None:
    """The `memgov` command: evidence of tampering (a log, pointer, record, keyring or secret that is not what memgov
    wrote) is a one-line finding with its fix, exit 1, never a traceback."""
    from pipelines.core.secrets import SecretsError
    from pipelines.deployment.registry.registry import RecordTampered
    from pipelines.state.ledger import LogTampered
    from pipelines.trust.keys import KeyFileError

    try:
        app()
    except (LogTampered, RecordTampered, SecretsError, KeyFileError) as exc:
        console.print(f"[red]refused:[/red] {exc}")
        sys.exit(1)
