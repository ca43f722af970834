"""What every form page of the UI shares: the refusal a field earns, reading and escaping fields, the role-and-reason
rule, and the GraphQL launch a valid form becomes. The pages (decide, forget, rollback) import this; it imports none
of them."""

from __future__ import annotations

import html


class FormRefused(ValueError):
    """A field of the decision form that cannot be launched; the message names the field and the fix."""


def form_value(form: dict[str, list[str]], name: str) -> str:
    """One submitted field, stripped; empty when absent."""
    return (form.get(name) or [""])[0].strip()


def require_role_and_reason(role: str, reason: str, held: list[str], policy_roles: list[str], kind: str,
                            verb: str) -> None:
    """FormRefused unless `role` is one the person holds among the policy's, and a reason is given."""
    if role not in held:
        raise FormRefused(f"role: choose one of {', '.join(held) or f'none (you hold no {kind} role)'}; the policy "
                          f"lets {', '.join(policy_roles) or 'nobody'} {verb}")
    if not reason:
        raise FormRefused("reason: say why (it is recorded in the change log with your name)")


def esc(value: object) -> str:
    """Text made safe inside HTML and quoted attributes (every form page renders through this)."""
    return html.escape(str(value), quote=True)


LAUNCH = """mutation LaunchDecision($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

LOCATION = """query { repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name }
  jobs { name } } } } }"""


def form_launch(job: str, run_config: dict, form: str, location: str, repository: str) -> dict:
    """The GraphQL launch of `job` that a page's form asks for, tagged with the form it came from."""
    return {"query": LAUNCH, "operationName": "LaunchDecision", "variables": {"executionParams": {
        "selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job},
        "runConfigData": run_config, "executionMetadata": {"tags": [{"key": "memgov/form", "value": form}]}}}}


def launch_outcome(answer: dict) -> str:
    """The run id of a successful launch, or FormRefused with what the server said."""
    result = ((answer or {}).get("data") or {}).get("launchRun") or {}
    if result.get("__typename") == "LaunchRunSuccess":
        return result["run"]["runId"]
    errors = result.get("errors") or (answer or {}).get("errors") or []
    text = result.get("message") or "; ".join(e.get("message", "") for e in errors) or "the launch was refused"
    raise FormRefused(text)
