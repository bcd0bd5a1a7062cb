"""The privileged side of the engine boundary: start the unprivileged engine process for
one run (``wes_server.engine`` for CWL, ``wes_server.wdl_engine`` for WDL), answer its task
requests after validating them -- one language-neutral request whatever the engine
(``wes_server.tasks``: ``parse_task_request`` -> ``run_task``: the verification gate, then
the container runner) -- and hand back only status and checksums.

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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helixgate.errors import ConfigurationError, HelixGateError
from wes_server.channel import ENGINE_FD_ENV, Channel
from wes_server.execution import RunExecution, WorkflowFailed
from wes_server.gate import GateRefusal
from wes_server.tasks import EngineFailed, parse_task_request, run_task
from wes_server.workflow_guard import inside

log = logging.getLogger("helixgate.executor")
CWL_ENGINE = ["-m", "wes_server.engine"]
WDL_ENGINE = ["-m", "wes_server.wdl_engine"]
# a request the engine may make besides tasks: op -> handler(execution, message) -> reply fields
Handler = Callable[[RunExecution, dict[str, Any]], dict[str, Any]]


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
    """The bubblewrap command line of an engine process: ``program`` is the interpreter's
    arguments (``CWL_ENGINE``, the default, or ``WDL_ENGINE``; tests of the sandbox pass their own)."""
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
        sys.executable, *(program or CWL_ENGINE),
    ]  # fmt: skip
    return cmd


def check_available(work_root: Path) -> None:
    """Worker start: the engine sandbox must start and import cwltool and miniwdl, or the
    worker does not start (a ConfigurationError saying what failed)."""
    import tempfile

    work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=work_root, prefix="engine-check-") as tmp:
        host, guest = socket.socketpair()
        try:
            probe = "import cwltool.main, WDL.runtime; print('engine-ok')"
            cmd = engine_command(Path(tmp), guest.fileno(), ["-c", probe])
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


# ------------------------------------------------------------------ one run
def run_in_engine(
    ex: RunExecution,
    init: dict[str, Any],
    program: list[str] | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> tuple[Any, str]:
    """Start the engine ``program`` in the sandbox for this run, send it ``init``, and serve
    its requests until it is done: ``task`` (any language: ``wes_server.tasks``), ``refused``
    (a reference its restricted loader refused: a security event) and the ``handlers`` given
    (e.g. WDL's ``download`` of a drs:// input). Returns (outputs, status)."""
    host, guest = socket.socketpair()
    guest_fd = guest.fileno()
    cmd = engine_command(ex.workdir, guest_fd, program)
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
    # the engine schedules by resources; a misbehaving engine still cannot start unbounded tasks
    slots = threading.BoundedSemaphore(max(2, 2 * (os.cpu_count() or 1)))
    try:
        channel.send({"op": "init", **init})
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
            elif isinstance(op, str) and handlers and op in handlers:
                threading.Thread(target=_serve, args=(ex, channel, msg, handlers[op]), daemon=True).start()
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
    """One task request, whatever the engine's language: validated, gated, run, answered."""
    reply: dict[str, Any] = {"op": "result", "id": msg.get("id"), "status": "permanentFail"}
    task = msg.get("task")
    try:
        reply.update(run_task(ex, parse_task_request(ex, task)).as_reply())
    except EngineFailed as exc:
        name = str(task.get("name") if isinstance(task, dict) else None)[:80]
        ex.refusals.add(f"task request {name}", exc.message)
    except Exception:  # never leave the engine waiting
        log.exception("run %s: serving a task request failed", ex.run.id)
    _reply(channel, reply)


def _serve(ex: RunExecution, channel: Channel, msg: dict[str, Any], handler: Handler) -> None:
    reply: dict[str, Any] = {"op": "result", "id": msg.get("id")}
    try:
        reply.update(handler(ex, msg))
    except HelixGateError as exc:
        reply.update(error=exc.message[:2000])
    except Exception:  # never leave the engine waiting
        log.exception("run %s: serving a %s request failed", ex.run.id, str(msg.get("op"))[:40])
        reply.update(error="the worker could not serve this request")
    _reply(channel, reply)


def _reply(channel: Channel, reply: dict[str, Any]) -> None:
    try:
        channel.send(reply)
    except OSError:
        pass
