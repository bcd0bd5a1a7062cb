"""The browser harness itself: it must see what it promises to fail on."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import ConsoleLog

_PAGE = "<!doctype html><title>t</title><p style='color:red'>x</p><script>console.log('inline ran')</script>"


def test_a_csp_violation_is_a_console_error_the_harness_catches(browser_page: Any, console_log: ConsoleLog) -> None:
    page = browser_page
    csp = "default-src 'self'; script-src 'self'; style-src 'self'"
    page.route(
        "http://harness.invalid/",
        lambda route: route.fulfill(
            status=200, body=_PAGE, headers={"Content-Type": "text/html", "Content-Security-Policy": csp}
        ),
    )
    page.goto("http://harness.invalid/")
    page.wait_for_load_state("load")
    caught = list(console_log.errors)
    console_log.errors.clear()  # seen: the fixture's own check at teardown stays green
    assert any("Content Security Policy" in e and "script" in e for e in caught), caught
    assert any("Content Security Policy" in e and "style" in e for e in caught), caught
