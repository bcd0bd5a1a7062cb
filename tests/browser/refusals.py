"""Refusals a browser test provokes on purpose.

Chromium logs every response with a 4xx status (a page, or an XMLHttpRequest) as a console
error ("Failed to load resource"), and the harness fails a test on any console error. A
refusal the test provokes and asserts is not an error of the page: these helpers forgive
exactly one such message each."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import ConsoleLog


def forgive(console_log: ConsoleLog, status: int, since: int = 0) -> None:
    """Drop the one "status of ``status``" message logged after index ``since``; it must be there."""
    expected = f"console: Failed to load resource: the server responded with a status of {status}"
    for i in range(since, len(console_log.errors)):
        if console_log.errors[i].startswith(expected):
            del console_log.errors[i]
            return
    raise AssertionError(f"no refusal with status {status} was logged: {console_log.errors[since:]}")


def goto_refused(page: Any, console_log: ConsoleLog, url: str, status: int) -> Any:
    """Open ``url``, assert it answers ``status`` (a rendered page) and forgive its console message."""
    before = len(console_log.errors)
    response = page.goto(url)
    assert response is not None and response.status == status, (url, response and response.status)
    forgive(console_log, status, before)
    return response
