"""serve all's worker process: what it is told (settings over a pipe, exactly as the parent
resolved them) and what its sandbox hides (every key directory, the TLS key)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helixgate.config import load_settings
from helixgate_app.worker_process import (
    KEY_DIRS,
    _spawn_in_identity_userns,
    sandbox_command,
    settings_from_json,
    settings_to_json,
)


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


@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the sandbox gets its own user namespace from bwrap")
def test_the_identity_namespace_starts_from_a_process_with_many_open_files(tmp_path: Path) -> None:
    # POSIX sh redirects only descriptors 0-9: the start-up pipe must work at any number
    # (the demo and busy servers hold dozens of files open)
    held = [open(tmp_path / f"f{i}", "w") for i in range(24)]  # noqa: SIM115
    try:
        proc = _spawn_in_identity_userns(
            ["/bin/sh", "-c", "cat /proc/self/uid_map; cat >/dev/null"], {"PATH": "/usr/bin:/bin"}
        )
        out, _ = proc.communicate(b"", timeout=30)
    finally:
        for f in held:
            f.close()
    assert proc.returncode == 0
    assert out.split() == [b"0", b"0", b"4294967295"]  # every uid mapped to itself
