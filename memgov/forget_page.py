"""The forget-request form on the releases page (`/memgov/forget`): file a request as the signed-in person.

The form is checked here with the same model as `memgov forget` (so a bad field is named before anything
launches), then it launches the `forget_filing` job as the signed-in user; that job validates again, files the
request under the user's name with the UI server's attestation, and the forget-request sensor runs it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from memgov.forms import FormRefused, esc, form_launch, form_value
from pipelines.state.requests.models import LEGAL_BASES, ForgetRequest, deadline_after

JOB = "forget_filing"
_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class FilingForm:
    request_id: str
    subject_ids: list[str]
    row_ids: list[str]
    subject: str
    text_regex: str
    reason: str
    legal_basis: str
    deadline_days: float
    urgent: bool

    def run_config(self) -> dict:
        return {"ops": {"file_forget_request": {"config": {
            "request_id": self.request_id, "subject_ids": self.subject_ids, "row_ids": self.row_ids,
            "subject": self.subject, "text_regex": self.text_regex, "reason": self.reason,
            "legal_basis": self.legal_basis, "deadline_days": self.deadline_days, "urgent": self.urgent}}}}


def _ids(text: str) -> list[str]:
    return [part for part in _SPLIT.split(text.strip()) if part]


def parse_filing(form: dict[str, list[str]], user: str, now: dt.datetime | None = None) -> FilingForm:
    """The submitted form as a filing, or FormRefused naming the field (the job checks it all again)."""
    def one(name: str) -> str:
        return form_value(form, name)

    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    request_id = one("request_id") or f"ui-{stamp}"
    try:
        days = float(one("deadline_days") or "30")
    except ValueError:
        raise FormRefused("deadline_days: give a number of days, e.g. 30") from None
    try:
        deadline = deadline_after(days, "deadline_days")
    except ValueError as exc:
        raise FormRefused(str(exc)) from None
    filing = FilingForm(request_id, _ids(one("subject_ids")), _ids(one("row_ids")), one("subject"),
                        one("text_regex"), one("reason"), one("legal_basis"), days, one("urgent") == "on")
    selector = {"subject_ids": filing.subject_ids, "row_ids": filing.row_ids,
                **({"subject": filing.subject} if filing.subject else {}),
                **({"text_regex": filing.text_regex} if filing.text_regex else {})}
    try:
        ForgetRequest(request_id=filing.request_id, requester=user, selector=selector, reason=filing.reason,
                      legal_basis=filing.legal_basis, deadline=deadline, urgent=filing.urgent)
    except ValueError as exc:
        raise FormRefused(str(exc)) from None
    return filing


def render_form(user: str | None) -> str:
    """The filing form (only for a signed-in person: the request is filed under that name)."""
    if not user:
        return "<p><a href='/memgov/login?next=/memgov/releases'>Sign in</a> to file a forget request.</p>"
    bases = "".join(f"<option value='{esc(b)}'>{esc(b)}</option>" for b in LEGAL_BASES)
    return (
        "<form method='post' action='/memgov/forget' class='forget' id='forget-form'>"
        f"<h3>File a forget request</h3><p>Requester: <b>{esc(user)}</b> (the signed-in user). Select by at "
        "least one of the four fields; ids are separated by commas or spaces.</p>"
        "<label>Request id <input name='request_id' placeholder='generated when empty' size='30'></label><br><br>"
        "<label>Subject ids <input name='subject_ids' size='40'></label><br>"
        "<label>Row ids <input name='row_ids' size='40'></label><br>"
        "<label>Subject name <input name='subject' size='40'></label><br>"
        "<label>Text regex <input name='text_regex' size='40'></label><br><br>"
        f"<label>Legal basis <select name='legal_basis'>{bases}</select></label> "
        "<label>Deadline (days) <input name='deadline_days' value='30' size='5'></label> "
        "<label><input type='checkbox' name='urgent'> urgent (an unlearning-only candidate now)</label><br><br>"
        "<label>Reason<br><textarea name='reason' rows='2' cols='60' required></textarea></label><br><br>"
        "<button type='submit'>File forget request</button></form>")


def launch_payload(filing: FilingForm, location: str, repository: str) -> dict:
    return form_launch(JOB, filing.run_config(), "forget-form", location, repository)
