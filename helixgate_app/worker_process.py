"""The workers of ``helixgate serve all`` in their own process, which holds no key.

The API process (the core: issuer key, audit checkpoint key; TRS: signing key and passphrase;
DRS: master keys, URL-signing key) starts its workers as a child process under bubblewrap:

* the key directories of the data directory (``issuer``, ``signing``, ``drs``, ``audit``) are
  covered by empty tmpfs mounts, and the TLS key and sigstore token files by ``/dev/null``;
  the child has no CAP_SYS_ADMIN (not even in its bounding set), so it cannot unmount them, and
  in any user namespace it could create they are locked;
* its own user namespace also denies it ``/proc/<pid>/root``, ``environ`` and ``mem`` of every
  process outside it (the API process included), and ``/dev`` is a minimal one (no disks);
* the secret environment variables (signing passphrase, master key, URL-signing key) are not
  passed; settings and the service credential arrive on a pipe (stdin), not in the environment.

The child talks to DRS and TRS over HTTP like a split worker, with a service credential the
parent creates at start (stored hashed, revoked at stop) and exchanges at the core's token
endpoint; it shares the database (runs, queue, audit records without checkpoint key).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from helixgate.config import Settings, load_settings
from helixgate.errors import ConfigurationError
from helixgate.platform import Platform

log = logging.getLogger("helixgate.worker")

#: Directories of the data directory that hold keys: never visible to a worker process.
KEY_DIRS = ("issuer", "signing", "drs", "audit")
#: Environment variables holding secrets of the API process.
SECRET_ENV = (
    "HELIXGATE_SIGNING_PASSPHRASE",
    "HELIXGATE_MASTER_KEY",
    "HELIXGATE_MASTER_KEY_ID",
    "HELIXGATE_DRS_URL_SIGNING_KEY",
    "HELIXGATE_SERVICE_CREDENTIAL",
)


READY = "helixgate-worker-ready"
READY_TIMEOUT = 300.0  # the sandbox checks start cwltool and node: seconds, not minutes


def settings_to_json(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif f.name == "issuers":
            value = [dataclasses.asdict(i) for i in settings.issuers]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def settings_from_json(doc: dict[str, Any]) -> Settings:
    return load_settings(env={}, **doc)


def sandbox_command(settings: Settings, program: list[str], *, own_userns: bool = True) -> list[str]:
    """bubblewrap around ``program``: the host as it is, minus every key of the platform.

    ``own_userns``: bubblewrap creates the user namespace (one uid mapped: a non-root server);
    otherwise the caller already runs it in one (root: every uid mapped, see :class:`WorkerProcess`)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise ConfigurationError("serve all runs its workers under bubblewrap: 'bwrap' is not on PATH")
    cmd = [bwrap, "--bind", "/", "/", "--dev", "/dev"]
    if own_userns:
        cmd += ["--unshare-user", "--uid", str(os.getuid()), "--gid", str(os.getgid())]
    # without CAP_SYS_ADMIN it cannot unmount the masks below (they are its own namespace's
    # mounts); a nested namespace it could create would see them locked
    cmd += ["--cap-drop", "CAP_SYS_ADMIN", "--unshare-ipc", "--die-with-parent", "--new-session"]
    data_dir = settings.data_dir.resolve()
    for name in KEY_DIRS:
        cmd += ["--tmpfs", str(data_dir / name)]
    for secret_file in (settings.tls_key, settings.sigstore_token_file):
        if secret_file and os.path.exists(secret_file):
            cmd += ["--ro-bind", "/dev/null", os.path.realpath(secret_file)]
    return [*cmd, *program]


def _spawn_in_identity_userns(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Root: start ``cmd`` in a new user namespace that maps every uid and gid to itself (so
    the worker still gives task output directories to the task's uid), written by this process.

    The namespace is what locks the mounts bubblewrap adds (they cannot be undone from inside)
    and denies the child ``/proc/<pid>/root``/``environ``/``mem`` of every process outside it:
    it has no capability in the initial user namespace."""
    unshare = shutil.which("unshare")
    if not unshare:
        raise ConfigurationError("serve all runs its workers in a user namespace: 'unshare' is not on PATH")
    ready_r, ready_w = os.pipe()
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv
            # the pipe by its /proc path: POSIX sh redirects only descriptors 0-9 (`<&12` is a
            # syntax error in dash), and a busy process hands out higher ones
            [
                unshare,
                "--user",
                "--",
                "/bin/sh",
                "-c",
                f'read -r _ < /proc/self/fd/{ready_r} || exit 97; exec "$@"',
                "sh",
                *cmd,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=(ready_r,),
        )
    finally:
        os.close(ready_r)
    try:
        mine = os.readlink("/proc/self/ns/user")
        for _ in range(2000):  # until unshare(2) happened in the child (milliseconds)
            if os.readlink(f"/proc/{proc.pid}/ns/user") != mine:
                break
            if proc.poll() is not None:
                raise ConfigurationError(f"the worker process sandbox did not start (exit {proc.returncode})")
            threading.Event().wait(0.005)
        else:
            raise ConfigurationError("the worker process sandbox did not enter its user namespace")
        Path(f"/proc/{proc.pid}/uid_map").write_text("0 0 4294967295\n")
        Path(f"/proc/{proc.pid}/gid_map").write_text("0 0 4294967295\n")
        os.write(ready_w, b"go\n")
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    finally:
        os.close(ready_w)
    return proc


class WorkerProcess:
    """``serve all``'s workers: one sandboxed child process with ``concurrency`` slots,
    restarted if it dies. Same start/stop interface as :class:`wes_server.worker.WorkerPool`."""

    def __init__(self, platform: Platform, *, concurrency: int = 2, log_level: int = logging.INFO) -> None:
        self.log_level = log_level  # of the child's log lines on stderr
        self.platform = platform
        self.settings: Settings = platform.settings
        self.concurrency = concurrency
        self._proc: subprocess.Popen[bytes] | None = None
        self._credential_id: str | None = None
        self._credential: str | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        from helixgate.service_credentials import ServiceCredentials

        data_dir = self.settings.data_dir.resolve()
        for name in KEY_DIRS:
            # mount points of the masks; created here, by their owner, private
            path = data_dir / name
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)
        info, self._credential = ServiceCredentials(self.platform.db).create(
            self.settings.service_user, label=f"serve all worker process (api pid {os.getpid()})"
        )
        self._credential_id = info.id
        self.platform.audit.record(
            category="change",
            action="core.service_credential.create",
            outcome="success",
            actor=self.settings.service_user,
            service="core",
            target=info.id,
            details={"label": info.label},
        )
        self._spawn()
        # like the in-process pool: a worker that cannot start (no sandbox for the engine or
        # the expressions, no credential) stops `serve all` at start, saying why
        self._wait_ready()
        self._watcher = threading.Thread(target=self._watch, name="hg-worker-process", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        program = [sys.executable, "-m", "helixgate_app.worker_process"]
        if os.geteuid() == 0:
            proc = _spawn_in_identity_userns(sandbox_command(self.settings, program, own_userns=False), env)
        else:
            cmd = sandbox_command(self.settings, program)
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
            )
        assert proc.stdin is not None
        message = {
            "settings": settings_to_json(self.settings),
            "credential": self._credential,
            "concurrency": self.concurrency,
            "log_level": self.log_level,
        }
        try:
            proc.stdin.write(json.dumps(message).encode())
            proc.stdin.close()
        except OSError:
            pass  # it died at once: the watcher reports it
        self._proc = proc
        log.info("worker process %d started (%d slots, no keys)", proc.pid, self.concurrency)

    def _wait_ready(self) -> None:
        """Until the child says it is ready (on its stdout), exits, or READY_TIMEOUT passes."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        ready = False
        try:
            while not ready and select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                line = proc.stdout.readline()
                if not line:
                    break  # exited
                ready = line.strip() == READY.encode()
        finally:
            proc.stdout.close()
        if not ready:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait(10)
            raise ConfigurationError(f"the worker process did not start (exit {code}); its error is in the log above")

    def _watch(self) -> None:
        while not self._stop.is_set():
            proc = self._proc
            if proc is None:
                return
            try:
                code = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
            if self._stop.is_set():
                return
            log.error("worker process %d exited with %s; restarting it", proc.pid, code)
            if self._stop.wait(2.0):
                return
            self._spawn()
            try:
                self._wait_ready()
            except ConfigurationError as exc:
                log.error("%s", exc.message)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # the workers themselves, so they stop cleanly: bubblewrap would only kill them
            for pid in _children(proc.pid) or [proc.pid]:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._watcher is not None:
            self._watcher.join(5)
        if self._credential_id is not None:
            from helixgate.service_credentials import ServiceCredentials

            try:
                ServiceCredentials(self.platform.db).revoke(self._credential_id)
            except Exception:  # the database is gone: the secret died with the child anyway
                log.warning("could not revoke the worker process credential %s", self._credential_id)


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except (OSError, ValueError):
        return []


def drop_mount_capability() -> None:
    """Remove CAP_SYS_ADMIN from this process's bounding set (bubblewrap already removed it from
    the others): no program it runs, as root of its user namespace, can get it back to unmount
    the masks over the key directories."""
    import ctypes

    pr_capbset_drop, cap_sys_admin = 24, 21
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_capbset_drop, cap_sys_admin, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise ConfigurationError(f"the worker process cannot drop CAP_SYS_ADMIN: {os.strerror(err)}")


def main() -> int:
    """The child: read settings and credential from stdin, run the workers until SIGTERM."""
    drop_mount_capability()
    message = json.loads(sys.stdin.buffer.read() or b"{}")
    sys.stdin.close()
    logging.basicConfig(
        level=int(message.get("log_level", logging.INFO)),
        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
    )
    from helixgate_app.services import build_platform
    from wes_server.worker import WorkerPool

    settings = settings_from_json(message["settings"])
    platform = build_platform(
        settings, run_migrations=False, holds_keys=False, service_credential=message.get("credential") or None
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pool = WorkerPool(platform, concurrency=int(message.get("concurrency", 2)))
    try:
        pool.start()
        # ready: tell the parent on stdout, which from now on is stderr (the server log)
        sys.stdout.write(READY + "\n")
        sys.stdout.flush()
        os.dup2(2, 1)
        stop.wait()
    finally:
        pool.stop()
        platform.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
