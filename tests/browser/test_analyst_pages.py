"""The analysts' pages in a real browser (headless Chromium) against a live server with
workers on the real Docker engine: submit a signed TRS tool version (CWL, and WDL built from
miniwdl's reading of its inputs) on a DRS object picked from a readable dataset (parameters
validated first), follow the run to COMPLETE, read each
task's verification evidence, download an output; cancel with a confirmation; a tampered
tool version refused with its reason (expected vs actual); a viewer and an auditor see less.

Set ``HELIXGATE_SCREENSHOTS_DIR`` (e.g. ``docs/screenshots``) to save the main pages' screenshots.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect
from sqlalchemy.orm import Session

from helixgate_app.demo_assets import workflow_files
from tests.browser.a11y import assert_accessible
from tests.browser.conftest import assert_security_headers
from tests.e2e.conftest import World, make_world
from tests.e2e.test_run_control import _slow_workflow
from tests.fixtures.docker_images import PushedImage
from tests.fixtures.live import LiveServer, start_server, stop_server
from tests.fixtures.ui import make_ui_user, ui_login
from trs_registry.models import ImageRow, ToolVersionRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = b"banana\napple\ncherry\napple\nbanana\n"
SORTED = b"APPLE\nBANANA\nCHERRY\n"
SHOTS = os.environ.get("HELIXGATE_SCREENSHOTS_DIR", "")


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, pushed_busybox: PushedImage, test_session_id: str
) -> Iterator[World]:
    """One live server (APIs, UI, two workers) with a signed tool and a dataset granted to ann."""
    servers: list[LiveServer] = []

    def factory(**kwargs: Any) -> LiveServer:
        servers.append(start_server(tmp_path_factory.mktemp("ui-analyst"), **kwargs))
        return servers[-1]

    try:
        yield make_world(factory, pushed_busybox, test_session_id)
    finally:
        for s in servers:
            stop_server(s)


def _wait_state(world: World, run_id: str, states: set[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = world.analyst.run_status(run_id)
        if state in states:
            return state
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not reach {states}")


def _wait_task(world: World, run_id: str, name: str, timeout: float = 240) -> None:
    """Until task ``name`` of the run has finished (an exit code); fails with the run's state and the server log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(t["name"] == name and t.get("exit_code") is not None for t in world.analyst.run_tasks(run_id)):
            return
        time.sleep(0.3)
    log = world.analyst.run_log(run_id)
    raise AssertionError(
        f"task {name} of {run_id} did not finish (run {log['state']}): {log['run_log'].get('system_logs')}\n"
        + world.server.log()[-3000:]
    )


def test_analyst_submits_follows_inspects_and_downloads(browser_page: Any, console_log: Any, world: World) -> None:
    obj = world.steward.upload(TEXT, name="fruit.txt", dataset_id=world.dataset_id)
    ann = make_ui_user(world.server, "ann", "analyst")
    base = world.server.url
    page = ui_login(browser_page, ann)
    # the landing page says what an analyst can do
    actions = page.locator("ul.actions")
    expect(actions.get_by_role("link", name="Submit a workflow")).to_be_visible()
    _shot(page, "landing")
    assert_accessible(page)
    actions.get_by_role("link", name="Submit a workflow").click()
    page.locator("#pick").select_option(f"{world.tool_id}:{world.version_id}:CWL")
    page.get_by_role("button", name="Choose").click()
    # the File input offers the readable dataset's object, with its checksum
    picker = page.locator("select[name='in.text']")
    expect(picker.locator("option", has_text="fruit.txt")).to_have_count(1)
    assert hashlib.sha256(TEXT).hexdigest()[:12] in picker.inner_text()
    _shot(page, "submit")
    assert_accessible(page)
    # parameters are validated before anything reaches WES
    page.locator("input[name='uri.text']").fill("/etc/passwd")
    console_log.allow_status(400)
    page.get_by_role("button", name="Submit the run").click()
    expect(page.get_by_role("alert").filter(has_text="pick a dataset object or give a drs:// URI")).to_be_visible()
    assert world.analyst.api.get_json("/ga4gh/wes/v1/runs")["runs"] == []
    page.locator("input[name='uri.text']").fill("")
    page.locator("select[name='in.text']").select_option(world.drs_uri(obj["id"]))
    page.locator("#tags").fill("project:ui-test")
    page.get_by_role("button", name="Submit the run").click()
    page.wait_for_url(re.compile(re.escape(base) + r"/ui/runs/[0-9a-f-]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".flash-success")).to_contain_text(f"Run {run_id} submitted.")
    # the page follows the run (htmx polling) until it is complete
    expect(page.locator("#run-state")).to_have_text("COMPLETE", timeout=240_000)
    expect(page.locator("table.outputs tr", has_text="sorted_lines")).to_have_count(1)  # no reload needed
    response = page.reload()
    assert response is not None and response.status == 200
    assert_security_headers(response.headers)
    # a timeline of three tasks, each with the evidence of what the gate checked
    tasks = page.locator("li.task")
    expect(tasks).to_have_count(3)
    assert [t.strip() for t in page.locator(".task-name").all_inner_texts()] == ["upper", "sort", "count"]
    expect(page.locator("svg.bar")).to_have_count(3)
    first = tasks.nth(0)
    first.locator("summary").focus()  # the evidence opens from the keyboard
    page.keyboard.press("Enter")
    evidence = first.locator("details.evidence")
    expect(evidence.locator("dd.ok")).to_have_text("verified")
    expect(evidence).to_contain_text(world.image.image_id)
    expect(evidence).to_contain_text(f"{world.tool_id} {world.version_id}")
    row = evidence.locator("table.checks tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(world.drs_uri(obj["id"]))
    assert row.locator("code.digest").all_inner_texts() == [hashlib.sha256(TEXT).hexdigest()] * 2  # expected, actual
    expect(row.locator("td").last).to_have_text("match")
    _shot(page, "run")
    assert_accessible(page)
    # outputs download through the UI with the user's token, verified on the way
    link = page.locator("table.outputs tr", has_text="sorted_lines").get_by_role("link")
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_bytes() == SORTED
    # the runs list filters by state and tag
    page.goto(f"{base}/ui/runs/?state=COMPLETE&tag=project:ui-test")
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    expect(page.locator("table.runs")).to_contain_text(run_id)
    _shot(page, "runs")
    assert_accessible(page)
    page.goto(f"{base}/ui/runs/?tag=project:other")
    expect(page.locator(".empty")).to_have_text("No runs match.")


def test_cancel_asks_for_confirmation_then_stops_the_run(browser_page: Any, world: World) -> None:
    obj = world.steward.upload(TEXT, name="slow.txt", dataset_id=world.dataset_id)
    run_id = world.analyst.submit_run(
        "wf.cwl",
        {"text": {"class": "File", "location": world.drs_uri(obj["id"])}},
        attachments=_slow_workflow(world.image.pinned_ref, 120),
    )
    _wait_task(world, run_id, "a")
    page = ui_login(browser_page, make_ui_user(world.server, "ann", "analyst"))
    page.goto(f"{world.server.url}/ui/runs/{run_id}")
    # the page polls while the run runs; a finished task's evidence, once opened, stays open
    done = page.locator("li.task").filter(has=page.locator(".task-name", has_text=re.compile(r"^a$")))
    done.locator("summary").click()
    for _ in range(2):
        with page.expect_response(lambda r: r.url.endswith(f"/ui/runs/{run_id}/live")):
            pass
    expect(done.locator("details.evidence")).to_have_attribute("open", "")
    expect(done.locator("dd.ok")).to_have_text("verified")
    page.get_by_role("link", name="Cancel this run…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Cancel run")
    assert world.analyst.run_status(run_id) == "RUNNING"  # nothing happened before the confirmation
    page.get_by_role("button", name="Yes, cancel the run").click()
    expect(page.locator(".flash-success")).to_contain_text(f"Cancellation of run {run_id} requested.")
    expect(page.locator("#run-state")).to_have_text("CANCELED", timeout=120_000)
    expect(page.get_by_role("link", name="Cancel this run…")).to_have_count(0)


def _set_config_digest(world: World, version_id: str, digest: str) -> str:
    """Edit TRS's image row of a version directly in the database (an attacker with table
    access); returns the value it held."""
    engine = sa.create_engine(f"sqlite:///{world.server.data_dir / 'helixgate.db'}")
    try:
        with Session(engine) as s:
            version = s.scalars(
                sa.select(ToolVersionRow).where(
                    ToolVersionRow.tool_id == world.tool_id, ToolVersionRow.version_id == version_id
                )
            ).one()
            old = s.scalars(sa.select(ImageRow.config_digest).where(ImageRow.version_pk == version.pk)).one()
            s.execute(sa.update(ImageRow).where(ImageRow.version_pk == version.pk).values(config_digest=digest))
            s.commit()
            return str(old)
    finally:
        engine.dispose()


def test_a_tampered_tool_version_is_refused_and_the_page_shows_why(browser_page: Any, world: World) -> None:
    ref = f"{world.image.repository}:{world.image.tag}"
    world.dev.publish_version(world.tool_id, "9.0.0", workflow_files(ref), [ref], primary="workflow.cwl")
    forged = "sha256:" + "0" * 64
    original = _set_config_digest(world, "9.0.0", forged)  # TRS's table points the version at another image
    try:
        obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
        params = {"text": {"class": "File", "location": world.drs_uri(obj["id"])}}
        run_id = world.analyst.submit_run(f"trs://{world.drs_host}/{world.tool_id}/9.0.0", params)
        assert _wait_state(world, run_id, {"EXECUTOR_ERROR", "SYSTEM_ERROR", "COMPLETE"}) == "EXECUTOR_ERROR"
    finally:  # other tests' runs of the same image must not meet the forged row
        _set_config_digest(world, "9.0.0", original)
    page = ui_login(browser_page, make_ui_user(world.server, "ann", "analyst"))
    page.goto(f"{world.server.url}/ui/runs/{run_id}")
    expect(page.locator("#run-state")).to_have_text("EXECUTOR_ERROR")
    banner = page.locator("section.refusals")
    expect(banner).to_contain_text("Verification refused this run")
    expect(banner).to_contain_text("image configuration digest recorded in TRS differs from the signed statement")
    expect(banner.locator("dl.checksums").first).to_contain_text(world.image.image_id)  # expected: the signed id
    expect(banner.locator("dl.checksums").first).to_contain_text(forged)  # actual: what the table said
    # the refused task: its evidence is open, the image not verified, nothing staged
    task = page.locator("li.task").first
    expect(task.locator(".refusal")).to_contain_text("Refused before start")
    expect(task.locator("dd.bad")).to_have_text("not verified")
    # the run's stderr (loaded by htmx under the CSP) carries the same reason
    expect(page.locator("#log-stderr pre")).to_contain_text("refused before start")
    _shot(page, "refused")


def test_a_forged_intermediate_is_refused_and_the_task_shows_expected_vs_actual(
    browser_page: Any, world: World
) -> None:
    obj = world.steward.upload(TEXT, name="i.txt", dataset_id=world.dataset_id)
    run_id = world.analyst.submit_run(
        "wf.cwl",
        {"text": {"class": "File", "location": world.drs_uri(obj["id"])}},
        attachments=_slow_workflow(world.image.pinned_ref, 4),
    )
    _wait_task(world, run_id, "a")
    (produced,) = (Path(world.server.data_dir) / "wes" / "work" / run_id).rglob("a.txt")
    recorded = hashlib.sha256(produced.read_bytes()).hexdigest()
    produced.write_bytes(b"FORGED\n")  # between a (which wrote it) and c (which reads it)
    assert _wait_state(world, run_id, {"EXECUTOR_ERROR", "COMPLETE", "SYSTEM_ERROR"}) == "EXECUTOR_ERROR"
    page = ui_login(browser_page, make_ui_user(world.server, "ann", "analyst"))
    page.goto(f"{world.server.url}/ui/runs/{run_id}")
    task = page.locator("li.task").filter(has=page.locator(".task-name", has_text=re.compile(r"^c$")))
    refusal = task.locator(".refusal")
    expect(refusal).to_contain_text("sha256 mismatch for input a.txt")
    expect(refusal.locator("dl.checksums")).to_contain_text(recorded)  # expected: what task a recorded
    expect(refusal.locator("dl.checksums")).to_contain_text(hashlib.sha256(b"FORGED\n").hexdigest())  # actual
    expect(task.locator("dd.ok")).to_have_text("verified")  # the image had passed; the input did not
    expect(page.locator("section.refusals")).to_contain_text("sha256 mismatch")


def test_a_viewer_and_an_auditor_see_less(browser_page: Any, console_log: Any, world: World) -> None:
    obj = world.steward.upload(TEXT, name="v.txt", dataset_id=world.dataset_id)
    params = {"text": {"class": "File", "location": world.drs_uri(obj["id"])}}
    slow = _slow_workflow(world.image.pinned_ref, 60)
    older = [world.analyst.submit_run("wf.cwl", params, attachments=slow) for _ in range(2)]  # for paging
    run_id = world.analyst.submit_run("wf.cwl", params, attachments=slow)
    base = world.server.url
    page = ui_login(browser_page, make_ui_user(world.server, "vera", "viewer"))
    actions = page.locator("ul.actions a").all_inner_texts()
    assert actions[0] == "Runs" and "Submit a workflow" not in actions and "Audit trail" not in actions, actions
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Submit a workflow")).to_have_count(0)
    page.goto(f"{base}/ui/runs/")
    expect(page.locator(".empty")).to_have_text("No runs match.")  # only their own runs: none
    console_log.allow_status(404)
    page.goto(f"{base}/ui/runs/{run_id}")  # another user's run is as absent as a missing one
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    assert obj["id"] not in page.content() and "wf.cwl" not in page.content()
    console_log.allow_status(404)  # an id that is not one never reaches an API request
    response = page.goto(f"{base}/ui/runs/{run_id}%3Fpage_size=1")
    assert response is not None and response.status == 404
    console_log.allow_status(403)
    page.goto(f"{base}/ui/runs/new")
    expect(page.get_by_role("alert")).to_contain_text("submitting runs needs the analyst role")
    # an auditor may read every run, but not cancel it: no cancel button
    page.context.clear_cookies()
    page = ui_login(page, make_ui_user(world.server, "audrey", "auditor"))
    page.goto(f"{base}/ui/runs/{run_id}")
    expect(page.locator("#run-state")).not_to_have_text("COMPLETE")
    expect(page.get_by_role("link", name="Cancel this run…")).to_have_count(0)
    for rid in (run_id, *older):
        world.analyst.cancel_run(rid)
    # the auditor pages through every run (WES page tokens), two at a time
    page.goto(f"{base}/ui/runs/?page_size=2")
    first = page.locator("table.runs tbody td:first-child").all_inner_texts()
    assert len(first) == 2 and run_id in first, first  # newest first
    page.get_by_role("link", name="Next page").click()
    second = page.locator("table.runs tbody td:first-child").all_inner_texts()
    assert second and not set(first) & set(second), (first, second)
    page.get_by_role("link", name="First page").click()
    assert page.locator("table.runs tbody td:first-child").all_inner_texts() == first


def test_analyst_submits_a_wdl_version_checked_by_miniwdl_first(
    browser_page: Any, console_log: Any, world: World
) -> None:
    ref = f"{world.image.repository}:{world.image.tag}"
    world.dev.publish_version(
        world.tool_id, "3.0.0", workflow_files(ref, "wdl"), [ref], primary="workflow.wdl", descriptor_type="WDL"
    )
    obj = world.steward.upload(TEXT, name="wdl-fruit.txt", dataset_id=world.dataset_id)
    uri = world.drs_uri(obj["id"])
    base = world.server.url
    page = ui_login(browser_page, make_ui_user(world.server, "ann", "analyst"))
    page.goto(f"{base}/ui/runs/new")
    # the picker offers the WDL version with its language; the form is built from its WDL inputs
    pick = page.locator("#pick")
    expect(pick.locator("option", has_text="3.0.0 (WDL 1.0)")).to_have_count(1)
    pick.select_option(f"{world.tool_id}:3.0.0:WDL")
    page.get_by_role("button", name="Choose").click()
    expect(page.get_by_role("heading", level=2)).to_contain_text("(WDL 1.0)")
    expect(page.locator("label[for='in-1']")).to_contain_text("text (File)")
    picker = page.locator("select[name='in.text']")
    expect(picker.locator("option", has_text="wdl-fruit.txt")).to_have_count(1)
    assert_accessible(page)
    # a host path is refused on the form by check_inputs; nothing reaches WES
    runs_before = world.analyst.api.get_json("/ga4gh/wes/v1/runs", params={"page_size": 100})["runs"]
    page.locator("input[name='uri.text']").fill("/etc/passwd")
    console_log.allow_status(400)
    with page.expect_response(lambda r: r.url.endswith("/ui/runs/new") and r.request.method == "POST") as sent:
        page.get_by_role("button", name="Submit the run").click()
    assert sent.value.status == 400
    expect(page.get_by_role("alert").filter(has_text="must be a drs:// object")).to_contain_text(
        "host paths are never read"
    )
    assert world.analyst.api.get_json("/ga4gh/wes/v1/runs", params={"page_size": 100})["runs"] == runs_before
    # the DRS object picked from the dataset: submitted as WDL, followed to COMPLETE
    page.locator("input[name='uri.text']").fill("")
    picker.select_option(uri)
    page.get_by_role("button", name="Submit the run").click()
    page.wait_for_url(re.compile(re.escape(base) + r"/ui/runs/[0-9a-f-]+$"))
    run_id = page.url.rsplit("/", 1)[1]
    request = world.analyst.run_log(run_id)["request"]
    assert (request["workflow_type"], request["workflow_type_version"]) == ("WDL", "1.0")
    assert request["workflow_url"] == f"trs://{world.drs_host}/{world.tool_id}/3.0.0"
    assert request["workflow_params"] in ({"textkit.text": uri}, f'{{"textkit.text": "{uri}"}}')
    expect(page.locator("#run-state")).to_have_text("COMPLETE", timeout=240_000)
    expect(page.locator("li.task")).to_have_count(3)
    link = page.locator("table.outputs tr", has_text="sorted_lines").get_by_role("link")
    with page.expect_download() as info:
        link.click()
    assert Path(info.value.path()).read_bytes() == SORTED
