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
