"""Backend-for-frontend sessions: login through OIDC (authorization code + PKCE S256),
the session store, CSRF, and authenticated API clients for the current user.

The browser holds one opaque cookie, ``<id>.<secret>`` (``__Host-hg_session`` over https;
HttpOnly, SameSite=Lax, Secure over https). The server keeps one ``core_ui_sessions`` row per
session, keyed by SHA-256 of ``<id>``; its ``sealed`` column is AES-GCM ciphertext of the
session's data (tokens, PKCE verifier, flash messages) under a key derived (HKDF) from
``<secret>``, which is stored nowhere: the database alone cannot replay a user's tokens.
Tokens never reach the browser, a URL or browser storage.

CSRF: a synchronizer token per session (HMAC of the cookie secret) is required on every
state-changing request, as the form field ``csrf_token`` or the ``X-CSRF-Token`` header
(htmx sends it from ``hx-headers`` on ``<body>``), and a cross-origin ``Origin`` is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, TypeVar, cast
from urllib.parse import urlencode, urlsplit

import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from sqlalchemy import delete

from helixgate import rbac
from helixgate.client import ApiClient, ClientError
from helixgate.login import UiSessionRow
from helixgate.platform import Platform

log = logging.getLogger("helixgate.ui")

F = TypeVar("F", bound=Callable[..., Any])

PENDING_TTL = 600  # seconds a login may take at the provider
_REFRESH_MARGIN = 30  # refresh an access token this long before it expires
_CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

bp = Blueprint("auth", __name__)


# ------------------------------------------------------------------ plumbing
def platform() -> Platform:
    get_platform: Callable[[], Platform] = current_app.config["HELIXGATE_PLATFORM"]
    return get_platform()


def public_url() -> str:
    return platform().settings.effective_public_url


def cookie_name() -> str:
    return "__Host-hg_session" if public_url().startswith("https://") else "hg_session"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _key(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"helixgate-ui/" + purpose).derive(
        secret.encode("ascii")
    )


# ------------------------------------------------------------------ the session
@dataclass
class UiSession:
    """One browser session. ``data`` is what ``sealed`` holds once decrypted."""

    sid: str
    secret: str
    username: str | None
    expires_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False

    @property
    def key(self) -> str:
        return _sha256(self.sid)

    @property
    def csrf_token(self) -> str:
        return _b64(hmac.new(_key(self.secret, b"csrf"), b"csrf", hashlib.sha256).digest())

    @property
    def cookie_value(self) -> str:
        return f"{self.sid}.{self.secret}"

    def seal(self) -> str:
        nonce = secrets.token_bytes(12)
        plain = json.dumps(self.data, separators=(",", ":")).encode("utf-8")
        return _b64(nonce + AESGCM(_key(self.secret, b"seal")).encrypt(nonce, plain, self.key.encode("ascii")))


class SessionStore:
    """``core_ui_sessions`` through the platform's database."""

    def __init__(self, platform: Platform) -> None:
        self.db = platform.db

    def create(self, *, username: str | None, ttl: int, data: dict[str, Any]) -> UiSession:
        session = UiSession(
            sid=secrets.token_urlsafe(24),
            secret=secrets.token_urlsafe(32),
            username=username,
            expires_at=_utcnow() + timedelta(seconds=ttl),
            data=data,
        )
        with self.db.session() as s:
            s.execute(delete(UiSessionRow).where(UiSessionRow.expires_at < _utcnow()))  # housekeeping
            s.add(
                UiSessionRow(
                    id_sha256=session.key,
                    username=username,
                    created_at=_utcnow(),
                    expires_at=session.expires_at,
                    access_expires_at=_access_exp(data),
                    sealed=session.seal(),
                )
            )
        return session

    def load(self, cookie: str | None) -> UiSession | None:
        if not cookie or len(cookie) > 200 or "." not in cookie:
            return None
        sid, _, secret = cookie.partition(".")
        with self.db.session() as s:
            row = s.get(UiSessionRow, _sha256(sid))
            if row is None:
                return None
            username, expires_at, sealed = row.username, row.expires_at, row.sealed
        if expires_at <= _utcnow():
            self.delete(sid)
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            plain = AESGCM(_key(secret, b"seal")).decrypt(raw[:12], raw[12:], _sha256(sid).encode("ascii"))
            data = json.loads(plain)
        except (InvalidTag, ValueError, UnicodeError):
            return None  # a wrong secret: not this session's holder
        return UiSession(sid, secret, username, expires_at, data if isinstance(data, dict) else {})

    def save(self, session: UiSession) -> None:
        with self.db.session() as s:
            row = s.get(UiSessionRow, session.key)
            if row is not None:
                row.sealed = session.seal()
                row.username = session.username
                row.access_expires_at = _access_exp(session.data)
        session.dirty = False

    def delete(self, sid: str) -> None:
        with self.db.session() as s:
            s.execute(delete(UiSessionRow).where(UiSessionRow.id_sha256 == _sha256(sid)))


def _access_exp(data: dict[str, Any]) -> datetime | None:
    exp = data.get("access_exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, (int, float)) else None


def store() -> SessionStore:
    return SessionStore(platform())


def current_session() -> UiSession | None:
    """The request's session (loaded once per request), or None."""
    if "hg_ui_session" not in g:
        g.hg_ui_session = store().load(request.cookies.get(cookie_name()))
    return cast(UiSession | None, g.hg_ui_session)


def _set_cookie(resp: Response, session: UiSession | None) -> Response:
    secure = public_url().startswith("https://")
    if session is None:
        resp.delete_cookie(cookie_name(), path="/", secure=secure, httponly=True, samesite="Lax")
    else:
        resp.set_cookie(
            cookie_name(),
            session.cookie_value,
            path="/",
            secure=secure,
            httponly=True,
            samesite="Lax",
            max_age=max(1, int((session.expires_at - _utcnow()).total_seconds())),
        )
    return resp


# ------------------------------------------------------------------ OIDC relying party
@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None
    client_id: str


_discovery_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def provider() -> Provider:
    """The OIDC provider the UI logs in with: ``ui_oidc_issuer`` (discovery over HTTPS) or the
    built-in issuer (its own discovery document, in-process)."""
    p = platform()
    settings = p.settings
    if settings.ui_oidc_issuer:
        issuer = settings.ui_oidc_issuer.rstrip("/")
        cached = _discovery_cache.get(issuer)
        if cached is None or cached[0] < time.monotonic():
            r = requests.get(issuer + "/.well-known/openid-configuration", timeout=10, verify=_verify())
            r.raise_for_status()
            cached = (time.monotonic() + 300, r.json())
            _discovery_cache[issuer] = cached
        doc = cached[1]
        if doc.get("issuer", "").rstrip("/") != issuer:
            raise RuntimeError("the OIDC provider's discovery document names another issuer")
    elif p.issuer is not None:
        doc = p.issuer.discovery_document()
    else:
        raise RuntimeError("no OIDC provider for the web UI: set ui_oidc_issuer or enable the built-in issuer")
    return Provider(
        issuer=str(doc["issuer"]),
        authorization_endpoint=str(doc["authorization_endpoint"]),
        token_endpoint=str(doc["token_endpoint"]),
        revocation_endpoint=doc.get("revocation_endpoint"),
        client_id=settings.ui_client_id,
    )


def _verify() -> bool | str:
    return platform().settings.tls_ca_bundle or True


def redirect_uri() -> str:
    return public_url() + "/ui/callback"


def _safe_next(target: str | None) -> str:
    """Only a path inside the UI: never an open redirect."""
    if (
        not target
        or not target.startswith("/ui/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return "/ui/"
    return target[:1024]


def _token_request(form: dict[str, str]) -> dict[str, Any]:
    """POST the token endpoint; the answer's JSON or :class:`LoginRequired`."""
    prov = provider()
    try:
        r = requests.post(prov.token_endpoint, data={**form, "client_id": prov.client_id}, timeout=30, verify=_verify())
    except requests.RequestException as exc:
        raise LoginRequired(f"the identity provider could not be reached ({type(exc).__name__})") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        desc = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        raise LoginRequired(f"the identity provider refused: {str(desc or r.status_code)[:200]}")
    return body


def _token_data(body: dict[str, Any]) -> dict[str, Any]:
    expires_in = body.get("expires_in")
    ttl = int(expires_in) if isinstance(expires_in, int) and expires_in > 0 else 300
    return {
        "access_token": body["access_token"],
        "access_exp": int(time.time()) + ttl,
        "refresh_token": body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None,
    }


class LoginRequired(Exception):
    """The user must (again) log in; ``str(exc)`` says why, for the login page."""


# Writers of one session's sealed data take its lock and re-read it first, so a flash message
# saved by one request never overwrites the tokens another request just rotated (the stale
# refresh token would then look like theft and end the login). Striped: no growth per session.
# Across processes (several replicas serving the UI) this is not serialised.
_SESSION_LOCKS = [threading.Lock() for _ in range(64)]


def _session_lock(session: UiSession) -> threading.Lock:
    return _SESSION_LOCKS[int(session.key[:8], 16) % len(_SESSION_LOCKS)]


def _update(session: UiSession, mutate: Callable[[dict[str, Any]], Any]) -> Any:
    """Apply ``mutate`` to the session's current stored data under its lock and save it."""
    with _session_lock(session):
        fresh = store().load(session.cookie_value)
        if fresh is None:
            raise LoginRequired("your session ended")
        result = mutate(fresh.data)
        store().save(fresh)
        session.data = fresh.data
        return result


def access_token() -> str:
    """The current user's access token, refreshed (rotating the refresh token) when it is about
    to expire. Concurrent requests of one session refresh once: a second refresh with the
    already-rotated token would look like theft and end the login."""
    session = current_session()
    if session is None or not session.username:
        raise LoginRequired("not signed in")
    if session.data.get("access_exp", 0) - _REFRESH_MARGIN > time.time():
        return str(session.data["access_token"])
    with _session_lock(session):
        fresh = store().load(session.cookie_value)  # another request may have refreshed meanwhile
        if fresh is None:
            raise LoginRequired("your session ended")
        if fresh.data.get("access_exp", 0) - _REFRESH_MARGIN > time.time():
            session.data = fresh.data
            return str(fresh.data["access_token"])
        refresh = fresh.data.get("refresh_token")
        if not refresh:
            raise LoginRequired("your session expired")
        try:
            body = _token_request({"grant_type": "refresh_token", "refresh_token": refresh})
        except LoginRequired:
            store().delete(session.sid)
            raise
        fresh.data.update(_token_data(body))
        if not fresh.data.get("refresh_token"):
            fresh.data["refresh_token"] = refresh  # a provider that does not rotate
        store().save(fresh)
        session.data = fresh.data
        return str(fresh.data["access_token"])


def service_url(service: str) -> str:
    """Where a service's API is served: ``drs`` and ``trs`` may live elsewhere in a split
    deployment (``drs_url``, ``trs_url``); ``wes`` and ``core`` are at the public URL."""
    settings = platform().settings
    if service == "drs":
        return settings.effective_drs_url
    if service == "trs":
        return settings.effective_trs_url
    return public_url()


def api(base_url: str | None = None, *, service: str | None = None) -> ApiClient:
    """An HTTP client of the public APIs acting as the current user (their access token,
    refreshed when needed). Paths are absolute API paths, e.g.
    ``api().get_object("/ga4gh/wes/v1/runs")``; the base URL is ``base_url``, else the URL of
    ``service`` ("drs", "trs", "wes", "core": :func:`service_url`), else the public URL."""
    base = base_url or (service_url(service) if service else public_url())
    return ApiClient(base, access_token, verify=_verify(), timeout=60, retries=1)


# ------------------------------------------------------------------ the user
@dataclass(frozen=True)
class CurrentUser:
    username: str
    display_name: str
    roles: tuple[str, ...]
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        """What the APIs would allow (their ``x-helixgate-permission``): show an action only then."""
        return permission in (rbac.PUBLIC, rbac.AUTHENTICATED) or permission in self.permissions


def current_user() -> CurrentUser | None:
    """The signed-in user with roles and permissions as the core API reports them (``/me``),
    asked once per request; None when nobody is signed in."""
    if "hg_ui_user" in g:
        return cast(CurrentUser | None, g.hg_ui_user)
    session = current_session()
    user = None
    if session is not None and session.username:
        g.hg_ui_user = None  # an error page rendered after a failure below shows no user
        try:
            me = api().get_object("/helixgate/v1/me")
        except ClientError as exc:
            if exc.status not in (401, 403):
                raise
            # the APIs no longer accept this user (deactivated, token revoked): end the session
            store().delete(session.sid)
            g.hg_ui_session = None
            raise LoginRequired(f"your session ended: {exc.message}") from None
        user = CurrentUser(
            username=str(me.get("username")),
            display_name=str(me.get("display_name") or me.get("username")),
            roles=tuple(str(r) for r in me.get("roles") or ()),
            permissions=frozenset(str(p) for p in me.get("permissions") or ()),
        )
    g.hg_ui_user = user
    return user


def to_login() -> Response:
    """Send the browser to the login and back here afterwards. An htmx request gets
    ``HX-Redirect`` (the whole page goes, not a login form swapped into a fragment), back to
    the page it was made from."""
    if request.headers.get("HX-Request") == "true":
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        here = current.path + (f"?{current.query}" if current.query else "")
        resp = Response("", status=200)
        resp.headers["HX-Redirect"] = url_for("ui.auth.login", next=_safe_next(here))
        return resp
    return cast(Response, redirect(url_for("ui.auth.login", next=request.full_path.rstrip("?"))))


def login_required(view: F) -> F:
    """Views of signed-in users only: others are sent to the login (and back afterwards)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = current_session()
        if session is None or not session.username:
            return to_login()
        return view(*args, **kwargs)

    return cast(F, wrapper)


# ------------------------------------------------------------------ CSRF and flash messages
def csrf_token() -> str:
    session = current_session()
    return session.csrf_token if session is not None else ""


def check_csrf() -> Response | None:
    """The refusal (400) of a state-changing request without this session's CSRF token or
    from another origin, else None. Runs before every view of the ui blueprint."""
    if request.method not in _UNSAFE:
        return None
    origin = request.headers.get("Origin")
    expected_origin = "{0.scheme}://{0.netloc}".format(urlsplit(public_url()))
    if origin is not None and origin != expected_origin:
        return Response("cross-origin request refused", status=400, mimetype="text/plain")
    session = current_session()
    presented = request.headers.get(_CSRF_HEADER) or request.form.get("csrf_token", "")
    if session is None or not presented or not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
        return Response("missing or wrong CSRF token: reload the page and try again", status=400, mimetype="text/plain")
    return None


def flash(message: str, category: str = "info") -> None:
    """A message shown once, on the next page this session renders (category: info, success,
    error)."""
    session = current_session()
    if session is None:
        return
    _update(session, lambda data: data.setdefault("flash", []).append([category, message[:500]]))


def pop_flashes() -> list[tuple[str, str]]:
    session = current_session()
    if session is None or not session.data.get("flash"):
        return []
    try:
        popped = _update(session, lambda data: data.pop("flash", []))
    except LoginRequired:
        return []
    return [(str(c), str(m)) for c, m in popped]


# ------------------------------------------------------------------ views
@bp.get("/login")
def login() -> Response:
    """Start the authorization code flow: a pending session holds state, nonce and the PKCE
    verifier; the browser goes to the provider with only the S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    earlier = current_session()
    if earlier is not None and not earlier.username:
        store().delete(earlier.sid)  # a login started again: one pending session per browser
    pending = store().create(
        username=None,
        ttl=PENDING_TTL,
        data={"state": state, "nonce": nonce, "verifier": verifier, "next": _safe_next(request.args.get("next"))},
    )
    prov = provider()
    challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
    query = urlencode(
        {
            "response_type": "code",
            "client_id": prov.client_id,
            "redirect_uri": redirect_uri(),
            "scope": "openid",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return _set_cookie(cast(Response, redirect(f"{prov.authorization_endpoint}?{query}", code=303)), pending)


@bp.get("/callback")
def callback() -> Response | tuple[str, int]:
    pending = current_session()
    state = request.args.get("state", "")
    if pending is None or pending.username or not pending.data.get("state"):
        return _login_problem("This sign-in link is not for this browser session, or it expired. Sign in again.")
    if not hmac.compare_digest(state.encode(), str(pending.data["state"]).encode()):
        return _login_problem("The sign-in answer did not match this browser's request (state). Sign in again.")
    prov = provider()
    iss = request.args.get("iss")
    if iss is not None and iss.rstrip("/") != prov.issuer.rstrip("/"):
        return _login_problem("The sign-in answer came from another identity provider.")
    if "error" in request.args:
        store().delete(pending.sid)
        desc = request.args.get("error_description") or request.args.get("error", "")
        return _login_problem(f"The identity provider refused the sign-in: {desc[:200]}")
    code = request.args.get("code", "")
    try:
        body = _token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri(),
                "code_verifier": str(pending.data["verifier"]),
            }
        )
    except LoginRequired as exc:
        store().delete(pending.sid)
        return _login_problem(str(exc))
    store().delete(pending.sid)  # a new session id after login: no fixation
    data = _token_data(body)
    try:
        me = ApiClient(public_url(), data["access_token"], verify=_verify(), retries=1).get_object("/helixgate/v1/me")
    except ClientError as exc:
        # signed in at the provider, but this deployment does not accept the user (not
        # registered, inactive): end the provider's login too, and say why
        _revoke(data.get("refresh_token"))
        return _login_problem(f"You signed in, but HelixGate refused your account: {exc.message}")
    session = store().create(
        username=str(me["username"]),
        ttl=platform().settings.refresh_token_lifetime,
        data=data,
    )
    g.hg_ui_session = session
    return _set_cookie(cast(Response, redirect(_safe_next(str(pending.data.get("next"))), code=303)), session)


def _login_problem(message: str) -> tuple[str, int]:
    g.hg_ui_session = None
    g.hg_ui_user = None
    return render_template("signed_out.html", problem=message), 400


@bp.post("/logout")
def logout() -> Response:
    """Revoke the refresh token at the provider (RFC 7009), forget the session, clear the cookie."""
    session = current_session()
    if session is not None:
        _revoke(session.data.get("refresh_token"))
        store().delete(session.sid)
    g.hg_ui_session = None
    g.hg_ui_user = None
    return _set_cookie(cast(Response, redirect(url_for("ui.auth.signed_out"), code=303)), None)


def _revoke(refresh: Any) -> None:
    """RFC 7009 at the provider, best effort (the session is forgotten either way)."""
    prov = provider()
    if not isinstance(refresh, str) or not refresh or not prov.revocation_endpoint:
        return
    try:
        requests.post(
            prov.revocation_endpoint,
            data={"token": refresh, "token_type_hint": "refresh_token", "client_id": prov.client_id},
            timeout=15,
            verify=_verify(),
        )
    except requests.RequestException:
        log.warning("web UI: the revocation endpoint could not be reached")


@bp.get("/signed-out")
def signed_out() -> str:
    return render_template("signed_out.html", problem=None)
