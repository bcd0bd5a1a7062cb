"""The privileged side of the engine boundary: start the unprivileged engine process for
one run (``wes_server.engine``), answer its task requests after validating them, run each
task through the unchanged verification gate and container runner (``VerifiedJob.run``),
and hand back only status and checksums.

The engine runs under bubblewrap: every namespace unshared (no network), uid 65534 inside,
no capabilities, read-only system, Python and package directories, the run's working
directory as its only writable mount — no data directory (keys), no Docker socket, no
environment beyond a fixed few variables.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from schema_salad.ref_resolver import uri_file_path

from helixgate.errors import ConfigurationError, HelixGateError
from wes_server.cwl_job import VerifiedJob
from wes_server.engine import ENGINE_FD_ENV, Channel
from wes_server.execution import CONTAINER_OUTDIR, CONTAINER_STAGEDIR, RunExecution, WorkflowFailed
from wes_server.gate import GateRefusal
from wes_server.workflow_guard import inside

log = logging.getLogger("helixgate.executor")
MAX_COMMAND_BYTES = 1024 * 1024


class EngineFailed(HelixGateError):
    status = 422


class Ent(NamedTuple):
    key: str
    resolved: str
    target: str
    type: str
    staged: bool


class _Mapper:
    def __init__(self, entries: list[Ent]) -> None:
        self.entries = entries

    def items_exclude_children(self) -> list[tuple[str, Ent]]:
        return [(e.key, e) for e in self.entries]

    def items(self) -> list[tuple[str, Ent]]:
        return [(e.key, e) for e in self.entries]


# ------------------------------------------------------------------ the sandbox
def _python_paths() -> list[str]:
    """What the engine's interpreter needs to import cwltool and our two packages."""
    import helixgate
    import wes_server

    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    paths.update(str(Path(m.__file__ or "").parent) for m in (helixgate, wes_server))
    return sorted(paths)


def engine_command(workdir: Path, channel_fd: int, program: list[str] | None = None) -> list[str]:
    """The bubblewrap command line of the engine (``program`` replaces the engine module,
    for tests of the sandbox itself)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise ConfigurationError("the workflow engine needs 'bwrap' on PATH (bubblewrap)")
    cmd = [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--uid", "65534",
        "--gid", "65534",
        "--cap-drop", "ALL",
    ]  # fmt: skip
    for link in ("/lib", "/lib64", "/bin", "/sbin"):
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
    # mount points first: later binds (which may live under /tmp) go on top of them
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - the sandbox's own
    cmd += ["--ro-bind", "/usr", "/usr"]
    for path in _python_paths():
        if not path.startswith("/usr/") and inside(path, "/") and not inside(workdir, path):
            cmd += ["--ro-bind", path, path]
    cmd += [
        "--bind", str(workdir), str(workdir),
        "--chdir", str(workdir),
        "--setenv", "HOME", "/tmp",  # noqa: S108
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--setenv", ENGINE_FD_ENV, str(channel_fd),
        sys.executable, *(program or ["-m", "wes_server.engine"]),
    ]  # fmt: skip
    return cmd


def check_available(work_root: Path) -> None:
    """Worker start: the engine sandbox must start and import cwltool, or the worker does
    not start (a ConfigurationError saying what failed)."""
    import tempfile

    work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=work_root, prefix="engine-check-") as tmp:
        host, guest = socket.socketpair()
        try:
            cmd = engine_command(Path(tmp), guest.fileno(), ["-c", "import cwltool.main; print('engine-ok')"])
            proc = subprocess.run(  # noqa: S603 - fixed argv
                cmd, pass_fds=(guest.fileno(),), env={}, capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigurationError(f"the workflow engine sandbox (bubblewrap) cannot start: {exc}") from None
        finally:
            host.close()
            guest.close()
    if proc.returncode != 0 or "engine-ok" not in proc.stdout:
        raise ConfigurationError(
            f"the workflow engine sandbox (bubblewrap) does not work: exit {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-300:]}"
        )


# ------------------------------------------------------------------ validating requests
def _str(value: Any, what: str, cap: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > cap or "\x00" in value:
        raise EngineFailed(f"engine request: invalid {what}")
    return value


def _inside_run(path: Any, ex: RunExecution, what: str) -> str:
    p = _str(path, what)
    if not os.path.isabs(p) or not inside(p, ex.workdir):
        raise EngineFailed(f"engine request: {what} {p[:200]} is outside the run")
    return p


def _relative_name(value: Any, what: str) -> str | None:
    if value is None:
        return None
    name = _str(value, what, 512)
    norm = os.path.normpath(name)
    if os.path.isabs(name) or norm.startswith(".."):
        raise EngineFailed(f"engine request: {what} {name[:120]} leaves the output directory")
    return name


def hosted_job(ex: RunExecution, req: dict[str, Any]) -> HostedJob:
    """A ``VerifiedJob`` built from a validated engine request (cwltool already evaluated it)."""
    command = req.get("command_line")
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise EngineFailed("engine request: command_line must be a list of strings")
    if sum(len(c) for c in command) > MAX_COMMAND_BYTES:
        raise EngineFailed("engine request: command line too long")
    env = req.get("environment")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise EngineFailed("engine request: environment must map strings to strings")
    entries = []
    for item in req.get("inputs") or []:
        key, resolved, target, kind, staged = item
        key = _str(key, "input", 1 << 20)
        if staged and kind in ("File", "Directory"):
            resolved = _inside_run(resolved, ex, "input")
            if key.startswith("file://"):
                _inside_run(uri_file_path(key), ex, "input")
        entries.append(
            Ent(key, _str(resolved, "input", 1 << 20), _str(target, "input target"), _str(kind, "type"), bool(staged))
        )
    generated = []
    for item in req.get("generated") or []:
        key, resolved, target, kind, staged = item
        generated.append(
            Ent(
                _str(key, "InitialWorkDir", 1 << 20),
                _str(resolved, "InitialWorkDir", 64 << 20),
                _str(target, "target"),
                _str(kind, "type"),
                bool(staged),
            )
        )
    outdir = _inside_run(req.get("outdir"), ex, "output directory")
    if not inside(outdir, ex.workdir / "jobs"):
        raise EngineFailed("engine request: output directory outside the run's job area")
    tmpdir = _inside_run(req.get("tmpdir"), ex, "temporary directory")
    res = req.get("resources") or {}
    timelimit = req.get("timelimit")
    image = _str(req.get("image") or "", "image reference", 1024)
    if not image:
        raise EngineFailed("engine request: the task names no container image")

    job = HostedJob.__new__(HostedJob)  # no JobBase.__init__: there is no cwltool builder here
    job.execution = ex
    job.name = _str(req.get("name"), "name", 256)
    job.command_line = command
    job.environment = dict(env)
    job._docker = {"class": "DockerRequirement", "dockerPull": image}
    job.pathmapper = _Mapper(entries)  # type: ignore[assignment]  # the two methods the gate uses
    job.generatemapper = _Mapper(generated) if generated else None  # type: ignore[assignment]
    job.outdir = outdir
    job.tmpdir = tmpdir
    stdin = req.get("stdin")
    job.stdin = None if stdin is None else _str(stdin, "stdin")  # the gate refuses stdin redirection
    job.stdout = _relative_name(req.get("stdout"), "stdout")
    job.stderr = _relative_name(req.get("stderr"), "stderr")
    job.timelimit = int(timelimit) if isinstance(timelimit, (int, float)) and timelimit > 0 else None
    job.networkaccess = bool(req.get("networkaccess"))
    job.successCodes = [int(c) for c in req.get("success_codes") or []]
    job.temporaryFailCodes = [int(c) for c in req.get("temporary_fail_codes") or []]
    job.builder = SimpleNamespace(  # type: ignore[assignment]  # resources and outdir only
        resources={"cores": float(res.get("cores", 1) or 1), "ram": float(res.get("ram", 256) or 256)},
        outdir=_str(req.get("builder_outdir") or CONTAINER_OUTDIR, "container output directory"),
    )
    job.produced = []
    job.result = ("permanentFail", 0)
    job.output_callback = lambda _outputs, status: setattr(job, "result", (status, job.result[1]))
    return job


class HostedJob(VerifiedJob):
    """The worker's half of a task: everything cwltool-side is data from the request; the
    gate, staging, container run and output hashing are ``VerifiedJob.run`` unchanged."""

    _docker: dict[str, Any]
    produced: list[dict[str, Any]]
    result: tuple[str, int]

    def get_requirement(self, feature: str) -> tuple[Any, bool]:
        return (self._docker, True) if feature == "DockerRequirement" else (None, False)

    def _setup(self, runtimeContext: Any) -> None:  # noqa: N803 - cwltool's name
        os.makedirs(self.outdir, exist_ok=True)

    def prepare_environment(self, runtimeContext: Any, envVarReq: Any) -> None:  # noqa: N803
        pass  # evaluated by the engine; sent with the request

    def _env_requirement(self) -> dict[str, str]:
        return {}

    def _record_outputs(self, task_id: str) -> list[dict[str, Any]]:
        self.produced = super()._record_outputs(task_id)
        return self.produced

    def _status(self, rcode: int, result: Any) -> str:
        status = super()._status(rcode, result)
        self.result = (status, rcode)
        return status

    def collect_outputs(self, outdir: str, rcode: int) -> dict[str, Any]:
        return {}  # the engine collects (globs, outputEval) from the checksummed files


# ------------------------------------------------------------------ one run
def run_in_engine(ex: RunExecution, main: Path, job_order: dict[str, Any]) -> tuple[Any, str]:
    settings = ex.settings
    host, guest = socket.socketpair()
    guest_fd = guest.fileno()
    cmd = engine_command(ex.workdir, guest_fd)
    stderr_path = ex.workdir / "engine.log"
    with open(stderr_path, "wb") as errlog:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=errlog,
            stderr=errlog,
            pass_fds=(guest_fd,),
            env={},
        )
    guest.close()
    channel = Channel(host)
    # cwltool schedules by resources; a misbehaving engine still cannot start unbounded tasks
    slots = threading.BoundedSemaphore(max(2, 2 * (os.cpu_count() or 1)))
    known = {path: rec.sha256 for path, rec in ex.registry.items()}
    try:
        channel.send(
            {
                "op": "init",
                "workdir": str(ex.workdir),
                "main": str(main),
                "job_order": job_order,
                "checksums": known,
                "expression_time_limit": settings.expression_time_limit,
                "expression_memory_mib": settings.expression_memory_mib,
                "container_outdir": CONTAINER_OUTDIR,
                "container_stagedir": CONTAINER_STAGEDIR,
            }
        )
        while True:
            msg = channel.recv()
            if msg is None:
                log.warning("engine of run %s ended without a result: %s", ex.run.id, _tail(stderr_path))
                raise EngineFailed("the workflow engine ended without a result")
            op = msg.get("op")
            if op == "refused":
                ex.refusals.add(str(msg.get("reference"))[:300], str(msg.get("reason"))[:300])
            elif op == "task":
                slots.acquire()
                threading.Thread(target=_serve_task, args=(ex, channel, msg, slots), daemon=True).start()
            elif op == "done":
                return _done(msg)
            else:
                raise EngineFailed(f"engine sent an unknown message {str(op)[:40]!r}")
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise EngineFailed(f"the workflow engine channel failed: {type(exc).__name__}") from None
    finally:
        host.close()
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("engine of run %s did not exit", ex.run.id)


def _tail(path: Path, cap: int = 2000) -> str:
    try:
        return path.read_bytes()[-cap:].decode("utf-8", "replace")
    except OSError:
        return ""


def _done(msg: dict[str, Any]) -> tuple[Any, str]:
    if msg.get("refused"):
        raise GateRefusal(str(msg["refused"])[:4000])
    if msg.get("error"):
        raise WorkflowFailed(str(msg["error"]))
    return msg.get("outputs"), str(msg.get("status") or "permanentFail")


def _serve_task(ex: RunExecution, channel: Channel, msg: dict[str, Any], slots: threading.BoundedSemaphore) -> None:
    try:
        _answer_task(ex, channel, msg)
    finally:
        slots.release()


def _answer_task(ex: RunExecution, channel: Channel, msg: dict[str, Any]) -> None:
    rid = msg.get("id")
    reply: dict[str, Any] = {"op": "result", "id": rid, "status": "permanentFail"}
    try:
        job = hosted_job(ex, msg.get("job") or {})
        job.run(SimpleNamespace(workflow_eval_lock=threading.Lock()))
        status, rcode = job.result
        reply.update(status=status, exit_code=rcode, produced=job.produced if status == "success" else [])
    except EngineFailed as exc:
        ex.refusals.add(f"task request {str((msg.get('job') or {}).get('name'))[:80]}", exc.message)
    except Exception:  # never leave the engine waiting
        log.exception("run %s: serving a task request failed", ex.run.id)
    try:
        channel.send(reply)
    except OSError:
        pass
