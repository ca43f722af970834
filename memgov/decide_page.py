"""The approver's page (`/memgov/releases`): what serves, what waits, and a typed decision form.

The form offers only the candidates waiting for a decision and the deciding roles the policy names that the
signed-in person holds; decision is approve or reject; a reason is required. Nothing here decides: a valid form
launches the `release_decision` job as the signed-in user (the same sealed identity and server-side rules as any
launch), and the browser lands on that run's page, where the verdict is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from memgov.forget_page import render_form
from memgov.forms import FormRefused, esc, form_launch, form_value, launch_outcome, require_role_and_reason
from memgov.rollback_page import render_rollback
from pipelines.governance.releases_view import ReleasesView

DECISIONS = ("approve", "reject")
JOB = "release_decision"


@dataclass(frozen=True)
class DecisionForm:
    release_id: str
    decision: str
    role: str
    reason: str

    def run_config(self) -> dict:
        return {"ops": {"decide_release": {"config": {"release_id": self.release_id, "decision": self.decision,
                                                      "role": self.role, "reason": self.reason}}}}


def allowed_roles(view: ReleasesView, granted: list[str]) -> list[str]:
    """The policy's deciding roles, narrowed to those the signed-in person is granted in the keyring."""
    return [r for r in view.roles if r in granted]


def parse_form(form: dict[str, list[str]], view: ReleasesView, granted: list[str]) -> DecisionForm:
    """The submitted form as a decision, or FormRefused naming the field: checked again by the job itself."""
    release_id, decision, role, reason = (form_value(form, n) for n in ("release_id", "decision", "role", "reason"))
    if release_id not in view.pending:
        waiting = ", ".join(view.pending) or "none"
        raise FormRefused(f"release: {release_id or '(empty)'} is not waiting for a decision; pending: {waiting}")
    if decision not in DECISIONS:
        raise FormRefused("decision: choose approve or reject")
    require_role_and_reason(role, reason, allowed_roles(view, granted), view.roles, "deciding", "decide")
    return DecisionForm(release_id, decision, role, reason)


def render_page(view: ReleasesView, user: str | None, granted: list[str], message: str = "",
                error: bool = False) -> str:
    """The page: champion and candidates, one form per pending candidate (only when signed in)."""
    roles = allowed_roles(view, granted)
    rows = "".join(
        f"<tr id='release-{esc(r.release_id)}' class='{'pending' if r.pending else 'serving' if r.serving else ''}'><td>{esc(r.release_id)}</td>"
        f"<td>{'champion' if r.serving else 'pending decision' if r.pending else esc(r.status)}</td>"
        f"<td>{esc(r.gates)}</td><td>{esc('-' if r.new_facts is None else r.new_facts)}</td>"
        f"<td>{esc('-' if r.forgotten is None else r.forgotten)}</td><td>{esc(', '.join(r.approvals) or '-')}</td>"
        f"<td>{esc('-' if r.approvals_needed is None else r.approvals_needed)}</td><td>{esc(r.cycle)}</td></tr>"
        for r in view.releases)
    requests = "".join(
        f"<tr id='request-{esc(q.request_id)}'><td>{esc(q.request_id)}</td><td>{esc(q.state)}</td><td>{'yes' if q.urgent else 'no'}</td>"
        f"<td>{esc(q.deadline)}</td><td>{esc(q.hours_left)}</td><td>{esc(q.candidate or '-')}</td></tr>"
        for q in view.requests) or "<tr><td colspan='6'>none</td></tr>"
    if not user:
        forms = "<p><a href='/memgov/login?next=/memgov/releases'>Sign in</a> to decide.</p>"
    elif not view.pending:
        forms = "<p>Nothing is waiting for a decision.</p>"
    elif not roles:
        forms = (f"<p>You ({esc(user)}) hold none of the deciding roles ({esc(', '.join(view.roles))}); ask an "
                 "administrator for a grant (memgov keys grant).</p>")
    else:
        options = "".join(f"<option value='{esc(r)}'>{esc(r)}</option>" for r in roles)
        forms = "".join(
            f"<form method='post' action='/memgov/releases' class='decide' id='decide-{esc(rid)}'>"
            f"<h3>Decide {esc(rid)}</h3><input type='hidden' name='release_id' value='{esc(rid)}'>"
            "<label><input type='radio' name='decision' value='approve' checked> approve</label> "
            "<label><input type='radio' name='decision' value='reject'> reject</label><br><br>"
            f"<label>Role <select name='role'>{options}</select></label><br><br>"
            "<label>Reason<br><textarea name='reason' rows='3' cols='60' required></textarea></label><br><br>"
            f"<button type='submit'>Record decision on {esc(rid)}</button></form>"
            for rid in view.pending)

    note = (f"<p id='memgov-message' style='color:{'#b00' if error else '#060'}'>{esc(message)}</p>"
            if message else "")
    who = f"signed in as <b>{esc(user)}</b>" if user else "not signed in"
    return f"""<!doctype html><html><head><title>memgov releases</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px}}
tr.pending{{background:#fff8d6}} tr.serving{{background:#e6f4e6}} form.decide,form.forget,form.rollback{{border:1px solid #ccc;padding:1em;
margin:1em 0;max-width:40em}}</style></head><body>
<h2>Releases</h2><p>{who} · policy {esc(view.policy)} · champion <b>{esc(view.champion or 'none')}</b> ·
<a href='/assets/release'>latest evaluation card</a> · <a href='/assets/releases'>releases asset</a></p>{note}
<table><tr><th>release</th><th>status</th><th>gates</th><th>new facts</th><th>forgotten</th><th>approvals</th>
<th>still needed</th><th>cycle</th></tr>{rows}</table>
{forms}
{render_rollback(view, user, granted)}
<h3>Open forget requests</h3><table><tr><th>request</th><th>state</th><th>urgent</th><th>deadline</th>
<th>hours left</th><th>candidate</th></tr>{requests}</table>
{render_form(user)}</body></html>"""


def launch_payload(form: DecisionForm, location: str, repository: str) -> dict:
    return form_launch(JOB, form.run_config(), "releases-page", location, repository)


__all__ = ["DECISIONS", "JOB", "DecisionForm", "FormRefused", "allowed_roles", "launch_outcome", "launch_payload",
           "parse_form", "render_page"]
