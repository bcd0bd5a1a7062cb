"""The browser harness itself: it must see what it promises to fail on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.a11y import assert_contrast
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


def test_the_contrast_check_fails_on_faint_text_and_passes_on_readable_text(browser_page: Any) -> None:
    page = browser_page
    page.set_content(
        "<!doctype html><title>t</title><body style='background:#fff'>"
        "<p style='color:#777'>grey on white, 4.48:1</p>"
        "<p style='color:#767676'>the lightest grey that passes, 4.54:1</p>"
        "<h1 style='font-size:24px;color:#949494'>large text needs 3:1</h1>"
        "<div style='background:rgba(0,0,0,0.5)'><p style='color:#595959'>translucent layer</p></div></body>"
    )
    with pytest.raises(AssertionError) as failed:
        assert_contrast(page)
    message = str(failed.value)
    assert "grey on white" in message and "translucent layer" in message
    assert "lightest grey" not in message and "large text" not in message
    page.set_content("<!doctype html><title>t</title><p style='color:#222;background:#fff'>readable</p>")
    assert_contrast(page)
