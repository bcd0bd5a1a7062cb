"""Browser harness: Playwright for Python driving Debian's Chromium, headless.

``scripts/install.sh`` installs the ``chromium`` Debian package and the ``playwright`` Python
package (no browser download: Playwright launches /usr/bin/chromium). Every test that uses
``browser_page`` fails if the page logged a console error or threw (CSP violations are
console errors), so pages must work under the strict CSP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("HELIXGATE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module (module scope: Playwright's event loop is gone before other
    modules' asyncio tests run)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run scripts/install.sh (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


class ConsoleLog:
    """Console errors and uncaught page errors seen by a page.

    Chromium logs "Failed to load resource: ... status of 403" for every 4xx/5xx answer, the
    pages that show a refusal included: a test that expects one says so with
    ``console_log.allow_status(403)`` (each call allows one such message)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._allowed: list[int] = []

    def allow_status(self, status: int) -> None:
        self._allowed.append(status)

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        for status in self._allowed:
            if msg.text.startswith("Failed to load resource") and f"status of {status} " in msg.text:
                self._allowed.remove(status)
                return
        self.errors.append(f"console: {msg.text}")

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))


@pytest.fixture()
def console_log() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture()
def browser_page(browser: Any, console_log: ConsoleLog) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; asserts no console error at the end."""
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(30_000)
    console_log.attach(page)
    yield page
    context.close()
    assert console_log.errors == [], "the page logged errors:\n" + "\n".join(console_log.errors)


EXPECTED_CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}


def assert_security_headers(headers: dict[str, str]) -> None:
    """The UI's strict CSP and companions (header names lower-case, as Playwright gives them)."""
    csp = headers.get("content-security-policy", "")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    for name, value in EXPECTED_CSP.items():
        assert directives.get(name) == value, f"CSP {name}: {directives.get(name)!r} in {csp!r}"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "same-origin"
