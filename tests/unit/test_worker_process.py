"""serve all's worker process: what it is told (settings over a pipe, exactly as the parent
resolved them) and what its sandbox hides (every key directory, the TLS key)."""

from __future__ import annotations

import json
from pathlib import Path

from helixgate.config import load_settings
from helixgate_app.worker_process import KEY_DIRS, sandbox_command, settings_from_json, settings_to_json


def test_settings_cross_the_pipe_unchanged(tmp_path: Path) -> None:
    settings = load_settings(
        env={},
        data_dir=str(tmp_path / "data"),
        issuers=json.dumps([{"issuer": "https://idp.example.org/realm", "audience": "hg", "algorithms": ["RS256"]}]),
        trusted_proxies="10.0.0.0/8,192.168.1.1",
        container_scope="hg-abc",
        lease_seconds=17,
    )
    wire = json.loads(json.dumps(settings_to_json(settings)))  # what actually crosses the pipe
    assert settings_from_json(wire) == settings


def test_the_sandbox_masks_every_key_directory_and_the_tls_key(tmp_path: Path) -> None:
    tls_key = tmp_path / "tls.key"
    tls_key.write_text("-----BEGIN PRIVATE KEY-----\n")
    cert = tmp_path / "tls.crt"
    cert.write_text("cert")
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), tls_key=str(tls_key), tls_cert=str(cert))
    cmd = sandbox_command(settings, ["python", "-m", "helixgate_app.worker_process"], own_userns=False)
    masked = {cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--tmpfs"}
    assert masked == {str((tmp_path / "data" / name).resolve()) for name in KEY_DIRS}
    assert ["--ro-bind", "/dev/null", str(tls_key.resolve())] == cmd[cmd.index(str(tls_key.resolve())) - 2 :][:3]
    assert "--unshare-user" not in cmd and "--die-with-parent" in cmd
    assert cmd[-3:] == ["python", "-m", "helixgate_app.worker_process"]
    assert "--unshare-user" in sandbox_command(settings, ["true"])  # a non-root server: bwrap makes the namespace
