"""The web UI's relying party is generic OIDC: deployment A's UI signs users in at another
provider (here deployment B's built-in issuer, registered with ``oidc_clients``) through
discovery + authorization code + PKCE, and A's APIs accept B's tokens (``issuers``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import requests
from sqlalchemy import select

from helixgate.db import Database
from helixgate.login import RefreshTokenRow
from tests.fixtures.live import LiveServer, free_port, start_server, stop_server
from tests.fixtures.ui import login_form, make_ui_user

pytestmark = pytest.mark.integration


@pytest.fixture()
def two(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    port_a = free_port()
    clients = [{"client_id": "deployment-a-ui", "redirect_uris": [f"http://127.0.0.1:{port_a}/ui/callback"]}]
    b = start_server(tmp_path / "b", workers=0, extra_env={"HELIXGATE_OIDC_CLIENTS": json.dumps(clients)})
    try:
        a = start_server(
            tmp_path / "a",
            workers=0,
            port=port_a,
            extra_env={
                "HELIXGATE_UI_OIDC_ISSUER": b.url + "/oidc",
                "HELIXGATE_UI_CLIENT_ID": "deployment-a-ui",
                "HELIXGATE_ISSUERS": json.dumps([{"issuer": b.url + "/oidc", "audience": "helixgate"}]),
            },
        )
        try:
            yield a, b
        finally:
            stop_server(a)
    finally:
        stop_server(b)


def test_ui_login_at_an_external_provider(two: tuple[LiveServer, LiveServer]) -> None:
    a, b = two
    hana = make_ui_user(b, "hana", "viewer")  # her password lives at the provider
    a.user("hana", "analyst")  # her roles at deployment A
    s = requests.Session()
    first = s.get(f"{a.url}/ui/login", allow_redirects=False)
    assert first.headers["location"].startswith(b.url + "/oidc/authorize?")
    assert "client_id=deployment-a-ui" in first.headers["location"]
    form_page = s.get(first.headers["location"])
    assert "form-action 'self' " + a.url in form_page.headers["Content-Security-Policy"]
    form = login_form(form_page.text)
    r = s.post(
        b.url + form.action,
        data={**form.fields, "username": "hana", "password": hana.password},
        headers={"Origin": b.url},
    )
    assert r.status_code == 200 and r.url == a.url + "/ui/", (r.status_code, r.url, r.text[:300])
    assert 'id="signed-in-user"' in r.text and "analyst" in r.text  # A's roles, from A's /me
    # the provider's CSP allows only its own origin and A's as form targets; A's pages name B
    assert b.url in s.get(f"{a.url}/ui/").headers["Content-Security-Policy"]
    # logging out at A revokes the refresh token at B
    csrf = r.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    out = s.post(f"{a.url}/ui/logout", data={"csrf_token": csrf}, headers={"Origin": a.url})
    assert out.status_code == 200 and "You are signed out" in out.text
    provider_db = Database(f"sqlite:///{b.data_dir / 'helixgate.db'}")
    try:
        with provider_db.session() as db:
            rows = list(db.scalars(select(RefreshTokenRow).where(RefreshTokenRow.username == "hana")))
    finally:
        provider_db.dispose()
    assert rows and all(row.revoked_at is not None for row in rows)
    assert all(row.client_id == "deployment-a-ui" for row in rows)


def test_an_unregistered_redirect_is_refused_by_the_provider(two: tuple[LiveServer, LiveServer]) -> None:
    _, b = two
    r = requests.get(
        f"{b.url}/oidc/authorize",
        params={
            "response_type": "code",
            "client_id": "deployment-a-ui",
            "redirect_uri": "http://127.0.0.1:1/ui/callback",
            "code_challenge": "A" * 43,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_cli_login_at_an_external_provider(two: tuple[LiveServer, LiveServer], tmp_path: Path) -> None:
    """`helixgate login --issuer`: the device grant at another provider, tokens used at --url."""
    import re
    import subprocess

    from tests.fixtures.live import HELIXGATE, ROOT

    a, b = two
    ivan = make_ui_user(b, "ivan", "viewer")
    a.user("ivan", "auditor")
    env = {k: v for k, v in a.env.items() if k != "HELIXGATE_TOKEN"}
    env["HELIXGATE_CREDENTIALS"] = str(tmp_path / "credentials.json")
    proc = subprocess.Popen(
        [HELIXGATE, "login", "--issuer", b.url + "/oidc"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"open (\S+) in a browser and confirm the code (\S+)", line)
    assert match and match.group(1).startswith(b.url + "/oidc/device"), line
    s = requests.Session()
    form = login_form(s.get(match.group(1)).text)
    r = s.post(
        b.url + form.action,
        data={**form.fields, "username": "ivan", "password": ivan.password},
        headers={"Origin": b.url},
    )
    assert "Device approved" in r.text
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == f"logged in to {a.url} as ivan"
    who = subprocess.run([HELIXGATE, "whoami"], env=env, capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert who.returncode == 0 and who.stdout.strip() == "ivan (auditor)", who.stderr


def test_a_provider_account_unknown_here_is_refused_and_its_login_revoked(
    two: tuple[LiveServer, LiveServer],
) -> None:
    a, b = two
    kim = make_ui_user(b, "kim", "viewer")  # exists at the provider only
    s = requests.Session()
    form_page = s.get(f"{a.url}/ui/login")
    form = login_form(form_page.text)
    r = s.post(
        b.url + form.action,
        data={**form.fields, "username": "kim", "password": kim.password},
        headers={"Origin": b.url},
    )
    assert r.status_code == 400 and r.url.startswith(a.url + "/ui/callback")
    assert "HelixGate refused your account" in r.text and "not registered" in r.text
    assert s.get(f"{a.url}/ui/", allow_redirects=False).status_code == 302
    provider_db = Database(f"sqlite:///{b.data_dir / 'helixgate.db'}")
    try:
        with provider_db.session() as db:
            rows = list(db.scalars(select(RefreshTokenRow).where(RefreshTokenRow.username == "kim")))
    finally:
        provider_db.dispose()
    assert rows and all(row.revoked_at is not None for row in rows)
