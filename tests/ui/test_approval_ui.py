"""The real Dagster UI behind `memgov ui`'s authentication layer, in headless Chromium.

What an approver does by hand: open the UI, look at the lineage, try the `release_decision` job's Launchpad (refused
until signed in), sign in, type the decision as run config and press "Launch Run". The decision is recorded under
the signed-in user, whatever the config says, and the champion moves to the candidate.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from support_dagster import (
    APPROVER,
    REQUESTER,
    configure_ui_auth,
    dagster_dev,
    failure_messages,
    grant_ui_user,
    wait_for_location,
    waiting_candidate,
)
from support_governance import candidate as registered_candidate

from pipelines.deployment.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI") == "true"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CYCLE_ASSETS = ("admitted_batch", "selected_samples", "candidate_update", "candidate_model", "candidate_index",
                "evaluation_card", "release")
RUN_TIMEOUT_MS = 120_000
PASSWORD = "correct horse battery staple"
FILER = "dana"  # files forget requests from the UI

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(not CHROMIUM.exists() and not IN_CI,
                       reason=f"no browser at {CHROMIUM} (install Debian's chromium; `make test` does as root)"),
]


@pytest.fixture
def chromium() -> Path:
    """In CI a missing browser is a broken environment, not a reason to skip."""
    if not CHROMIUM.exists():
        pytest.fail(f"CI=true but {CHROMIUM} is missing: the UI tests need Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def waiting_release(demo_home: Path, demo_copy: Path, tmp_path_factory, monkeypatch) -> str:
    """The demo deployment under the default policy, with an urgent forget request's candidate waiting for approval."""
    monkeypatch.setenv("MEMGOV_POLICY", "default")
    return waiting_candidate(demo_home, demo_copy, tmp_path_factory)


def dismiss_first_visit_popup(page, timeout_ms: float = 15_000) -> None:
    """A fresh Dagster instance greets the first visitor with a community pop-up; later visits do not get it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=timeout_ms)
    except PlaywrightTimeout:  # this instance has shown it before
        return
    skip.click()
    skip.wait_for(state="hidden")


def set_launchpad_config(page, run_config: dict) -> None:
    """The Launchpad's editor is CodeMirror: set the text through its instance, as typing would."""
    editor = page.locator(".CodeMirror").first
    editor.wait_for(state="visible")
    page.wait_for_function("() => !!document.querySelector('.CodeMirror')?.CodeMirror")
    page.evaluate("(text) => document.querySelector('.CodeMirror').CodeMirror.setValue(text)",
                  yaml.safe_dump(run_config, sort_keys=False))


def launch_from_the_launchpad(page, server, location: str, run_config: dict) -> None:
    page.goto(f"{server.url}/locations/{location}/jobs/release_decision/playground", wait_until="domcontentloaded")
    dismiss_first_visit_popup(page, timeout_ms=1_000)
    set_launchpad_config(page, run_config)
    page.get_by_text("No errors", exact=True).wait_for(state="visible")
    page.get_by_role("button", name="Launch Run").click()


def run_outcome(page, server, run_id: str) -> str:
    done = page.get_by_text("Success", exact=True).or_(page.get_by_text("Failure", exact=True)).first
    expect_visible(done, RUN_TIMEOUT_MS)
    return done.inner_text()


def expect_visible(locator, timeout_ms: float = 30_000) -> None:
    from playwright.sync_api import expect

    expect(locator).to_be_visible(timeout=timeout_ms)


def sign_in(page, server, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server.url}/memgov/login", wait_until="domcontentloaded")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("domcontentloaded")
    expect(page.locator("#memgov-identity")).to_contain_text(f"signed in as {name}")


def rejected_cycle_run(home: Path) -> str:
    """The run id of the demo's cycle whose candidate its gates rejected."""
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        records = instance.fetch_materializations(AssetKey("release"), limit=20).records
    return next(r.run_id for r in records if r.asset_materialization.metadata["status"].value == "rejected")


def unforgotten_subjects(home: Path, n: int) -> list[str]:
    ws = Workspace.open(home)
    tomb = ws.requests.tombstones()
    names = [r["subject"] for r in ws.data.rows("admitted", "initial")[1:] if r.get("subject") and not tomb.covers(r)]
    return list(dict.fromkeys(names))[-n:]


def file_from_the_page(page, server, request_id: str, subject: str, days: str, urgent: bool) -> None:
    page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
    form = page.locator("#forget-form")
    form.locator("input[name=request_id]").fill(request_id)
    form.locator("input[name=subject]").fill(subject)
    form.locator("select[name=legal_basis]").select_option("gdpr_art17")
    form.locator("input[name=deadline_days]").fill(days)
    if urgent:
        form.locator("input[name=urgent]").check()
    form.locator("textarea[name=reason]").fill("erasure request received by phone")
    form.get_by_role("button").click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
    assert run_outcome(page, server, "") == "Success"


def wait_for_state(home: Path, request_id: str, state: str, timeout_s: float = 420.0):
    """The daemon's forget sensor ticks every 30 s; the urgent run then trains an unlearning-only candidate."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        req = Workspace.open(home).requests.get(request_id)
        if req.state == state:
            return req
        assert req.state != "failed", req.evidence.get("failure")
        time.sleep(3)
    raise AssertionError(f"{request_id} is {req.state}, not {state}, after {timeout_s:.0f} s")


def check_evaluations(home: Path, check: str) -> list:
    """The releases asset's `check` executions, newest first, from the deployment's instance."""
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        key = AssetCheckKey(AssetKey("releases"), check)
        return list(instance.event_log_storage.get_asset_check_execution_history(key, limit=100))


def wait_for_candidate(home: Path, known: set[str], timeout_s: float = 300.0) -> str:
    """The unlearning-only candidate, once measured and registered (after the request reads `applied`)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [r for r in Workspace.open(home).registry.list() if r.release_id not in known]
        if new:
            (release,) = new
            assert release.status == "candidate", f"{release.release_id} is {release.status}"
            return release.release_id
        time.sleep(3)
    raise AssertionError(f"no candidate registered within {timeout_s:.0f} s")


def wait_for_check(home: Path, check: str, seen: int, timeout_s: float = 180.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        history = check_evaluations(home, check)
        if len(history) > seen and history[0].status.value in ("SUCCEEDED", "FAILED"):
            return
        time.sleep(2)
    raise AssertionError(f"no new evaluation of {check} within {timeout_s:.0f} s")


def test_approve_from_the_launchpad(chromium: Path, demo_copy: Path, waiting_release: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    home, release_id = demo_copy, waiting_release
    champion_before = Workspace.open(home).registry.champion()
    assert champion_before not in (None, release_id)
    assert APPROVER != REQUESTER
    configure_ui_auth(home, local_login=True)
    grant_ui_user(home, APPROVER, "ml-lead", password=PASSWORD)
    grant_ui_user(home, FILER, "ops", password=PASSWORD)
    reason = "evaluation card reviewed in the UI"
    config = {"release_id": release_id, "decision": "approve", "role": "ml-lead", "reason": reason}

    with dagster_dev(home, tmp_path, memgov_ui=True, automation=True) as server, sync_playwright() as pw:
        location = wait_for_location(server)
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            # The cycle's lineage: every stage is a node of the asset graph.
            page.goto(f"{server.url}/asset-groups/cycle", wait_until="domcontentloaded")
            dismiss_first_visit_popup(page)
            graph = page.locator("foreignObject")  # graph nodes are HTML inside the SVG; the sidebar list is not
            for name in CYCLE_ASSETS:
                expect(graph.get_by_text(name, exact=True).first).to_be_visible()
            expect(page.locator("#memgov-identity")).to_contain_text("not signed in")
            page.screenshot(path=tmp_path / "asset_graph.png")

            # A visitor who has not signed in cannot launch the approval job: the launch is refused with the reason.
            launch_from_the_launchpad(page, server, location, {"ops": {"decide_release": {"config": config}}})
            expect(page.get_by_text(re.compile("you are not signed in")).first).to_be_visible()
            page.screenshot(path=tmp_path / "refused.png")
            assert Workspace.open(home).registry.get(release_id).approvals == []

            # Sign in with the local login; the banner names who decisions will be recorded under.
            sign_in(page, server, APPROVER)

            # Signed in, but the config names someone else: the run fails with the rule, nothing is recorded.
            claimed = {**config, "approver": "bob"}
            launch_from_the_launchpad(page, server, location, {"ops": {"decide_release": {"config": claimed}}})
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            assert run_outcome(page, server, run_id) == "Failure"
            assert any(f"signed in as {APPROVER}" in m for m in failure_messages(server, run_id))
            assert Workspace.open(home).registry.get(release_id).approvals == []

            # The approver's page, one click from any page: the pending candidate, and only the roles the policy
            # names that this person holds. An empty reason is refused by the server too (the browser's own
            # `required` check is removed here to reach it), and nothing is recorded.
            page.goto(f"{server.url}/asset-groups/cycle", wait_until="domcontentloaded")
            page.get_by_role("link", name="releases and decisions").click()  # click 1
            form = page.locator(f"#decide-{release_id}")
            expect(form).to_be_visible()
            assert page.locator("form.decide").count() == 1, "only the pending candidate can be decided"
            assert form.locator("select[name=role] option").all_inner_texts() == ["ml-lead"]
            expect(page.locator("tr.serving")).to_contain_text(champion_before)
            form.locator("textarea").evaluate("t => t.removeAttribute('required')")
            form.get_by_role("button").click()
            expect(page.locator("#memgov-message")).to_contain_text("reason: say why")
            assert Workspace.open(home).registry.get(release_id).approvals == []

            # The approval: type the reason, press the button (click 2); the browser lands on the run, a Success.
            page.locator(f"#decide-{release_id} textarea").fill(reason)
            page.screenshot(path=tmp_path / "decision_form.png")
            page.locator(f"#decide-{release_id} button").click()  # click 2
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            assert run_outcome(page, server, run_id) == "Success", "\n".join(failure_messages(server, run_id))
            promoted = re.compile(rf"decision recorded: .*'status': 'champion', 'champion': '{release_id}'")
            expect(page.get_by_text(promoted)).to_be_visible()
            page.screenshot(path=tmp_path / "run.png")

            # The releases view is current: the page and the releases asset both show the new champion.
            page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
            expect(page.locator("tr.serving")).to_contain_text(release_id)
            assert page.locator("form.decide").count() == 0
            page.goto(f"{server.url}/assets/releases", wait_until="domcontentloaded")
            expect_visible(page.get_by_text(release_id).first)  # the metadata table renders after the page under load
            page.screenshot(path=tmp_path / "releases_asset.png")

            # The evaluation card of the cycle's release, as the UI renders it: every plot loads.
            page.goto(f"{server.url}/assets/release", wait_until="domcontentloaded")
            page.get_by_text("[Show Markdown]").first.click()
            images = page.locator("img[src^='data:image/png']")
            expect(images.first).to_be_visible()
            widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) == 2 and all(w > 0 for w in widths), widths
            expect(page.get_by_text(re.compile(r"Evaluation card — r\d{4}")).first).to_be_visible()
            page.screenshot(path=tmp_path / "card.png")

            # A gate rejection reads as a verdict on its cycle's run page: the failed gates, values and thresholds.
            rejected_run = rejected_cycle_run(home)
            page.goto(f"{server.url}/runs/{rejected_run}", wait_until="domcontentloaded")
            expect(page.get_by_text(re.compile(r"r\d{4} rejected by its gates: new_fact_recall")).first).to_be_visible()
            page.screenshot(path=tmp_path / "rejection.png")

            # A rollback from the page: a later candidate (registered on the champion's weights, as a cycle would)
            # is approved, then the approver serves the earlier release again from the rollback form, which offers
            # only releases that may serve again. The view shows each new state.
            ws_now = Workspace.open(home)
            later = registered_candidate(ws_now, honoured=tuple(ws_now.registry.get(release_id).tombstones_honoured))
            page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
            expect(page.locator(f"#release-{later}")).to_contain_text("pending decision")
            page.locator(f"#decide-{later} textarea").fill("later candidate reviewed")
            page.locator(f"#decide-{later} button").click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
            assert run_outcome(page, server, "") == "Success"
            page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
            expect(page.locator("tr.serving")).to_contain_text(later)
            expect(page.locator(f"#release-{release_id}")).to_contain_text("retired")
            targets = page.locator("#rollback-form select[name=to_release] option").all_inner_texts()
            assert release_id in targets and champion_before not in targets, targets  # tainted: never offered
            rollback_form = page.locator("#rollback-form")
            rollback_form.locator("select[name=to_release]").select_option(release_id)
            rollback_form.locator("textarea").fill("regression reported after the later release")
            page.screenshot(path=tmp_path / "rollback_form.png")
            rollback_form.get_by_role("button").click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
            assert run_outcome(page, server, "") == "Success"
            page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
            expect(page.locator("tr.serving")).to_contain_text(release_id)
            expect(page.locator(f"#release-{later}")).to_contain_text("retired")
            assert Workspace.open(home).registry.champion() == release_id
            page.screenshot(path=tmp_path / "rolled_back.png")

            # Forget requests filed from the releases page, as the signed-in user: one with a deadline about to
            # pass, one urgent. The daemon's sensor runs each; the urgent one's candidate waits for a decision.
            # Filed by someone from operations: the approver may not decide a candidate of her own request.
            sign_in(page, server, FILER)
            late_subject, urgent_subject = unforgotten_subjects(home, 2)
            known = {r.release_id for r in Workspace.open(home).registry.list()}
            file_from_the_page(page, server, "req-browser-late", late_subject, "0.0006", urgent=False)
            file_from_the_page(page, server, "req-browser-urgent", urgent_subject, "20", urgent=True)
            wait_for_state(home, "req-browser-urgent", "applied")
            candidate = wait_for_candidate(home, known)
            assert Workspace.open(home).requests.get("req-browser-urgent").requester == FILER
            sign_in(page, server, APPROVER)
            page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
            expect(page.locator("#request-req-browser-urgent")).to_contain_text("applied")
            expect(page.locator("#request-req-browser-urgent")).to_contain_text(candidate)
            expect(page.locator("tr.pending")).to_contain_text(candidate)
            page.screenshot(path=tmp_path / "urgent_candidate.png")

            # Reject that candidate from its form; the view shows it rejected and nothing left to decide.
            form = page.locator(f"#decide-{candidate}")
            form.locator("input[value=reject]").check()
            form.locator("textarea").fill("unlearning candidate rejected in review")
            form.get_by_role("button").click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
            assert run_outcome(page, server, "") == "Success"
            page.goto(f"{server.url}/memgov/releases", wait_until="domcontentloaded")
            expect(page.locator(f"#release-{candidate}")).to_contain_text("rejected")
            assert page.locator("form.decide").count() == 0
            assert Workspace.open(home).registry.status(candidate) == "rejected"

            # The overdue request turns the deadline check red once the releases view is materialized.
            seen = len(check_evaluations(home, "forget_deadlines"))
            page.goto(f"{server.url}/assets/releases", wait_until="domcontentloaded")
            page.get_by_role("button", name="Materialize").first.click()
            wait_for_check(home, "forget_deadlines", seen)
            page.goto(f"{server.url}/assets/releases?view=checks", wait_until="domcontentloaded")
            # the page may still show the evaluation running for a while after the instance has its result
            expect_visible(page.get_by_text("Failed", exact=True).first)
            expect_visible(page.get_by_text(re.compile(r"req-browser-late \(planned\): due .*overdue")).first)
            page.screenshot(path=tmp_path / "overdue.png")
        except BaseException:
            page.screenshot(path=tmp_path / "failure.png")
            print(f"screenshots and the server's log: {tmp_path}")
            raise
        finally:
            browser.close()

    ws = Workspace.open(home)
    assert ws.registry.champion() == release_id
    assert ws.registry.status(champion_before) in ("retired", "tainted")  # tainted: trained on the forgotten subject
    approved = [e for e in ws.log.events() if e["object"] == release_id and e["action"] == "release.approved"]
    assert [(e["actor"], e["reason"], e.get("run_id")) for e in approved] == [(APPROVER, reason, run_id)]
    assert ws.registry.get(release_id).approvals[0]["signed"]["via"] == "ui:login"
    for name in ("asset_graph.png", "refused.png", "run.png"):
        assert (tmp_path / name).stat().st_size > 10_000, f"{name} looks empty"
