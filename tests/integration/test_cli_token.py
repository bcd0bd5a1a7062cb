"""``helixgate token issue`` with real processes: it finds the server's identity exactly as
``helixgate serve`` does (settings file, environment, server options), never creates key
material, and mints tokens only for registered, active users."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import requests

from tests.fixtures.live import HELIXGATE, ROOT, LiveServer

pytestmark = pytest.mark.integration


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No HELIXGATE_* settings and a HOME of our own: only what the test gives counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIXGATE_")}
    env.pop("XDG_DATA_HOME", None)
    return {**env, "HOME": str(home), **extra}


def _issue(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HELIXGATE, "token", "issue", *args], env=env, capture_output=True, text=True, timeout=120, cwd=str(ROOT)
    )


def _me(server: LiveServer, token: str) -> requests.Response:
    return requests.get(f"{server.url}/helixgate/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")) if root.exists() else []


def test_no_server_key_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    r = _issue(_clean_env(home), "--user", "admin")  # the default data directory under HOME
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("helixgate: error: no built-in issuer key in "), r.stderr
    assert str(home / ".local" / "share" / "helixgate" / "issuer") in r.stderr
    assert _files(home) == [], "token issue must not create key material (or anything) under HOME"
    data = tmp_path / "elsewhere"
    r = _issue(_clean_env(home), "--user", "admin", "--data-dir", str(data))
    assert r.returncode == 1 and "no built-in issuer key in " + str(data / "issuer") in r.stderr, r.stderr
    assert not data.exists()


def test_same_identity_as_serve_from_file_environment_and_options(
    live_server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server_factory()
    home = tmp_path / "home"
    home.mkdir()
    # 1. the environment the server was started with
    env_token = _issue(server.env, "--user", "admin")
    assert env_token.returncode == 0, env_token.stderr
    assert _me(server, env_token.stdout.strip()).status_code == 200
    # 2. a settings file only (what `helixgate serve --config` would read)
    config = tmp_path / "helixgate.toml"
    config.write_text(f'data_dir = "{server.data_dir}"\nport = {server.port}\nhost = "127.0.0.1"\n')
    by_file = _issue(_clean_env(home), "--user", "admin", "--config", str(config))
    assert by_file.returncode == 0, by_file.stderr
    assert _me(server, by_file.stdout.strip()).status_code == 200
    # 3. the server options, as given to `helixgate serve --port`
    by_option = _issue(
        _clean_env(home), "--user", "admin", "--data-dir", str(server.data_dir), "--port", str(server.port)
    )
    assert by_option.returncode == 0, by_option.stderr
    assert _me(server, by_option.stdout.strip()).status_code == 200
    # the same data directory without the server's port names another issuer: refused, saying why
    other = _issue(_clean_env(home), "--user", "admin", "--data-dir", str(server.data_dir))
    assert other.returncode == 1 and other.stdout == ""
    assert (
        "helixgate: error: these settings name the issuer http://127.0.0.1:8080/oidc, but the server on "
        f"{server.data_dir} serves http://127.0.0.1:{server.port}/oidc" in other.stderr
    ), other.stderr
    assert _files(home) == []


def test_unknown_and_inactive_users_are_refused(live_server_factory: Callable[..., LiveServer]) -> None:
    server = live_server_factory()
    unknown = _issue(server.env, "--user", "mallory")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip() == "helixgate: error: unknown user 'mallory': register it first (helixgate users add)"
    added = server.cli("users", "add", "bob", "--role", "analyst", token=server.admin_token())
    assert added.returncode == 0, added.stderr
    inactive = _issue(server.env, "--user", "bob")
    assert inactive.returncode == 1 and inactive.stdout == ""
    assert "helixgate: error: user 'bob' is inactive" in inactive.stderr, inactive.stderr
    assert server.cli("users", "activate", "bob", token=server.admin_token()).returncode == 0
    active = _issue(server.env, "--user", "bob")
    assert active.returncode == 0, active.stderr
    assert _me(server, active.stdout.strip()).status_code == 200
    assert server.cli("users", "deactivate", "bob", token=server.admin_token()).returncode == 0
    assert _issue(server.env, "--user", "bob").returncode == 1
