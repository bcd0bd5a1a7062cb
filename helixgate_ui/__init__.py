"""The HelixGate web dashboard, served at ``<public_url>/ui/`` by the core's process.

A backend-for-frontend: server-rendered Flask + Jinja2 pages with htmx; the browser holds
only an opaque session cookie, and every page calls the **public APIs over HTTP** as the
signed-in user (:func:`helixgate_ui.session.api`). This package may import ``helixgate``
only (never a service package); ``helixgate_app.server`` mounts it.

Contract for page modules
=========================

A page module is ``helixgate_ui/pages/<name>.py``, listed in :data:`PAGES` (the runs, tools,
data and audit modules are listed already; a listed module that does not exist yet is
skipped). It exports:

``blueprint``
    a ``flask.Blueprint`` with a ``url_prefix`` (e.g. ``Blueprint("runs", __name__,
    url_prefix="/runs")``). It is registered inside the ``ui`` blueprint, so its URLs are
    ``/ui/runs/...`` and its endpoints ``ui.runs.<view>`` (``url_for("ui.runs.list")``).
    Templates live in ``helixgate_ui/templates/<name>/`` and ``{% extends "base.html" %}``
    filling ``{% block title %}`` and ``{% block content %}``.
``NAV`` (optional)
    a list of :class:`NavItem` (label, endpoint, permission): base.html shows the link only
    to users whose roles grant ``permission`` (as ``/me`` reports it).

In a view:

- decorate with ``@login_required`` (signed-out users go to the login and come back; an htmx
  request gets ``HX-Redirect`` so the whole page goes, not a login form inside a fragment);
- ``api()`` is an :class:`helixgate.client.ApiClient` acting as the user (token refreshed
  transparently): ``api().get_object("/ga4gh/wes/v1/runs")``; in a split deployment DRS and
  TRS may live elsewhere: ``api(service="drs").get_object("/ga4gh/drs/v1/objects/...")``
  uses ``drs_url``/``trs_url`` (the same as ``api()`` when they are unset). An API refusal raises
  ``ClientError``; the ui blueprint renders it for you (401 -> login, 403 -> "you may not
  ...", 404 -> not found, other -> 502 page with the API's message); catch it to do better;
- ``current_user()`` -> :class:`CurrentUser` (``username``, ``roles``, ``permissions``,
  ``can("wes:cancel")``): show an action only when ``can`` says the API would allow it;
- state-changing requests (POST/PUT/PATCH/DELETE) must carry the CSRF token: forms include
  ``<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">``; htmx requests send
  the ``X-CSRF-Token`` header automatically (``hx-headers`` on ``<body>`` in base.html).
  The check runs before every view of the ui blueprint: nothing to call;
- ``flash(message, category)`` ("info", "success", "error") shows a message on the next page;
- never put a token in a URL, a template or browser storage; never write inline
  ``<script>``/``style=``/``on*=`` attributes (the CSP refuses them and the browser tests
  fail on the console error); static files go in ``helixgate_ui/static/`` and are served at
  ``url_for("ui.static", filename=...)``.

The landing page ``/ui/`` renders ``templates/index.html`` (the analyst engineer owns its
content). Browser tests: ``tests/browser/conftest.py`` (``browser_page`` collects console
errors and fails the test on any) and ``tests/fixtures/ui.py`` (``ui_server``,
``ui_user(...)``, ``ui_login(page, user, password)``).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, redirect, render_template

from helixgate.client import ClientError
from helixgate.errors import UpstreamError

if TYPE_CHECKING:
    import connexion

    from helixgate.platform import Platform

__all__ = ["PAGES", "NavItem", "create_blueprint", "mount"]

log = logging.getLogger("helixgate.ui")


@dataclass(frozen=True)
class NavItem:
    label: str
    endpoint: str
    permission: str = "authenticated"


#: The page modules, in navigation order.
PAGES: list[str] = [
    "helixgate_ui.pages.runs",
    "helixgate_ui.pages.tools",
    "helixgate_ui.pages.data",
    "helixgate_ui.pages.audit",
]


def _page_modules() -> list[ModuleType]:
    modules = []
    for name in PAGES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a page that exists but cannot import is a bug, not "not yet"
                raise
    return modules


def create_blueprint() -> Blueprint:
    """The ``ui`` blueprint with the auth views, the landing page and every page module."""
    from helixgate_ui import security, session

    ui = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
    ui.register_blueprint(session.bp)
    nav: list[NavItem] = []
    for module in _page_modules():
        ui.register_blueprint(module.blueprint)
        nav.extend(getattr(module, "NAV", ()))

    @ui.before_request
    def _csrf() -> Response | None:
        return session.check_csrf()

    @ui.after_request
    def _headers(resp: Response) -> Response:
        try:
            issuer = session.provider().issuer
        except Exception:  # headers never fail a response; the default CSP is stricter
            issuer = None
        return security.apply_headers(resp, issuer)

    @ui.app_context_processor
    def _globals() -> dict[str, Any]:
        def visible_nav() -> list[NavItem]:
            user = session.current_user() if session.current_session() else None
            return [item for item in nav if user is not None and user.can(item.permission)]

        return {
            "csrf_token": session.csrf_token,
            "current_user": session.current_user,
            "nav_items": visible_nav,
            "flashes": session.pop_flashes,
        }

    @ui.errorhandler(ClientError)
    def _api_refused(exc: ClientError) -> Any:
        if exc.status == 401:
            return session.to_login()
        status = exc.status if exc.status in (400, 403, 404, 409, 413, 422) else 502
        return render_template("error.html", status=status, message=exc.message), status

    @ui.errorhandler(UpstreamError)
    def _api_down(exc: UpstreamError) -> Any:
        return render_template("error.html", status=502, message=exc.message), 502

    @ui.errorhandler(session.LoginRequired)
    def _login_again(exc: session.LoginRequired) -> Any:
        return session.to_login()

    @ui.get("/")
    @session.login_required
    def index() -> str:
        return render_template("index.html")

    return ui


UI_THREADS = 16


class _UiThreadPool:
    """UI requests on their own WSGI threads. A UI view waits on API calls to this same server;
    on connexion's one pool (10 threads) ten waiting views would leave no thread for the calls
    they wait on. With two pools the API calls never queue behind UI views."""

    def __init__(self, api_pool: Any, ui_pool: Any) -> None:
        self.api_pool = api_pool
        self.ui_pool = ui_pool

    @property
    def app(self) -> Any:  # what connexion's add_wsgi_middleware wraps
        return self.api_pool.app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        pool = self.ui_pool if path == "/ui" or path.startswith("/ui/") else self.api_pool
        await pool(scope, receive, send)


def _own_thread_pool(app: connexion.FlaskApp) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from a2wsgi import WSGIMiddleware

    inner = getattr(app, "_middleware_app", None)
    api_pool = getattr(inner, "asgi_app", None)
    if inner is None or not isinstance(api_pool, WSGIMiddleware):  # another connexion layout
        log.warning("web UI: no separate thread pool (unexpected connexion app layout)")
        return
    ui_pool = WSGIMiddleware(app.app.wsgi_app)
    ui_pool.executor = ThreadPoolExecutor(thread_name_prefix="WSGI-UI", max_workers=UI_THREADS)
    inner.asgi_app = _UiThreadPool(api_pool, ui_pool)


def mount(app: connexion.FlaskApp, platform: Platform) -> None:
    """Serve the UI at ``/ui/`` in ``app`` (the core's connexion app)."""
    flask_app = app.app
    flask_app.register_blueprint(create_blueprint(), url_prefix="/ui")
    _own_thread_pool(app)

    @flask_app.get("/ui")
    def _ui_root() -> Response:
        return redirect("/ui/", code=308)  # type: ignore[return-value]
