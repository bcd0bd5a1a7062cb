"""Key separation (#14 item 4) on the real stack: the workers of `serve all` run in their own
process that cannot open any key of the platform, and still complete verified runs; key files
are private (0600 in 0700 directories)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.e2e.conftest import World

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# a secret in the API process's environment (one of those never passed to workers)
SECRET_ENV_VALUE = "hgsc1." + "f" * 32 + "." + "S" * 43


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _worker_pid(server: Any) -> int:
    """serve all -> bwrap -> python -m helixgate_app.worker_process"""
    for child in _children(server.process.pid):
        for grandchild in [child, *_children(child)]:
            if b"helixgate_app.worker_process" in Path(f"/proc/{grandchild}/cmdline").read_bytes():
                if b"bwrap" not in Path(f"/proc/{grandchild}/cmdline").read_bytes().split(b"\0")[0]:
                    return grandchild
    raise AssertionError(f"no worker process under the server:\n{server.log()[-2000:]}")


def _key_files(data_dir: Path) -> list[Path]:
    keys = [
        data_dir / "issuer" / "signing-key.pem",
        data_dir / "drs" / "keyring.json",
        data_dir / "drs" / "url-signing.key",
        data_dir / "audit" / "audit-ed25519.pem",
    ]
    sealed = sorted((data_dir / "signing").glob("*.key.json"))
    assert sealed, sorted(os.listdir(data_dir / "signing"))
    return [*keys, data_dir / "signing" / "passphrase", *sealed]


PROBE = r"""
import os, sys
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as fh:
            print("READ", path, len(fh.read()))
    except OSError as exc:
        print("DENIED", path, type(exc).__name__)
"""


def _probe_in_sandbox(worker: int, paths: list[str]) -> list[str]:
    """Open ``paths`` from a process that joins the worker's user and mount namespaces."""
    r = subprocess.run(
        ["nsenter", "-t", str(worker), "-U", "-m", "--preserve-credentials", sys.executable, "-c", PROBE, *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_serve_all_workers_cannot_open_any_key_and_runs_still_complete(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(extra_env={"HELIXGATE_SERVICE_CREDENTIAL": SECRET_ENV_VALUE})
    server = world.server
    obj = world.steward.upload(b"b\na\nb\n", name="t.txt", dataset_id=world.dataset_id)
    run_id = world.analyst.submit_run(
        f"trs://{world.drs_host}/{world.tool_id}/{world.version_id}",
        {"text": {"class": "File", "location": world.drs_uri(obj["id"])}},
    )
    assert world.analyst.wait(run_id, timeout=300) == "COMPLETE", (world.analyst.run_log(run_id), server.log()[-3000:])

    data_dir = server.data_dir.resolve()
    keys = _key_files(data_dir)
    # every key exists on the host, private to its owner
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700, key.parent

    worker = _worker_pid(server)
    api = server.process.pid
    # the worker lives in its own user namespace
    assert os.readlink(f"/proc/{worker}/ns/user") != os.readlink(f"/proc/{api}/ns/user")
    # its view of the file system has no key (the key directories are empty there)
    for key in keys:
        assert not Path(f"/proc/{worker}/root{key}").exists(), key
        assert os.listdir(f"/proc/{worker}/root{key.parent}") == []
    # a process in the worker's sandbox cannot open them, nor reach them through the API
    # process, nor read the API process's environment
    paths = [str(k) for k in keys] + [f"/proc/{api}/root{k}" for k in keys] + [f"/proc/{api}/environ"]
    lines = _probe_in_sandbox(worker, paths)
    assert len(lines) == len(paths)
    assert all(line.startswith("DENIED") for line in lines), lines
    # it cannot take the masks away: no CAP_SYS_ADMIN, not even in its bounding set (a program
    # it runs as root of its namespace cannot regain it), and in a namespace of its own making
    # the masks are locked
    cap_sys_admin = 1 << 21
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{worker}/status").read_text().splitlines() if ":\t" in line
    )
    assert not int(status["CapEff"], 16) & cap_sys_admin and not int(status["CapBnd"], 16) & cap_sys_admin
    as_worker = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"]
    for attempt in (
        ["umount", str(keys[0].parent)],
        ["unshare", "--user", "--map-root-user", "--mount", "umount", str(keys[0].parent)],
    ):
        r = subprocess.run(
            ["nsenter", "-t", str(worker), "-U", "-m", "--preserve-credentials", *as_worker, *attempt],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode != 0, (attempt, r.stdout, r.stderr)
    assert _probe_in_sandbox(worker, [str(keys[0])])[0].startswith("DENIED")
    # the secret environment of the API process is not the worker's
    environ = Path(f"/proc/{worker}/environ").read_bytes()
    assert SECRET_ENV_VALUE.encode() not in environ and b"HELIXGATE_SERVICE_CREDENTIAL" not in environ
    assert SECRET_ENV_VALUE.encode() in Path(f"/proc/{api}/environ").read_bytes()  # not a vacuous check
    # the worker's records (wes.run.end) joined the one chain, which still verifies
    verify = server.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
