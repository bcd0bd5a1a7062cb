"""The data stewards' pages in headless Chromium against a live server: create a dataset,
upload a file (hashed in the browser, streamed with progress, checked end to end), see its
checksum and provenance, grant and revoke with a confirmation step, a corrupted upload refused
with nothing stored, and what viewers see (only what they may read, no management)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from helixgate.client import ClientError
from helixgate.sdk import HelixGate
from tests.browser.a11y import assert_accessible, tab_to
from tests.browser.conftest import ConsoleLog, assert_security_headers
from tests.browser.page_shots import shot
from tests.browser.refusals import forgive, goto_refused
from tests.fixtures.live import LiveServer
from tests.fixtures.ui import ui_login, ui_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _hg(server: LiveServer, username: str, *roles: str) -> HelixGate:
    return HelixGate.connect(server.url, server.user(username, *roles))


def test_steward_uploads_with_progress_and_grants_and_revokes_after_confirming(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, tmp_path: Path
) -> None:
    steward = ui_user("steward", "data-steward")
    ui_user("alice", "analyst")
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "sample 1.vcf").write_bytes(data)

    page = ui_login(browser_page, steward)
    response = page.goto(f"{ui_server.url}/ui/data/")
    assert response is not None
    assert_security_headers(response.headers)
    assert_accessible(page)
    page.get_by_label("Name").fill("cohort-browser")
    page.get_by_role("button", name="Create dataset").click()
    expect(page.locator("h1")).to_have_text("Dataset cohort-browser")
    dataset_id = page.url.rsplit("/", 1)[-1]

    page.get_by_role("link", name="Upload a file to this dataset").click()
    expect(page.get_by_label("Dataset")).to_have_value(dataset_id)
    assert_accessible(page)
    page.get_by_label("File", exact=True).set_input_files(str(tmp_path / "sample 1.vcf"))
    # record what the progress bar shows while the browser streams the file (kept across the navigation)
    page.evaluate(
        """() => { const bar = document.getElementById('upload-progress'); const seen = [];
        new MutationObserver(() => { seen.push(bar.textContent); sessionStorage.setItem('seen', seen.join(' ')); })
          .observe(bar, {childList: true, characterData: true, subtree: true}); }"""
    )
    with page.expect_request(re.compile(r".*/ui/data/upload/stream\?.*")) as sent:
        page.get_by_role("button", name="Upload").click()
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query["sha256"] == [digest]  # the browser hashed the file and sent it as the expected checksum
    assert query["dataset_id"] == [dataset_id] and query["filename"] == ["sample 1.vcf"]
    page.wait_for_url(re.compile(r".*/ui/data/objects/[0-9a-f]{32}$"))
    facts = page.locator("#object-facts")
    expect(facts).to_contain_text(digest)
    expect(facts).to_contain_text(f"({len(data)} bytes)")
    shot(page, "data-object")
    with page.expect_download() as fetched:
        page.get_by_role("link", name="Download").click()
    assert Path(fetched.value.path()).read_bytes() == data  # streamed through the dashboard, checked on the way
    assert fetched.value.suggested_filename == "sample_1.vcf"
    expect(page.locator("main")).to_contain_text("Uploaded or registered by a user")
    object_id = page.url.rsplit("/", 1)[-1]
    shown = str(page.evaluate("() => sessionStorage.getItem('seen')")).split()
    assert shown[-1] == "100%" and len(shown) >= 2, shown  # progress went from 0% up to 100%

    # where did these bytes go? found by their SHA-256
    page.goto(f"{ui_server.url}/ui/data/")
    page.get_by_label("Find objects by SHA-256").fill(digest)
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#found")).to_contain_text("sample_1.vcf")
    expect(page.locator("#found")).to_contain_text(object_id)

    page.goto(f"{ui_server.url}/ui/data/datasets/{dataset_id}")
    expect(page.locator("#objects")).to_contain_text("sample_1.vcf")
    expect(page.locator("#objects")).to_contain_text(digest)

    # grant: a first step that says what will happen, then the grant itself
    page.get_by_label("Grant read access to user").fill("alice")
    page.get_by_role("button", name="Grant…").click()
    expect(page.locator("#confirm-question")).to_contain_text("alice will be able to read every object")
    alice = _hg(ui_server, "alice", "analyst")
    with pytest.raises(ClientError):
        alice.get_object(object_id)  # nothing happened before the confirmation
    page.get_by_role("button", name="Grant", exact=True).click()
    expect(page.locator("#grants")).to_contain_text("alice")
    shot(page, "data-dataset")
    assert_accessible(page)
    assert alice.get_object(object_id)["id"] == object_id

    # revoking works from the keyboard alone
    tab_to(page, "button[aria-label=\"Revoke alice's access\"]")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-question")).to_contain_text("alice will lose read access")
    shot(page, "data-revoke-confirm")
    tab_to(page, "#confirm-button")
    page.keyboard.press("Enter")
    expect(page.locator("#grants")).to_contain_text("by steward at")
    with pytest.raises(ClientError) as info:
        alice.get_object(object_id)
    assert info.value.status == 403


def test_upload_whose_bytes_differ_from_the_expected_checksum_stores_nothing(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, console_log: ConsoleLog, tmp_path: Path
) -> None:
    data = b"chr1\t12345\tA\tG\n" * 1000
    actual = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(b"what the steward expected").hexdigest()
    (tmp_path / "calls.vcf").write_bytes(data)
    page = ui_login(browser_page, ui_user("steward2", "data-steward"))
    page.goto(f"{ui_server.url}/ui/data/upload")
    page.get_by_label("File", exact=True).set_input_files(str(tmp_path / "calls.vcf"))
    page.get_by_label("Expected SHA-256").fill(wrong)
    page.get_by_role("button", name="Upload").click()
    error = page.locator("#upload-result [role=alert]")
    expect(error).to_contain_text(wrong)
    expect(error).to_contain_text(actual)
    forgive(console_log, 422)  # the data store's refusal, relayed with its status
    assert page.url.endswith("/ui/data/upload")
    assert _hg(ui_server, "steward2", "data-steward").find_objects(actual) == []
    # and the refusal is a security event in the audit trail
    auditor = _hg(ui_server, "auditor", "auditor")
    params = {"category": "security", "action": "drs.upload.checksum_mismatch", "actor": "steward2"}
    events = auditor.api.get_object("/helixgate/v1/audit/events", params=params)["events"]
    assert [(e["details"]["expected"], e["details"]["actual"]) for e in events] == [(wrong, actual)]


def test_viewer_sees_only_granted_data_and_no_management(
    ui_server: LiveServer, ui_user: Any, browser_page: Any, console_log: ConsoleLog
) -> None:
    steward = _hg(ui_server, "owner-steward", "data-steward")
    shared = steward.create_dataset("shared-with-vic")
    hidden = steward.create_dataset("not-for-vic")
    obj = steward.upload(b"granted bytes", name="granted.txt", dataset_id=shared["id"])
    steward.upload(b"hidden bytes", name="hidden.txt", dataset_id=hidden["id"])
    ui_user("vic", "viewer")
    steward.grant(shared["id"], "vic")

    page = ui_login(browser_page, ui_user("vic", "viewer"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Data").click()
    table = page.locator("#datasets")
    expect(table).to_contain_text("shared-with-vic")
    expect(table).not_to_contain_text("not-for-vic")
    expect(page.get_by_role("button", name="Create dataset")).to_have_count(0)
    expect(page.get_by_role("link", name="Upload a file")).to_have_count(0)

    page.get_by_role("link", name="shared-with-vic").click()
    expect(page.locator("#objects")).to_contain_text("granted.txt")
    expect(page.locator("#objects")).to_contain_text(hashlib.sha256(b"granted bytes").hexdigest())
    expect(page.locator("#grants")).to_have_count(0)  # grants are the steward's business
    expect(page.get_by_role("link", name="Upload a file to this dataset")).to_have_count(0)
    page.get_by_role("link", name="granted.txt").click()
    expect(page.locator("#object-facts")).to_contain_text(str(obj["id"]))

    for path in (f"/ui/data/datasets/{hidden['id']}", "/ui/data/upload"):
        goto_refused(page, console_log, f"{ui_server.url}{path}", 403)
        expect(page.locator("#error-message")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("hidden.txt")
    page.goto(f"{ui_server.url}/ui/data/objects?checksum={hashlib.sha256(b'hidden bytes').hexdigest()}")
    expect(page.locator("#found")).to_contain_text("No object you may read has these bytes")
    goto_refused(page, console_log, f"{ui_server.url}/ui/data/objects?checksum=nothex", 400)
    expect(page.locator("#form-error")).to_contain_text("64 hexadecimal")


def test_upload_form_without_javascript_applies_the_same_checks(ui_server: LiveServer, ui_user: Any) -> None:
    steward = ui_user("steward3", "data-steward")
    s = ui_session(steward)
    base = ui_server.url
    form = s.get(f"{base}/ui/data/upload", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert form.status_code == 200 and token is not None
    data = b">seq\nACGT\n" * 500
    digest = hashlib.sha256(data).hexdigest()
    wrong = "0" * 64

    def post(fields: dict[str, str]) -> Any:
        return s.post(
            f"{base}/ui/data/upload", data=fields, files={"file": ("reads one.fa", data)},
            headers={"Origin": base}, allow_redirects=False, timeout=60,
        )  # fmt: skip

    refused = post({"csrf_token": token.group(1), "sha256": wrong})
    assert refused.status_code == 422 and wrong in refused.text and digest in refused.text
    assert post({"sha256": digest}).status_code == 400  # no CSRF token: refused before the view
    hg = _hg(ui_server, "steward3", "data-steward")
    assert hg.find_objects(digest) == []

    stored = post({"csrf_token": token.group(1), "sha256": digest})
    assert stored.status_code == 303, stored.text[:300]
    page = s.get(base + stored.headers["Location"], timeout=30)
    assert digest in page.text and "reads_one.fa" in page.text
    assert [o["name"] for o in hg.find_objects(digest)] == ["reads_one.fa"]
