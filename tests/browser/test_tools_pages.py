"""The tool developers' pages in headless Chromium against a live server: create a tool and
publish a version through the browser (checked as the CLI checks it), the version page's
pins, checksums, signer and verification re-done by the dashboard, the image drift check
(htmx), a tampered version shown as failed with its reason, and what viewers and other
developers do not see."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect
from sqlalchemy.orm import Session

from helixgate.sdk import HelixGate
from helixgate_app.demo_assets import workflow_files
from tests.browser.a11y import assert_accessible
from tests.browser.conftest import ConsoleLog, assert_security_headers
from tests.browser.page_shots import shot
from tests.browser.refusals import forgive, goto_refused
from tests.fixtures.docker_images import PushedImage
from tests.fixtures.live import LiveServer
from tests.fixtures.ui import make_ui_user, ui_login
from trs_registry.models import ToolVersionRow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECONDARY = ("upper.cwl", "sort.cwl", "count.cwl")


@dataclass(frozen=True)
class Published:
    tool_id: str
    files: dict[str, str]
    image: PushedImage


@pytest.fixture(scope="module")
def published(ui_server: LiveServer, pushed_busybox: PushedImage, test_session_id: str) -> Published:
    """A tool owned by ``owner`` with a signed version 1.0.0 (published through the API)."""
    make_ui_user(ui_server, "owner", "tool-developer")
    hg = HelixGate.connect(ui_server.url, ui_server.user("owner", "tool-developer"))
    tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    files = workflow_files(tag_ref)
    tool = hg.create_tool("helixgate-test", f"listed-{test_session_id}")
    hg.publish_version(tool["id"], "1.0.0", files, [tag_ref], primary="workflow.cwl")
    return Published(str(tool["id"]), files, pushed_busybox)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_developer_creates_a_tool_publishes_a_version_and_sees_it_verified(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, console_log: ConsoleLog, pushed_busybox: PushedImage,
    tmp_path: Path, test_session_id: str,
) -> None:  # fmt: skip
    dev = ui_user("dev", "tool-developer")
    page = ui_login(browser_page, dev)
    tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    files = workflow_files(tag_ref)
    for name, content in files.items():
        (tmp_path / name).write_text(content)

    page.goto(f"{ui_server.url}/ui/tools/")
    page.get_by_role("link", name="Create a tool").click()
    assert_accessible(page)
    page.get_by_label("Organization", exact=True).fill("helixgate-test")
    page.get_by_label("Name", exact=True).fill(f"browser-{test_session_id}")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("h1")).to_have_text(f"browser-{test_session_id}")
    expect(page.locator("main")).to_contain_text("dev")  # the owner

    page.get_by_role("link", name="Publish a version").click()
    assert_accessible(page)
    page.get_by_label("Version", exact=True).fill("1.0.0")
    page.get_by_label("Images").fill(tag_ref)
    page.get_by_label("Primary descriptor").set_input_files(str(tmp_path / "workflow.cwl"))
    page.get_by_label("Other descriptor files").set_input_files([str(tmp_path / n) for n in SECONDARY])
    page.get_by_role("button", name="Publish").click()
    page.wait_for_url(re.compile(r".*/versions/1\.0\.0$"))

    expect(page.locator("#verification")).to_contain_text("Verified")
    expect(page.locator("#verification")).to_contain_text("4 file checksum(s) verified")
    expect(page.locator("#verification")).to_contain_text(pushed_busybox.digest)
    for name, content in files.items():
        expect(page.locator("#files")).to_contain_text(_sha(content))
    images = page.locator("#images")
    expect(images).to_contain_text(pushed_busybox.pinned_ref)
    expect(images).to_contain_text(pushed_busybox.image_id)
    expect(page.locator("main")).to_contain_text("registry key")

    # the drift check is an htmx request answered with a fragment
    page.get_by_role("link", name="Check the images for drift").click()
    expect(page.locator("#image-drift")).to_contain_text("current")
    assert page.url.endswith("/versions/1.0.0")  # swapped in place, no navigation
    shot(page, "tools-version")
    assert_accessible(page)

    # a version id can be published once: the registry's refusal is shown above the form
    page.goto(page.url.rsplit("/versions/", 1)[0] + "/publish")
    page.get_by_label("Version", exact=True).fill("1.0.0")
    page.get_by_label("Images").fill(tag_ref)
    page.get_by_label("Primary descriptor").set_input_files(str(tmp_path / "workflow.cwl"))
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#form-error")).to_contain_text("1.0.0")
    forgive(console_log, 409)  # the registry's answer, shown with its status

    response = page.goto(f"{ui_server.url}/ui/tools/")
    assert response is not None
    assert_security_headers(response.headers)
    expect(page.locator("#tools")).to_contain_text(f"browser-{test_session_id}")
    shot(page, "tools-list")
    page.get_by_label("Tool name").fill(f"browser-{test_session_id}")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#tools tbody tr")).to_have_count(1)
    page.get_by_label("Tool name").fill("no-such-tool")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#tools")).to_contain_text("No tools match this name")

    # the keys versions are verified against: the version's signer is the active one
    page.get_by_role("link", name="Registry signing trust").click()
    signer = HelixGate.connect(ui_server.url, ui_server.user("dev", "tool-developer")).trust_material()["activeKeyId"]
    expect(page.locator("#signing-keys")).to_contain_text(signer)
    expect(page.locator("#signing-keys tr", has_text=signer)).to_contain_text("active")


def test_tampered_version_is_shown_failed_with_its_reason(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, published: Published, pushed_busybox: PushedImage
) -> None:
    hg = HelixGate.connect(ui_server.url, ui_server.user("owner", "tool-developer"))
    tag_ref = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    hg.publish_version(published.tool_id, "2.0.0", published.files, [tag_ref], primary="workflow.cwl")
    # someone with write access to the registry's tables swaps a descriptor and its checksum
    evil = published.files["sort.cwl"].replace("sort", "rm -rf /data #")
    engine = sa.create_engine(f"sqlite:///{ui_server.data_dir / 'helixgate.db'}")
    with Session(engine) as s:
        row = s.scalars(
            sa.select(ToolVersionRow).where(
                ToolVersionRow.tool_id == published.tool_id, ToolVersionRow.version_id == "2.0.0"
            )
        ).one()
        f = next(f for f in row.files if f.path == "sort.cwl")
        f.content, f.sha256, f.size = evil.encode(), _sha(evil), len(evil)
        s.commit()
    engine.dispose()

    page = ui_login(browser_page, ui_user("val", "viewer"))
    page.goto(f"{ui_server.url}/ui/tools/{published.tool_id}/versions/2.0.0")
    box = page.locator("#verification")
    expect(box).to_contain_text("Verification FAILED")
    expect(box).to_contain_text("sort.cwl (signed checksum)")
    expect(box).to_contain_text(_sha(published.files["sort.cwl"]))  # expected: what was signed
    expect(box).to_contain_text(_sha(evil))  # actual: what is served now
    shot(page, "tools-version-tampered")
    # the untouched version still verifies
    page.goto(f"{ui_server.url}/ui/tools/{published.tool_id}/versions/1.0.0")
    expect(page.locator("#verification")).to_contain_text("Verified")


def test_viewers_and_other_developers_see_no_publishing(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, console_log: ConsoleLog, published: Published
) -> None:
    page = ui_login(browser_page, ui_user("vera", "viewer"))
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Tools")).to_be_visible()
    expect(nav.get_by_role("link", name="Audit")).to_have_count(0)

    page.goto(f"{ui_server.url}/ui/tools/")
    expect(page.locator("#tools")).to_contain_text(published.tool_id)
    expect(page.get_by_role("link", name="Create a tool")).to_have_count(0)
    page.goto(f"{ui_server.url}/ui/tools/{published.tool_id}")
    expect(page.locator("#versions")).to_contain_text("1.0.0")
    expect(page.get_by_role("link", name="Publish a version")).to_have_count(0)
    for path in ("/ui/tools/_new", f"/ui/tools/{published.tool_id}/publish"):
        goto_refused(page, console_log, f"{ui_server.url}{path}", 403)
        expect(page.locator("#error-message")).to_be_visible()

    # another tool developer may create tools but not publish someone else's
    page.context.clear_cookies()
    page = ui_login(page, ui_user("dana", "tool-developer"))
    page.goto(f"{ui_server.url}/ui/tools/{published.tool_id}")
    expect(page.get_by_role("link", name="Publish a version")).to_have_count(0)
    goto_refused(page, console_log, f"{ui_server.url}/ui/tools/{published.tool_id}/publish", 403)
    expect(page.locator("#error-message")).to_contain_text("owner")
