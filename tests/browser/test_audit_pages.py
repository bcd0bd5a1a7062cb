"""The auditors' pages in headless Chromium against a live server: the trail with filters,
security events highlighted, the chain's verification status (htmx), the CEF export as a
download; and no audit trail for anyone else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.a11y import assert_accessible
from tests.browser.conftest import ConsoleLog, assert_security_headers
from tests.browser.page_shots import shot
from tests.browser.refusals import goto_refused
from tests.fixtures.live import LiveServer
from tests.fixtures.ui import ui_login

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _denied_request(server: LiveServer, username: str) -> None:
    """A viewer asking for the audit trail over the API: refused and recorded as a security event."""
    token = server.user(username, "viewer")
    r = requests.get(f"{server.url}/helixgate/v1/audit/events", headers=server.headers(token), timeout=30)
    assert r.status_code == 403


def test_auditor_filters_the_trail_sees_security_events_verifies_and_exports(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, console_log: ConsoleLog, tmp_path: Path
) -> None:
    _denied_request(ui_server, "mallory")
    page = ui_login(browser_page, ui_user("audrey", "auditor"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.locator("h1")).to_have_text("Audit trail")
    expect(page.locator("#chain-result")).to_contain_text("Chain intact")  # loaded by htmx
    rows = page.locator("#events tbody tr")
    expect(rows.first).to_be_visible()

    page.get_by_label("Category").select_option("security")
    page.get_by_label("Actor").fill("mallory")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events")).to_contain_text("auth.denied")
    count = rows.count()
    assert count >= 1
    for i in range(count):
        row = rows.nth(i)
        expect(row).to_have_class("security-event security")
        expect(row).to_contain_text("mallory")
    assert "category=security" in page.url and "actor=mallory" in page.url
    shot(page, "audit-security-events")
    assert_accessible(page)

    # an actor in a row narrows the trail to that actor's records
    page.get_by_label("Actor").fill("")
    page.get_by_role("button", name="Filter").click()
    page.locator("#events tbody tr", has_text="auth.denied").get_by_role("link", name="mallory").first.click()
    assert "actor=mallory" in page.url and "category=security" in page.url
    expect(page.get_by_label("Actor")).to_have_value("mallory")

    # requests and successes are not highlighted
    page.get_by_label("Category").select_option("request")
    page.get_by_label("Outcome").select_option("success")
    page.get_by_label("Actor").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events tbody tr.security-event")).to_have_count(0)
    expect(rows.first).to_contain_text("success")

    # paging: the next page holds older records, with the same filters
    token = ui_server.user("mallory", "viewer")
    for _ in range(30):  # enough request records for two pages
        requests.get(f"{ui_server.url}/helixgate/v1/me", headers=ui_server.headers(token), timeout=30)
    page.get_by_label("Outcome").select_option("")
    page.get_by_label("Per page").select_option("25")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(25)
    first_page = [int(rows.nth(i).locator("td").first.inner_text()) for i in range(25)]
    assert first_page == sorted(first_page, reverse=True)
    page.get_by_role("link", name="Older records").click()
    assert "page_token=" in page.url and "category=request" in page.url and "page_size=25" in page.url
    expect(rows.first).to_be_visible()
    second_page = [int(rows.nth(i).locator("td").first.inner_text()) for i in range(rows.count())]
    assert max(second_page) < min(first_page)
    expect(page.locator("#events tbody .badge")).to_have_count(0)  # still no security event: the filter applies

    # a bad filter is explained, not a 500
    goto_refused(page, console_log, f"{ui_server.url}/ui/audit/?since=yesterday", 400)
    expect(page.locator("#form-error")).to_contain_text("since")

    response = page.goto(f"{ui_server.url}/ui/audit/")
    assert response is not None
    assert_security_headers(response.headers)
    with page.expect_download() as info:
        page.get_by_role("link", name="Export security events (CEF)").click()
    download = info.value
    assert download.suggested_filename == "helixgate-security-events.cef"
    text = Path(download.path()).read_text()
    assert text.startswith("CEF:0|") and "auth.denied" in text and "mallory" in text


def test_only_auditors_see_the_audit_trail(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, console_log: ConsoleLog
) -> None:
    page = ui_login(browser_page, ui_user("stella", "data-steward"))
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit")).to_have_count(0)
    for path in ("/ui/audit/", "/ui/audit/verify", "/ui/audit/cef"):
        goto_refused(page, console_log, f"{ui_server.url}{path}", 403)
        expect(page.locator("#error-message")).to_contain_text("auditors")
        expect(page.locator("main")).not_to_contain_text("auth.")
