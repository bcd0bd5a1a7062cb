"""The web UI's backend-for-frontend session against a live server: the browser holds only an
opaque HttpOnly cookie, tokens are sealed in the database, CSRF and Origin checks guard every
state change, logout revokes, refresh is transparent (and happens once for concurrent
requests), and the login cannot be bent into an open redirect or a fixed session."""

from __future__ import annotations

import concurrent.futures
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import select

from helixgate.db import Database
from helixgate.login import RefreshTokenRow, UiSessionRow
from helixgate_ui.session import SessionStore
from tests.fixtures.live import LiveServer
from tests.fixtures.ui import UiUser, login_form, make_ui_user, ui_login, ui_session

pytestmark = pytest.mark.integration


class _Db:
    """The live server's own database (its SQLite file), read and nudged by the tests."""

    def __init__(self, server: LiveServer) -> None:
        self.db = Database(f"sqlite:///{server.data_dir / 'helixgate.db'}")

    def refresh_rows(self, username: str) -> list[RefreshTokenRow]:
        with self.db.session() as s:
            return list(s.scalars(select(RefreshTokenRow).where(RefreshTokenRow.username == username)))

    def session_rows(self) -> list[UiSessionRow]:
        with self.db.session() as s:
            return list(s.scalars(select(UiSessionRow)))

    def expire_access_token(self, cookie: str) -> None:
        class _P:  # SessionStore needs only .db
            db = self.db

        store = SessionStore(_P())  # type: ignore[arg-type]
        session = store.load(cookie)
        assert session is not None
        session.data["access_exp"] = 0
        store.save(session)


@pytest.fixture(scope="module")
def db(ui_server: LiveServer) -> Iterator[_Db]:
    d = _Db(ui_server)
    yield d
    d.db.dispose()


@pytest.fixture()
def carol(ui_server: LiveServer) -> UiUser:
    return make_ui_user(ui_server, "carol", "data-steward")


def _cookie(s: requests.Session) -> str:
    value = s.cookies.get("hg_session")
    assert value, s.cookies
    return str(value)


def test_the_cookie_is_opaque_and_the_tokens_are_sealed(carol: UiUser, db: _Db) -> None:
    s = requests.Session()
    s.get(f"{carol.server.url}/ui/login", allow_redirects=False)
    pending = _cookie(s)
    r = ui_login(s, carol)
    assert r.status_code == 200 and r.url == carol.server.url + "/ui/"
    login_response = r.history[-1]  # the callback that set the session cookie
    set_cookie = login_response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
    cookie = _cookie(s)
    assert cookie != pending  # a new session id at login: no fixation
    assert list(s.cookies.keys()) == ["hg_session"]
    sid, _, secret = cookie.partition(".")
    rows = db.session_rows()
    sealed = " ".join(row.sealed + row.id_sha256 for row in rows)
    assert sid not in sealed and secret not in sealed and "eyJ" not in sealed
    refresh_tokens = [row.token_sha256 for row in db.refresh_rows("carol")]
    assert refresh_tokens and all(len(t) == 64 for t in refresh_tokens)
    # the pages carry no token either
    assert "eyJ" not in r.text and secret not in r.text


def test_state_changes_need_the_csrf_token_and_our_origin(carol: UiUser) -> None:
    s = ui_session(carol)
    base = carol.server.url
    page = s.get(f"{base}/ui/")
    csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    r = s.post(f"{base}/ui/logout", headers={"Origin": base}, allow_redirects=False)
    assert r.status_code == 400 and "CSRF" in r.text
    r = s.post(
        f"{base}/ui/logout", data={"csrf_token": "x" * len(csrf)}, headers={"Origin": base}, allow_redirects=False
    )
    assert r.status_code == 400
    r = s.post(
        f"{base}/ui/logout",
        data={"csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert r.status_code == 400 and "cross-origin" in r.text
    # still signed in after all of that
    assert s.get(f"{base}/ui/", allow_redirects=False).status_code == 200
    # the htmx header form of the token works
    r = s.post(f"{base}/ui/logout", headers={"Origin": base, "X-CSRF-Token": csrf}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/ui/signed-out")


def test_logout_revokes_the_refresh_token_and_forgets_the_session(carol: UiUser, db: _Db) -> None:
    s = ui_session(carol)
    base = carol.server.url
    cookie = _cookie(s)
    csrf = s.get(f"{base}/ui/").text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    live_before = [r for r in db.refresh_rows("carol") if r.revoked_at is None]
    r = s.post(f"{base}/ui/logout", data={"csrf_token": csrf}, headers={"Origin": base})
    assert r.status_code == 200 and "You are signed out" in r.text
    live_after = [r for r in db.refresh_rows("carol") if r.revoked_at is None]
    assert len(live_after) == len(live_before) - 1  # this login's token, not the other logins'
    assert "hg_session" not in s.cookies
    # the old cookie is worth nothing now
    r = requests.get(f"{base}/ui/", cookies={"hg_session": cookie}, allow_redirects=False)
    assert r.status_code == 302 and "/ui/login" in r.headers["location"]


def test_an_expired_access_token_is_refreshed_once_for_concurrent_requests(carol: UiUser, db: _Db) -> None:
    s = ui_session(carol)
    base = carol.server.url
    cookie = _cookie(s)
    before = {r.token_sha256 for r in db.refresh_rows("carol")}
    db.expire_access_token(cookie)

    def get(_: int) -> Any:
        return requests.get(f"{base}/ui/", cookies={"hg_session": cookie}, allow_redirects=False, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(get, range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
    rows = db.refresh_rows("carol")
    new = [r for r in rows if r.token_sha256 not in before]
    assert len(new) == 1, "exactly one refresh for the four requests"
    family = [r for r in rows if r.family_id == new[0].family_id]
    assert all(r.revoked_at is None for r in family), "no reuse detected: the login lives on"
    assert s.get(f"{base}/ui/", allow_redirects=False).status_code == 200


def test_callback_refuses_a_foreign_or_forged_answer(carol: UiUser) -> None:
    base = carol.server.url
    r = requests.get(f"{base}/ui/callback", params={"code": "x", "state": "y"})
    assert r.status_code == 400 and "not for this browser session" in r.text
    s = requests.Session()
    s.get(f"{base}/ui/login", allow_redirects=False)
    r = s.get(f"{base}/ui/callback", params={"code": "x", "state": "forged"})
    assert r.status_code == 400 and "(state)" in r.text
    # a provider error is shown, not followed
    s = requests.Session()
    answer = s.get(f"{base}/ui/login", allow_redirects=False)
    state = answer.headers["location"].split("state=", 1)[1].split("&", 1)[0]
    r = s.get(f"{base}/ui/callback", params={"error": "access_denied", "error_description": "no", "state": state})
    assert r.status_code == 400 and "refused the sign-in" in r.text


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("https://evil.example/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui/\\\\evil.example", "/ui/"),
        ("/helixgate/v1/me", "/ui/"),
        ("/ui/?tab=1", "/ui/?tab=1"),
    ],
)
def test_login_returns_only_inside_the_ui(carol: UiUser, target: str, landing: str) -> None:
    s = requests.Session()
    base = carol.server.url
    form_page = s.get(f"{base}/ui/login", params={"next": target})
    form = login_form(form_page.text)
    r = s.post(
        base + form.action,
        data={**form.fields, "username": carol.username, "password": carol.password},
        headers={"Origin": base},
    )
    assert r.status_code == 200 and r.url == base + landing


def test_signed_out_pages_send_the_browser_to_the_login(ui_server: LiveServer) -> None:
    r = requests.get(f"{ui_server.url}/ui/", allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/ui/login?next=")
    r = requests.get(f"{ui_server.url}/ui/login", allow_redirects=False)
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(ui_server.url + "/oidc/authorize?") and "code_challenge_method=S256" in location
    assert "code_verifier" not in location
    static = requests.get(f"{ui_server.url}/ui/static/vendor/htmx.min.js")
    assert static.status_code == 200 and "javascript" in static.headers["Content-Type"]
    assert static.headers["X-Content-Type-Options"] == "nosniff"


def test_a_deactivated_user_is_sent_back_to_the_login(ui_server: LiveServer) -> None:
    gina = make_ui_user(ui_server, "gina", "viewer")
    s = ui_session(gina)
    admin = ui_server.headers(ui_server.admin_token())
    r = requests.patch(f"{ui_server.url}/helixgate/v1/users/gina", headers=admin, json={"active": False}, timeout=30)
    assert r.status_code == 200, r.text
    r = s.get(f"{ui_server.url}/ui/", allow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/ui/login")
    # and the session is gone: the cookie no longer names one
    cookie = _cookie(s)
    r = requests.get(f"{ui_server.url}/ui/", cookies={"hg_session": cookie}, allow_redirects=False)
    assert r.status_code == 302
    assert ui_login(requests.Session(), gina).url.startswith(ui_server.url + "/oidc/authorize")


def test_starting_the_login_again_keeps_one_pending_session(ui_server: LiveServer, db: _Db) -> None:
    import hashlib

    s = requests.Session()
    keys = []
    for _ in range(3):
        assert s.get(f"{ui_server.url}/ui/login", allow_redirects=False).status_code == 303
        keys.append(hashlib.sha256(_cookie(s).partition(".")[0].encode()).hexdigest())
    stored = {row.id_sha256 for row in db.session_rows()}
    assert len(set(keys)) == 3 and keys[-1] in stored and not stored & set(keys[:-1])
