"""The rollback form on the releases page (`/memgov/rollback`): serve an earlier release again.

It offers only the releases that could serve again (retired or approved, never a tainted one, which may hold
forgotten data) and the rollback roles the policy names that the signed-in person holds; a reason is required.
A valid form launches the `rollback` job as the signed-in user, which checks every rule again.
"""

from __future__ import annotations

from dataclasses import dataclass

from memgov.forms import FormRefused, esc, form_launch, form_value, require_role_and_reason
from pipelines.governance.releases_view import ReleasesView

JOB = "rollback"


@dataclass(frozen=True)
class RollbackForm:
    to_release: str
    role: str
    reason: str

    def run_config(self) -> dict:
        return {"ops": {"rollback_release": {"config": {"to_release": self.to_release, "role": self.role,
                                                        "reason": self.reason}}}}


def rollback_roles(view: ReleasesView, granted: list[str]) -> list[str]:
    return [r for r in view.rollback_roles if r in granted]


def parse_rollback(form: dict[str, list[str]], view: ReleasesView, granted: list[str]) -> RollbackForm:
    """The submitted form as a rollback, or FormRefused naming the field (the job checks it all again)."""
    target, role, reason = (form_value(form, n) for n in ("to_release", "role", "reason"))
    if target not in view.rollback_targets:
        status = next((r.status for r in view.releases if r.release_id == target), "unknown")
        choices = ", ".join(view.rollback_targets) or "none"
        raise FormRefused(f"to_release: {target or '(empty)'} cannot serve again (it is {status}); choose one of "
                          f"{choices}")
    require_role_and_reason(role, reason, rollback_roles(view, granted), view.rollback_roles, "rollback",
                            "roll back")
    return RollbackForm(target, role, reason)


def render_rollback(view: ReleasesView, user: str | None, granted: list[str]) -> str:
    """The form, or a sentence saying why there is none."""
    if not user:
        return ""
    targets = view.rollback_targets
    if not targets:
        return ("<p id='rollback-none'>No earlier release can serve again (tainted releases may hold forgotten "
                "data and are never rolled back to).</p>")
    roles = rollback_roles(view, granted)
    if not roles:
        return (f"<p id='rollback-none'>You ({esc(user)}) hold none of the rollback roles "
                f"({esc(', '.join(view.rollback_roles) or 'none')}).</p>")
    releases = "".join(f"<option value='{esc(t)}'>{esc(t)}</option>" for t in targets)
    options = "".join(f"<option value='{esc(r)}'>{esc(r)}</option>" for r in roles)
    return ("<form method='post' action='/memgov/rollback' class='rollback' id='rollback-form'>"
            f"<h3>Roll back from {esc(view.champion or 'no champion')}</h3>"
            f"<label>Serve again <select name='to_release'>{releases}</select></label> "
            f"<label>Role <select name='role'>{options}</select></label><br><br>"
            "<label>Reason<br><textarea name='reason' rows='2' cols='60' required></textarea></label><br><br>"
            "<button type='submit'>Roll back</button></form>")


def launch_payload(form: RollbackForm, location: str, repository: str) -> dict:
    return form_launch(JOB, form.run_config(), "rollback-form", location, repository)
