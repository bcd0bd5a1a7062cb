"""The workflow engine process: cwltool's evaluation of one run, unprivileged.

Started by the worker (``wes_server.engine_host``) inside a bubblewrap sandbox: no network,
no data directory, no Docker socket, no credentials; the run's working directory is its only
writable mount. It loads the workflow with the restricted loader, evaluates it (expressions
in the nested node sandbox, files through the confined file system) and, for every task,
sends a request over its channel (an inherited socket, JSON lines) to the worker, which validates it, runs
the verification gate and the container, and answers with the task's status and the
checksums of what it produced. The engine vouches for nothing: the worker keeps the
checksum registry and publishes outputs only from it.

Only ``cwltool``, ``wes_server.workflow_guard`` and ``wes_server.jsbox`` are imported here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ENGINE_FD_ENV = "HELIXGATE_ENGINE_FD"  # the inherited socket to the worker
MAX_MESSAGE = 64 * 1024 * 1024


class Channel:
    """JSON lines over a socket; replies are matched to requests by id."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self._send_lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=str) + "\n").encode()
        with self._send_lock:
            self.sock.sendall(data)

    def recv(self) -> dict[str, Any] | None:
        line = self.reader.readline(MAX_MESSAGE)
        if not line:
            return None
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("channel message is not an object")
        return value

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            rid = self._next
            event, box = self._waiting[rid] = (threading.Event(), [])
        self.send({**message, "id": rid})
        event.wait()
        return dict(box[0]) if box else {"status": "permanentFail", "error": "the worker went away"}

    def dispatch_replies(self) -> None:
        """Reader loop (a thread): route each reply to its waiting request."""
        while True:
            msg = self.recv()
            if msg is None:
                break
            entry = self._waiting.pop(int(msg.get("id", -1)), None)
            if entry is not None:
                entry[1].append(msg)
                entry[0].set()
        for event, _ in list(self._waiting.values()):
            event.set()


def _job_request(job: Any) -> dict[str, Any]:
    """What the worker needs to run one task (everything cwltool evaluated is data here)."""
    docker_req, _ = job.get_requirement("DockerRequirement")
    reference = str((docker_req or {}).get("dockerPull") or (docker_req or {}).get("dockerImageId") or "")
    # the key is the declared location: the gate reads inputs there, never through a symlink
    inputs = [
        [key, ent.resolved, ent.target, ent.type, bool(ent.staged)]
        for key, ent in job.pathmapper.items_exclude_children()
    ]
    generated = []
    if job.generatemapper is not None:
        generated = [[k, ent.resolved, ent.target, ent.type, bool(ent.staged)] for k, ent in job.generatemapper.items()]
    r = job.builder.resources
    return {
        "name": job.name,
        "image": reference,
        "command_line": [str(c) for c in job.command_line],
        "environment": {str(k): str(v) for k, v in job.environment.items()},
        "inputs": inputs,
        "generated": generated,
        "outdir": job.outdir,
        "tmpdir": job.tmpdir,
        "builder_outdir": job.builder.outdir,
        "stdin": job.stdin,
        "stdout": job.stdout,
        "stderr": job.stderr,
        "resources": {"cores": r.get("cores", 1), "ram": r.get("ram", 256)},
        "timelimit": job.timelimit,
        "networkaccess": bool(job.networkaccess),
        "success_codes": list(job.successCodes or []),
        "temporary_fail_codes": list(job.temporaryFailCodes or []),
    }


def run_engine(channel: Channel) -> None:
    from cwltool.command_line_tool import CommandLineTool
    from cwltool.context import RuntimeContext
    from cwltool.errors import WorkflowException
    from cwltool.executors import MultithreadedJobExecutor
    from cwltool.job import JobBase
    from cwltool.process import shortname
    from cwltool.workflow import default_make_tool
    from schema_salad.exceptions import ValidationException

    from helixgate.errors import BadRequest
    from wes_server import jsbox
    from wes_server.workflow_guard import Refusals, fs_access_factory, load_restricted

    init = channel.recv()
    if init is None or init.get("op") != "init":
        raise SystemExit("engine: no init message")
    threading.Thread(target=channel.dispatch_replies, daemon=True).start()
    workdir = Path(init["workdir"])
    checksums: dict[str, str] = {os.path.realpath(k): v for k, v in init["checksums"].items()}
    checksum_lock = threading.Lock()

    def checksum_of(path: str) -> str | None:
        with checksum_lock:
            return checksums.get(os.path.realpath(path))

    refusals = Refusals(lambda ref, why: channel.send({"op": "refused", "reference": ref, "reason": why}))
    jsbox.install(
        SimpleNamespace(
            expression_time_limit=init["expression_time_limit"], expression_memory_mib=init["expression_memory_mib"]
        )
    )

    class RemoteJob(JobBase):
        """A task: evaluated here, executed by the worker after its gate."""

        def _required_env(self) -> dict[str, str]:
            return {"HOME": self.builder.outdir, "TMPDIR": "/tmp"}  # noqa: S108 - inside the container

        def run(self, runtimeContext: Any, tmpdir_lock: threading.Lock | None = None) -> None:  # noqa: N803
            status, outputs = "permanentFail", {}
            try:
                os.makedirs(self.tmpdir, exist_ok=True)
                self._setup(runtimeContext)
                req, _ = self.get_requirement("EnvVarRequirement")
                defs: list[Any] = list(req.get("envDef", [])) if req else []  # type: ignore[arg-type]
                env = {str(e["envName"]): str(self.builder.do_eval(e["envValue"])) for e in defs}
                self.prepare_environment(runtimeContext, env)
                reply = channel.request({"op": "task", "job": _job_request(self)})
                with checksum_lock:
                    for item in reply.get("produced") or []:
                        checksums[os.path.realpath(os.path.join(self.outdir, item["path"]))] = item["sha256"]
                status = str(reply.get("status") or "permanentFail")
                if status == "success":
                    outputs = dict(self.collect_outputs(self.outdir, int(reply.get("exit_code") or 0)))
            except WorkflowException as exc:
                logging.getLogger("helixgate.engine").error("task %s: %s", self.name, exc)
                status = "permanentFail"
            if runtimeContext.workflow_eval_lock is None:
                raise WorkflowException("runtimeContext.workflow_eval_lock must not be None")
            if self.output_callback:
                with runtimeContext.workflow_eval_lock:
                    self.output_callback(outputs, status)

    class RemoteCommandLineTool(CommandLineTool):
        def make_job_runner(self, runtimeContext: Any) -> type[JobBase]:  # noqa: N803
            docker_req, _ = self.get_requirement("DockerRequirement")
            if docker_req is None:
                raise WorkflowException(
                    f"{self.tool.get('id', 'tool')}: every task must run in a signed container "
                    "(add a DockerRequirement naming a TRS-published image)"
                )
            return RemoteJob

    def make_tool(toolpath_object: Any, loading_context: Any) -> Any:
        if isinstance(toolpath_object, MutableMapping) and toolpath_object.get("class") == "CommandLineTool":
            return RemoteCommandLineTool(toolpath_object, loading_context)  # type: ignore[arg-type]
        return default_make_tool(toolpath_object, loading_context)

    main = Path(init["main"])
    try:
        tool = load_restricted(main, workdir / "attachments", refusals, make_tool)
    except BadRequest as exc:
        channel.send({"op": "done", "refused": exc.message})
        return
    except (WorkflowException, ValidationException) as exc:
        channel.send({"op": "done", "error": str(exc)})
        return
    jobs_dir = workdir / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    runtime = RuntimeContext(
        {
            "basedir": str(main.parent),
            "outdir": None,
            "tmpdir_prefix": str(jobs_dir / "tmp"),
            "tmp_outdir_prefix": str(jobs_dir / "out"),
            "stagedir": str(jobs_dir / "stage"),
            "use_container": True,
            "docker_outdir": init["container_outdir"],
            "docker_stagedir": init["container_stagedir"],
            "docker_tmpdir": "/tmp",  # noqa: S108 - a path inside the container (tmpfs)
            "rm_tmpdir": False,
            "move_outputs": "leave",
            "compute_checksum": False,
            "on_error": "stop",
            "make_fs_access": fs_access_factory((workdir,), checksum_of, refusals),
            "eval_timeout": float(init["expression_time_limit"]),
        }
    )
    order = {shortname(k): v for k, v in init["job_order"].items() if k != "id"}
    try:
        outputs, status = MultithreadedJobExecutor()(tool, order, runtime)
    except (WorkflowException, ValidationException) as exc:
        channel.send({"op": "done", "error": str(exc)})
        return
    channel.send({"op": "done", "outputs": outputs, "status": status})


def main() -> int:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    logging.getLogger("cwltool").setLevel(logging.ERROR)
    logging.getLogger("salad").setLevel(logging.ERROR)
    channel = Channel(socket.socket(fileno=int(os.environ[ENGINE_FD_ENV])))
    try:
        run_engine(channel)
    except Exception as exc:  # the worker reports it; the traceback stays in the engine's log
        logging.getLogger("helixgate.engine").exception("engine failed")
        try:
            channel.send({"op": "done", "error": f"the workflow engine failed: {type(exc).__name__}: {exc}"})
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
