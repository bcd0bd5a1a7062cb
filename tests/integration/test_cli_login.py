"""``helixgate login`` / ``logout`` against a live server: the device grant signs the CLI in,
tokens live in a 0600 cache file, expired access tokens are refreshed transparently (once,
even for concurrent processes, and across a long-running client's lifetime), and logout
revokes the refresh token."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from helixgate.client import ApiClient
from helixgate.oidc_client import RefreshingToken, TokenCache
from tests.fixtures.live import HELIXGATE, ROOT, LiveServer
from tests.fixtures.ui import UiUser, login_form, make_ui_user

pytestmark = pytest.mark.integration


def _env(server: LiveServer, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in server.env.items() if k not in ("HELIXGATE_TOKEN", "HELIXGATE_TOKEN_FILE")}
    return {**env, "HELIXGATE_CREDENTIALS": str(cache)}


def _cli(server: LiveServer, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HELIXGATE, *args], env=_env(server, cache), capture_output=True, text=True, timeout=120, cwd=str(ROOT)
    )


def _approve(user: UiUser, user_code: str) -> None:
    s = requests.Session()
    page = s.get(f"{user.server.url}/oidc/device", params={"user_code": user_code})
    form = login_form(page.text)
    r = s.post(
        user.server.url + form.action,
        data={**form.fields, "username": user.username, "password": user.password},
        headers={"Origin": user.server.url},
    )
    assert r.status_code == 200 and "Device approved" in r.text, r.text


def _login(user: UiUser, cache: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [HELIXGATE, "login"],
        env=_env(user.server, cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"open (\S+) in a browser and confirm the code ([A-Z]{4}-[A-Z]{4})", line)
    assert match, line
    assert match.group(1).startswith(user.server.url + "/oidc/device?user_code=")
    _approve(user, match.group(2))
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, line + err)


@pytest.fixture()
def dave(ui_server: LiveServer) -> UiUser:
    return make_ui_user(ui_server, "dave", "analyst")


def _cache(path: Path, server: LiveServer) -> dict[str, Any]:
    entry = json.loads(path.read_text())[server.url]
    assert isinstance(entry, dict)
    return entry


def _expire(path: Path, server: LiveServer) -> None:
    data = json.loads(path.read_text())
    data[server.url]["access_exp"] = 0
    path.write_text(json.dumps(data))


def test_login_caches_private_tokens_and_commands_use_them(dave: UiUser, tmp_path: Path) -> None:
    cache = tmp_path / "cfg" / "credentials.json"
    done = _login(dave, cache)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"logged in to {dave.server.url} as dave"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    entry = _cache(cache, dave.server)
    assert entry["refresh_token"] not in done.stdout + done.stderr
    assert entry["access_token"] not in done.stdout + done.stderr
    who = _cli(dave.server, cache, "whoami")
    assert who.returncode == 0 and who.stdout.strip() == "dave (analyst)", who.stderr

    # an expired access token is renewed on the next command, rotating the refresh token
    _expire(cache, dave.server)
    who = _cli(dave.server, cache, "whoami")
    assert who.returncode == 0, who.stderr
    renewed = _cache(cache, dave.server)
    assert renewed["refresh_token"] != entry["refresh_token"] and renewed["access_exp"] > 0

    # concurrent processes renew once: none presents a rotated token (which would end the login)
    _expire(cache, dave.server)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _cli(dave.server, cache, "whoami"), range(3)))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert _cli(dave.server, cache, "whoami").returncode == 0

    # a cache others can read is refused, not used
    cache.chmod(0o644)
    r = _cli(dave.server, cache, "whoami")
    assert r.returncode == 1 and "accessible by other users" in r.stderr
    cache.chmod(0o600)

    # logout revokes the refresh token at the issuer and forgets the tokens
    last = _cache(cache, dave.server)
    out = _cli(dave.server, cache, "logout")
    assert out.returncode == 0 and out.stdout.strip() == f"logged out of {dave.server.url}", out.stderr
    assert dave.server.url not in json.loads(cache.read_text())
    r = requests.post(
        f"{dave.server.url}/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": last["refresh_token"], "client_id": "helixgate-cli"},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = _cli(dave.server, cache, "whoami")
    assert r.returncode == 1 and "401" in r.stderr
    assert _cli(dave.server, cache, "logout").stdout.strip() == f"not logged in to {dave.server.url}"


def test_a_long_running_client_outlives_its_access_tokens(dave: UiUser, tmp_path: Path) -> None:
    """What `run wait` and `logs --follow` rely on: the client asks its token source before every
    request, and the source renews expired tokens (the clock here jumps past each expiry)."""
    cache_path = tmp_path / "credentials.json"
    assert _login(dave, cache_path).returncode == 0
    now = [time.time()]
    source = RefreshingToken(dave.server.url, TokenCache(cache_path), clock=lambda: now[0])
    client = ApiClient(dave.server.url, source)
    tokens = set()
    for _ in range(3):
        assert client.get_object("/helixgate/v1/me")["username"] == "dave"
        tokens.add(source())
        now[0] += 600  # far past the 5-minute access token
    assert len(tokens) == 3


def test_login_with_an_unknown_client_is_refused_clearly(ui_server: LiveServer, tmp_path: Path) -> None:
    r = _cli(ui_server, tmp_path / "c.json", "login", "--client-id", "evil")
    assert r.returncode == 1 and "invalid_client" in r.stderr
    assert not (tmp_path / "c.json").exists()


def test_set_password_checks_length_and_clear_removes_it(ui_server: LiveServer, tmp_path: Path) -> None:
    jan = make_ui_user(ui_server, "jan", "viewer")
    short = subprocess.run(
        [HELIXGATE, "users", "set-password", "jan", "--password-stdin"],
        input="short\n",
        env=ui_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert short.returncode == 1 and "10 to 1024 characters" in short.stderr and "short" not in short.stdout
    unknown = subprocess.run(
        [HELIXGATE, "users", "set-password", "nobody-here", "--password-stdin"],
        input="long-enough-password\n",
        env=ui_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert unknown.returncode == 1 and "user not found" in unknown.stderr
    cleared = subprocess.run(
        [HELIXGATE, "users", "set-password", "jan", "--clear"],
        env=ui_server.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert cleared.returncode == 0 and cleared.stdout.strip() == "password removed for jan"
    s = requests.Session()
    form = login_form(s.get(f"{ui_server.url}/ui/login").text)
    r = s.post(
        ui_server.url + form.action,
        data={**form.fields, "username": "jan", "password": jan.password},
        headers={"Origin": ui_server.url},
    )
    assert r.status_code == 401 and "Wrong username or password." in r.text
