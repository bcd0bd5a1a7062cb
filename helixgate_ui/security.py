"""Response headers of every UI page: a strict Content-Security-Policy (no inline script or
style anywhere: htmx and ui.css are files under /ui/static/), no sniffing, no framing, no
caching of pages that show a user's data, and ``Referrer-Policy: same-origin``: no referrer
ever leaves the origin, while same-origin form posts and htmx requests keep their ``Origin``
header (under ``no-referrer`` browsers send ``Origin: null`` on every POST, which would
defeat the Origin check)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response


def content_security_policy(issuer_url: str | None = None) -> str:
    """The UI's CSP. ``form-action`` also allows the identity provider's origin (the login
    redirect follows a form post on logout/login pages)."""
    form_action = "'self'"
    if issuer_url:
        parts = urlsplit(issuer_url)
        form_action += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
        f"form-action {form_action}"
    )


def apply_headers(resp: Response, issuer_url: str | None = None) -> Response:
    resp.headers["Content-Security-Policy"] = content_security_policy(issuer_url)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if resp.mimetype != "text/css" and resp.mimetype != "application/javascript":
        resp.headers["Cache-Control"] = "no-store"
    return resp
