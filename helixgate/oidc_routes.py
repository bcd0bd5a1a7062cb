"""The built-in token issuer's HTTP endpoints, served at <public_url>/oidc.

Discovery, JWKS, the token endpoint (client_credentials for service identities, and the
authorization_code / refresh_token grants of :mod:`helixgate.login`), the authorization
endpoint with its login form, and revocation (RFC 7009). Handlers are thin: the rules live
in :mod:`helixgate.login` and :mod:`helixgate.service_credentials`. Every refusal is a 4xx in
OAuth2's error shape ``{"error", "error_description"}`` (or, at the authorization endpoint,
a redirect carrying it when the redirect URI is trusted).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import connexion
from flask import Response, g, jsonify, redirect, request
from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.wrappers import Response as BaseResponse

from helixgate.login import (
    CLI_CLIENT,
    DEVICE_GRANT,
    UI_CLIENT,
    AuthorizationRequest,
    LoginService,
    LoginThrottled,
    OAuthError,
    RedirectableError,
    parse_authorization_request,
)

if TYPE_CHECKING:
    from helixgate.platform import Platform

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_LOGIN_CSRF_COOKIE = "hg_login_csrf"
_AUTHZ_PARAMS = ("response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method",
                 "scope", "nonce")  # fmt: skip
_CLIENT_LABELS = {UI_CLIENT: "HelixGate web dashboard", CLI_CLIENT: "HelixGate command line"}

_templates = Environment(
    loader=PackageLoader("helixgate", "templates"), autoescape=select_autoescape(default=True, default_for_string=True)
)


def oauth_error_response(exc: OAuthError) -> Response:
    resp = jsonify(exc.body())
    resp.status_code = exc.status
    resp.headers.update(_NO_STORE)
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="helixgate", error="invalid_client"'
    return resp


def _form_csrf_token() -> str:
    """The login form's CSRF token: the browser's cookie when it holds one of ours (a reload
    keeps the open form valid), else a new one."""
    csrf = request.cookies.get(_LOGIN_CSRF_COOKIE) or ""
    return csrf if len(csrf) == 43 else secrets.token_urlsafe(32)


def _page_headers(resp: BaseResponse, form_targets: tuple[str, ...] = ()) -> BaseResponse:
    """Strict headers for the issuer's HTML: no scripts at all, forms only to us (and the
    validated redirect's origin, which the browser checks on the redirect after the POST)."""
    actions = " ".join(("'self'", *form_targets))
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        f"form-action {actions}; frame-ancestors 'none'; base-uri 'none'"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.update(_NO_STORE)
    return resp


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def add_oidc_routes(app: connexion.FlaskApp, platform: Platform) -> None:
    issuer = platform.issuer
    if issuer is None:
        return
    flask_app = app.app
    issuer_path = urlsplit(issuer.issuer_url).path.rstrip("/")
    if issuer_path != "/oidc":
        issuer_path = "/oidc"  # an issuer URL elsewhere (split deployment) still serves here
    secure_cookies = platform.settings.effective_public_url.startswith("https://")

    def login_service() -> LoginService:
        return LoginService(platform)

    @flask_app.get("/oidc/.well-known/openid-configuration")
    def _discovery() -> Response:
        return jsonify(issuer.discovery_document())

    @flask_app.get("/oidc/jwks.json")
    def _jwks() -> Response:
        return jsonify(issuer.jwks())

    @flask_app.get("/oidc/login.css")
    def _login_css() -> Response:
        css = _templates.loader.get_source(_templates, "oidc/login.css")[0]  # type: ignore[union-attr]
        resp = Response(css, mimetype="text/css")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    def render_login(
        authz: AuthorizationRequest, params: dict[str, str], *, error: str = "", username: str = "", status: int = 200
    ) -> BaseResponse:
        csrf = _form_csrf_token()
        html = _templates.get_template("oidc/login.html").render(
            title="Sign in to HelixGate",
            button="Sign in",
            endpoint="authorize",
            device=False,
            issuer_path=issuer_path,
            client_label=_CLIENT_LABELS.get(authz.client_id, authz.client_id),
            error=error,
            csrf=csrf,
            username=username[:128],
            params=[(k, params[k]) for k in _AUTHZ_PARAMS if params.get(k)],
        )
        return _with_csrf_cookie(
            Response(html, status=status, mimetype="text/html"), csrf, (_origin(authz.redirect_uri),)
        )

    def _with_csrf_cookie(resp: Response, csrf: str, form_targets: tuple[str, ...] = ()) -> BaseResponse:
        resp.set_cookie(
            _LOGIN_CSRF_COOKIE,
            csrf,
            path="/oidc",
            httponly=True,
            secure=secure_cookies,
            samesite="Strict",
            max_age=1800,
        )
        return _page_headers(resp, form_targets)

    def _csrf_refusal() -> BaseResponse | None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != _origin(platform.settings.effective_public_url):
            return oauth_error_response(OAuthError("invalid_request", "login form posted from another origin"))
        cookie, field = request.cookies.get(_LOGIN_CSRF_COOKIE, ""), request.form.get("csrf_token", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
            return oauth_error_response(
                OAuthError("invalid_request", "the login form expired or was not ours (CSRF check): reload it")
            )
        return None

    def redirect_error(exc: RedirectableError) -> BaseResponse:
        query = {"error": exc.error, "error_description": exc.description, "iss": issuer.issuer_url}
        if exc.state:
            query["state"] = exc.state
        return _page_headers(redirect(f"{exc.redirect_uri}?{urlencode(query)}", code=303))

    def authz_params(source: Any) -> dict[str, str]:
        return {k: v for k in _AUTHZ_PARAMS if isinstance(v := source.get(k), str)}

    @flask_app.get("/oidc/authorize")
    def _authorize_form() -> BaseResponse:
        params = authz_params(request.args)
        try:
            authz = parse_authorization_request(params, login_service().clients)
        except RedirectableError as exc:
            return redirect_error(exc)
        except OAuthError as exc:
            return oauth_error_response(exc)
        return render_login(authz, params)

    @flask_app.post("/oidc/authorize")
    def _authorize_submit() -> BaseResponse:
        params = authz_params(request.form)
        service = login_service()
        try:
            authz = parse_authorization_request(params, service.clients)
        except RedirectableError as exc:
            return redirect_error(exc)
        except OAuthError as exc:
            return oauth_error_response(exc)
        refused = _csrf_refusal()
        if refused is not None:
            return refused
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not username or not password:
            return render_login(authz, params, error="Enter your username and password.", username=username, status=400)
        try:
            user = service.authenticate(
                username, password, client_addr=request.remote_addr or "", client_id=authz.client_id
            )
        except LoginThrottled:
            return render_login(
                authz,
                params,
                error="Too many failed sign-in attempts. Wait a few minutes and try again.",
                username=username,
                status=429,
            )
        if user is None:
            return render_login(authz, params, error="Wrong username or password.", username=username, status=401)
        code = service.issue_code(authz, user)
        query = {"code": code, "iss": issuer.issuer_url}
        if authz.state:
            query["state"] = authz.state
        resp = _page_headers(
            redirect(f"{authz.redirect_uri}?{urlencode(query)}", code=303), (_origin(authz.redirect_uri),)
        )
        resp.delete_cookie(_LOGIN_CSRF_COOKIE, path="/oidc", secure=secure_cookies, httponly=True, samesite="Strict")
        return resp

    @flask_app.post("/oidc/token")
    def _token() -> Response:
        g.request_id = uuid.uuid4().hex  # names this exchange in the audit trail and the response
        form = {k: v for k, v in request.form.items() if isinstance(v, str)}
        grant = form.get("grant_type")
        if grant in ("authorization_code", "refresh_token", DEVICE_GRANT):
            service = login_service()
            try:
                if grant == "authorization_code":
                    tokens = service.exchange_code(form)
                elif grant == "refresh_token":
                    tokens = service.refresh(form)
                else:
                    tokens = service.poll_device(form)
            except OAuthError as exc:
                if exc.error in ("authorization_pending", "slow_down"):
                    return oauth_error_response(exc)  # the normal rhythm of polling, not a failure
                platform.audit.security_event(
                    "auth.failed",
                    service="core",
                    request_id=g.request_id,
                    client_addr=request.remote_addr,
                    details={
                        "operation": "oauth2.token",
                        "grant_type": grant,
                        "client_id": form.get("client_id", "")[:64],
                        "reason": exc.reason,
                    },
                )
                return oauth_error_response(exc)
            resp = jsonify(tokens.body())
            resp.headers.update(_NO_STORE)
            return resp
        # OAuth2 client_credentials for service identities (helixgate.service_credentials)
        from helixgate.service_credentials import token_endpoint

        answer = token_endpoint(
            platform,
            form,
            request.headers.get("Authorization"),
            client_addr=request.remote_addr,
            request_id=g.request_id,
        )
        resp = jsonify(answer.body)
        resp.status_code = answer.status
        resp.headers.update(answer.headers)
        return resp

    # ---------------------------------------------------------------- device grant (RFC 8628)
    @flask_app.post("/oidc/device_authorization")
    def _device_authorization() -> BaseResponse:
        try:
            body = login_service().start_device(request.form.get("client_id", ""), request.form.get("scope", ""))
        except OAuthError as exc:
            return oauth_error_response(exc)
        resp = jsonify(body)
        resp.headers.update(_NO_STORE)
        return resp

    def render_device(
        *, user_code: str = "", error: str = "", done: str = "", username: str = "", status: int = 200
    ) -> BaseResponse:
        csrf = _form_csrf_token()
        html = _templates.get_template("oidc/login.html").render(
            title="Sign in a device",
            button="Approve this device",
            endpoint="device",
            device=True,
            issuer_path=issuer_path,
            client_label=(
                "Approve the HelixGate command line that shows this code. Continue only if you "
                "started this sign-in yourself: whoever holds the device gets your access."
            ),
            error=error,
            done=done,
            csrf=csrf,
            user_code=user_code[:16],
            username=username[:128],
            params=[],
        )
        return _with_csrf_cookie(Response(html, status=status, mimetype="text/html"), csrf)

    @flask_app.get("/oidc/device")
    def _device_form() -> BaseResponse:
        return render_device(user_code=request.args.get("user_code", ""))

    @flask_app.post("/oidc/device")
    def _device_submit() -> BaseResponse:
        refused = _csrf_refusal()
        if refused is not None:
            return refused
        service = login_service()
        user_code = request.form.get("user_code", "")
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not username or not password or not user_code:
            return render_device(
                user_code=user_code, username=username, error="Enter the code, your username and password.", status=400
            )
        try:
            user = service.authenticate(username, password, client_addr=request.remote_addr or "", client_id=CLI_CLIENT)
        except LoginThrottled:
            return render_device(
                user_code=user_code,
                username=username,
                error="Too many failed sign-in attempts. Wait a few minutes and try again.",
                status=429,
            )
        if user is None:
            return render_device(
                user_code=user_code, username=username, error="Wrong username or password.", status=401
            )
        if not service.approve_device(user_code, user):
            return render_device(
                user_code=user_code, username=username, error="This code is unknown, used or expired.", status=400
            )
        return render_device(done="Device approved: go back to your terminal.")

    @flask_app.post("/oidc/revoke")
    def _revoke() -> Response:
        client_id = request.form.get("client_id", "")
        service = login_service()
        if client_id not in service.clients:
            return oauth_error_response(OAuthError("invalid_client", "unknown client_id", status=401))
        token = request.form.get("token", "")
        if not token:
            return oauth_error_response(OAuthError("invalid_request", "token is required"))
        # RFC 7009 2.2: an unknown or already revoked token is not an error
        service.revoke(token, client_id)
        resp = Response("", status=200)
        resp.headers.update(_NO_STORE)
        return resp
