"""Accessibility checks a browser test can run on any page."""

from __future__ import annotations

from typing import Any

_UNNAMED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, a[href]'))
  .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                  || ((el.tagName === 'BUTTON' || el.tagName === 'A') && el.textContent.trim())))
  .map(el => el.outerHTML.slice(0, 200))"""


def assert_labelled(page: Any) -> None:
    """Every form control has a label (or aria-label) and every button and link has a name."""
    unnamed = page.evaluate(_UNNAMED)
    assert unnamed == [], f"{page.url}: controls without an accessible name: {unnamed}"


def tab_to(page: Any, selector: str, limit: int = 60) -> None:
    """Press Tab until the element matching ``selector`` has the focus (it must be reachable by keyboard)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable with Tab on {page.url}")
