"""The UI shell's contract for page modules, in-process: a page module's blueprint is mounted
under /ui/, gets the CSP and companions, the CSRF check before its views, the API-refusal
pages, and its NAV links only for users whose permissions allow them. Plus the vendored
htmx: the committed file is the lockfile's package (offline check)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Blueprint
from starlette.testclient import TestClient

import helixgate_ui
from helixgate.client import ClientError
from helixgate.db import Database
from helixgate_app.server import build_app
from helixgate_app.services import build_platform, named
from tests.fixtures.app import make_settings

ROOT = Path(__file__).resolve().parents[2]


def _fake_page() -> types.ModuleType:
    module = types.ModuleType("helixgate_ui.pages.fake_test_page")
    bp = Blueprint("fake", __name__, url_prefix="/fake")

    @bp.get("/refused")
    def refused() -> str:
        raise ClientError("HTTP 403: permission denied: CancelRun needs wes:cancel", status=403)

    @bp.get("/missing")
    def missing() -> str:
        raise ClientError("HTTP 404: run not found", status=404)

    @bp.get("/thread")
    def thread() -> str:
        import threading

        return threading.current_thread().name

    @bp.post("/act")
    def act() -> str:
        return "acted"

    @bp.get("/private")
    @helixgate_ui.session.login_required
    def private() -> str:
        return "private"

    module.blueprint = bp  # type: ignore[attr-defined]
    module.NAV = [helixgate_ui.NavItem("Fake", "ui.fake.refused", "wes:cancel")]  # type: ignore[attr-defined]
    return module


@pytest.fixture()
def client(tmp_path: Path, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    import helixgate_ui.session  # noqa: F401  (the fake page uses it)

    module = _fake_page()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(helixgate_ui, "PAGES", [*helixgate_ui.PAGES, module.__name__])
    platform = build_platform(make_settings(tmp_path / "data", sqlite_database))
    with TestClient(build_app(platform, named(("core",))), raise_server_exceptions=False) as c:
        yield c
    platform.close()


def _assert_headers(r: Any) -> None:
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"


def test_page_module_views_get_the_shells_headers_and_error_pages(client: TestClient) -> None:
    r = client.get("/ui/fake/refused")
    assert r.status_code == 403 and "You may not do this" in r.text and "needs wes:cancel" in r.text
    _assert_headers(r)
    r = client.get("/ui/fake/missing")
    assert r.status_code == 404 and "run not found" in r.text
    _assert_headers(r)
    r = client.get("/ui/fake/private", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/ui/login?next=/ui/fake/private")
    _assert_headers(r)
    # an htmx request is told to move the whole page, back to the page it came from
    r = client.get(
        "/ui/fake/private",
        headers={"HX-Request": "true", "HX-Current-URL": "http://127.0.0.1:8080/ui/runs?state=RUNNING"},
        follow_redirects=False,
    )
    assert r.status_code == 200 and r.headers["HX-Redirect"] == "/ui/login?next=/ui/runs?state%3DRUNNING"


def test_page_module_posts_need_the_csrf_token(client: TestClient) -> None:
    r = client.post("/ui/fake/act", data={"x": "1"})
    assert r.status_code == 400 and "CSRF" in r.text
    r = client.post("/ui/fake/act", headers={"Origin": "https://evil.example", "X-CSRF-Token": "t"})
    assert r.status_code == 400 and "cross-origin" in r.text


def test_nav_items_show_only_what_the_user_may_do() -> None:
    user = helixgate_ui.session.CurrentUser("v", "v", ("viewer",), frozenset({"wes:read", "drs:read", "trs:read"}))
    assert user.can("wes:read") and user.can("authenticated") and not user.can("wes:cancel")


def test_vendored_htmx_is_the_locked_package() -> None:
    r = subprocess.run(
        ["bash", "scripts/build_ui.sh", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "match ui/package-lock.json" in r.stdout


def test_build_ui_check_catches_a_changed_file(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for part in ("scripts/build_ui.sh", "ui/package.json", "ui/package-lock.json"):
        (copy / part).parent.mkdir(parents=True, exist_ok=True)
        (copy / part).write_bytes((ROOT / part).read_bytes())
    vendor = copy / "helixgate_ui/static/vendor"
    vendor.mkdir(parents=True)
    (vendor / "MANIFEST.json").write_bytes((ROOT / "helixgate_ui/static/vendor/MANIFEST.json").read_bytes())
    (vendor / "htmx.min.js").write_bytes((ROOT / "helixgate_ui/static/vendor/htmx.min.js").read_bytes() + b"//x")
    r = subprocess.run(
        ["bash", "scripts/build_ui.sh", "--check", "--offline"], cwd=copy, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1 and "htmx.min.js: SHA-256" in r.stderr


def test_over_https_the_cookie_is_host_prefixed_and_secure(tmp_path: Path, sqlite_database: Database) -> None:
    platform = build_platform(make_settings(tmp_path / "data", sqlite_database, public_url="https://hg.example"))
    try:
        with TestClient(build_app(platform, named(("core",))), raise_server_exceptions=False) as c:
            r = c.get("/ui/login", follow_redirects=False)
    finally:
        platform.close()
    assert r.status_code == 303
    assert r.headers["location"].startswith("https://hg.example/oidc/authorize?")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-hg_session=")
    for attribute in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert attribute in cookie
    assert "Domain" not in cookie
    assert "form-action 'self' https://hg.example" in r.headers["Content-Security-Policy"]


def test_ui_requests_run_on_their_own_threads(client: TestClient) -> None:
    """UI views wait on API calls to the same server: they must not hold the API's threads."""
    import threading

    client.app.app.add_url_rule("/not-ui/thread", "not_ui_thread", lambda: threading.current_thread().name)
    assert client.get("/ui/fake/thread").text.startswith("WSGI-UI")
    other = client.get("/not-ui/thread").text
    assert other.startswith("WSGI") and not other.startswith("WSGI-UI")


def test_a_flash_message_never_restores_a_rotated_refresh_token(client: TestClient) -> None:
    """A request holding an old copy of the session saves a flash message after another request
    rotated the tokens: the saved session keeps the new refresh token."""
    from flask import g

    from helixgate_ui import session as ui_session

    flask_app = client.app.app
    with flask_app.test_request_context("/ui/"):
        store = ui_session.store()
        live = store.create(username="alice", ttl=600, data={"access_token": "a1", "refresh_token": "r1"})
        stale = store.load(live.cookie_value)
        assert stale is not None
        rotated = store.load(live.cookie_value)
        assert rotated is not None
        rotated.data.update(access_token="a2", refresh_token="r2")
        store.save(rotated)
        g.hg_ui_session = stale
        ui_session.flash("saved", "success")
        after = store.load(live.cookie_value)
        assert after is not None
        assert after.data["refresh_token"] == "r2" and after.data["flash"] == [["success", "saved"]]
        assert ui_session.pop_flashes() == [("success", "saved")]
        final = store.load(live.cookie_value)
        assert final is not None and "flash" not in final.data and final.data["refresh_token"] == "r2"
        # the sealed column is ciphertext: a wrong secret opens nothing
        sid = live.cookie_value.split(".", 1)[0]
        assert store.load(sid + ".not-the-secret") is None
