"""Signing in to the web UI through the built-in issuer, in a real browser."""

from __future__ import annotations

from typing import Any

from tests.browser.a11y import assert_accessible
from tests.browser.conftest import assert_security_headers
from tests.fixtures.ui import ui_login


def test_login_lands_on_ui_with_session_cookie_only(browser_page: Any, ui_user: Any) -> None:
    alice = ui_user("alice", "analyst")
    page = ui_login(browser_page, alice)
    assert page.url == alice.server.url + "/ui/"
    assert page.locator("#signed-in-user").inner_text() == "alice"
    assert "analyst" in page.locator("#user-roles").inner_text()
    # the browser holds one opaque, HttpOnly cookie and nothing in storage
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["hg_session"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Lax"
    stored = page.evaluate(
        "() => [localStorage, sessionStorage].flatMap(s => Object.keys(s).map(k => [k, s.getItem(k)]))"
    )
    # htmx remembers the current path for its history handling; no page copies, no tokens
    assert [k for k, _ in stored] in ([], ["htmx-current-path-for-history"])
    assert not any("eyJ" in v or cookies[0]["value"] in v for _, v in stored)
    response = page.goto(alice.server.url + "/ui/")
    assert response is not None and response.status == 200
    assert_security_headers(response.headers)
    assert "access_token" not in page.content()


def test_wrong_password_stays_on_the_form(browser_page: Any, console_log: Any, ui_user: Any) -> None:
    bob = ui_user("bob", "viewer")
    console_log.allow_status(401)  # the form comes back with 401 Unauthorized
    page = browser_page
    page.goto(bob.server.url + "/ui/login")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.locator("#login-error").inner_text() == "Wrong username or password."
    assert_accessible(page)  # the issuer's login form, with its error shown
    assert "/oidc/authorize" in page.url
    # not signed in: the UI sends the browser back to the login form
    page.goto(bob.server.url + "/ui/")
    assert "/oidc/authorize" in page.url


def test_sign_out_ends_the_session(browser_page: Any, ui_user: Any) -> None:
    erin = ui_user("erin", "auditor")
    page = ui_login(browser_page, erin)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(erin.server.url + "/ui/signed-out")
    assert page.get_by_role("heading", level=1).inner_text() == "You are signed out"
    assert [c for c in page.context.cookies() if c["name"] == "hg_session"] == []
    page.goto(erin.server.url + "/ui/")
    assert "/oidc/authorize" in page.url


def test_keyboard_users_can_skip_to_the_content(browser_page: Any, ui_user: Any) -> None:
    frank = ui_user("frank", "viewer")
    page = ui_login(browser_page, frank)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    assert skip.evaluate("el => el === document.activeElement")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
