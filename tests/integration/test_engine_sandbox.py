"""The workflow engine's process boundary (real bubblewrap): whatever a crafted workflow
makes the engine do, the engine process cannot open the data directory's keys, reach the
network or the Docker socket, see the worker's environment, or write outside its run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from wes_server.engine_host import engine_command

PROBE = r"""
import json, os, socket, sys
results = {}
def attempt(name, fn):
    try:
        results[name] = "OK:" + str(fn())[:4000]
    except Exception as exc:
        results[name] = "DENIED:" + type(exc).__name__
data = sys.argv[1]
attempt("issuer_key", lambda: open(data + "/issuer/signing-key.pem").read())
attempt("list_data_dir", lambda: os.listdir(data))
attempt("signing_passphrase", lambda: open(data + "/signing/passphrase").read())
attempt("docker_socket", lambda: socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock"))
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2))
attempt("env", lambda: json.dumps(dict(os.environ)))
attempt("uid", lambda: os.getuid())
attempt("write_outside", lambda: open(data + "/planted", "w").write("x"))
attempt("write_run", lambda: open(sys.argv[3] + "/ok", "w").write("x"))
attempt("etc_passwd", lambda: open("/etc/passwd").read())
print(json.dumps(results))
"""


def test_engine_process_cannot_open_keys_network_or_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = "HG-ENGINE-SECRET-" + uuid.uuid4().hex
    data = tmp_path / "data"
    (data / "issuer").mkdir(parents=True, mode=0o700)
    (data / "signing").mkdir(mode=0o700)
    (data / "issuer" / "signing-key.pem").write_text(marker)
    (data / "signing" / "passphrase").write_text(marker)
    os.chmod(data / "issuer" / "signing-key.pem", 0o600)
    run = data / "wes" / "work" / "run-1"
    run.mkdir(parents=True)
    monkeypatch.setenv("HG_ENGINE_TEST_SECRET", marker)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    host, guest = socket.socketpair()
    try:
        cmd = engine_command(run, guest.fileno(), ["-c", PROBE, str(data), str(port), str(run)])
        proc = subprocess.run(cmd, pass_fds=(guest.fileno(),), env={}, capture_output=True, text=True, timeout=120)
    finally:
        host.close()
        guest.close()
        listener.close()
    assert proc.returncode == 0, proc.stderr
    assert marker not in proc.stdout + proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["list_data_dir"] == "OK:['wes']"  # only the path down to its own run exists
    for probe in ("issuer_key", "signing_passphrase", "docker_socket", "tcp", "etc_passwd"):
        assert results[probe].startswith("DENIED:"), (probe, results[probe])
    assert results["uid"] == "OK:65534"
    assert results["write_run"].startswith("OK:")  # its run directory is its one writable place
    env = json.loads(results["env"][3:])
    assert set(env) <= {"HOME", "LANG", "PATH", "PYTHONDONTWRITEBYTECODE", "HELIXGATE_ENGINE_FD", "PWD"}, env
    assert not (data / "planted").exists()  # it wrote into its own throw-away root, not the host


def test_worker_start_fails_clearly_without_the_engine_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helixgate.errors import ConfigurationError
    from wes_server import engine_host

    engine_host.check_available(tmp_path / "work")  # the real sandbox starts and imports cwltool
    monkeypatch.setattr(engine_host.shutil, "which", lambda name: None)
    with pytest.raises(ConfigurationError) as info:
        engine_host.check_available(tmp_path / "work")
    assert "bwrap" in info.value.message
