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


# WCAG 2.1 success criterion 1.4.3: text needs a contrast ratio of 4.5:1 against what is
# behind it (3:1 for large text: 24px, or 18.66px bold). Backgrounds are composed from the
# element's ancestors (translucent layers blended over white); disabled controls are exempt.
_LOW_CONTRAST = """() => {
  const parse = c => { const m = /rgba?\\(([^)]+)\\)/.exec(c); if (!m) return null;
    const p = m[1].split(',').map(parseFloat); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const blend = (top, under) => ({r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a), b: top.b * top.a + under.b * (1 - top.a), a: 1});
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const behind = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; } }
    let base = {r: 255, g: 255, b: 255, a: 1};
    for (let i = layers.length - 1; i >= 0; i--) base = blend(layers[i], base);
    return base; };
  const low = [], seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !el || seen.has(el)) continue;
    seen.add(el);
    if (el.closest(':disabled') || el.closest('svg')) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.display === 'none' || el.getClientRects().length === 0) continue;
    const bg = behind(el), fg = blend(parse(cs.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05), size = parseFloat(cs.fontSize);
    const large = size >= 24 || (parseInt(cs.fontWeight, 10) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5))
      low.push(`${ratio.toFixed(2)}:1 ${cs.color} on rgb(${Math.round(bg.r)},${Math.round(bg.g)},${Math.round(bg.b)}): `
               + el.outerHTML.slice(0, 120));
  }
  return low; }"""


def assert_contrast(page: Any) -> None:
    """Every visible text meets WCAG's minimum contrast against its background."""
    low = page.evaluate(_LOW_CONTRAST)
    assert low == [], f"{page.url}: text below WCAG AA contrast: {low}"


def assert_accessible(page: Any) -> None:
    """Named controls and readable text: what every page of the dashboard must meet."""
    assert_labelled(page)
    assert_contrast(page)
