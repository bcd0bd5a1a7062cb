"""The workflow engine process: cwltool's evaluation of one run, unprivileged.

Started by the worker (``wes_server.engine_host``) inside a bubblewrap sandbox: no network,
no data directory, no Docker socket, no credentials; the run's working directory is its only
writable mount. It loads the workflow with the restricted loader, evaluates it (expressions
in the nested node sandbox, files through the confined file system) and, for every task,
sends a request over its channel (an inherited socket, JSON lines) to the worker, which validates it, runs
the verification gate and the container, and answers with the task's status and the
checksums of what it produced. The engine vouches for nothing: the worker keeps the
checksum registry and publishes outputs only from it.

Only ``cwltool``, ``wes_server.workflow_guard``, ``wes_server.jsbox`` and the channel
(``wes_server.channel``) are imported here.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from wes_server.channel import ENGINE_FD_ENV, Channel


def _origin(key: str, resolved: str) -> str:
    """The local path an input was declared at (its ``file://`` location), before cwltool
    followed any symlink: the gate reads inputs there, never through a link; other keys
    (literals) map to what cwltool resolved."""
    if key.startswith("file://"):
        from schema_salad.ref_resolver import uri_file_path

        return str(uri_file_path(key))
    return resolved


def _task_request(job: Any) -> dict[str, Any]:
    """The language-neutral task request (``wes_server.tasks``) for one cwltool job:
    everything cwltool evaluated is data here."""
    docker_req, _ = job.get_requirement("DockerRequirement")
    reference = str((docker_req or {}).get("dockerPull") or (docker_req or {}).get("dockerImageId") or "")
    unsupported = None
    inputs = [
        {"kind": ent.type, "path": _origin(key, ent.resolved), "target": ent.target}
        for key, ent in job.pathmapper.items_exclude_children()
        if ent.staged and ent.type in ("File", "Directory")
    ]
    generated = []
    if job.generatemapper is not None:
        for _key, ent in job.generatemapper.items():
            if ent.type in ("CreateFile", "CreateWritableFile"):
                rel = os.path.relpath(ent.target, job.builder.outdir)
                generated.append({"path": rel, "content": str(ent.resolved)})
            elif ent.type in ("File", "WritableFile", "Directory", "WritableDirectory") and ent.staged:
                unsupported = "InitialWorkDir staging of existing files is not supported yet"
    if job.stdin:
        unsupported = "stdin redirection is not supported by the HelixGate executor"
    r = job.builder.resources
    return {
        "name": job.name,
        "image": reference,
        "command": [str(c) for c in job.command_line],
        "environment": {str(k): str(v) for k, v in job.environment.items()},
        "inputs": inputs,
        "generated": generated,
        "outdir": job.outdir,
        "workdir": job.builder.outdir,
        # CWL stdout/stderr captures are outputs, named inside the output directory
        "stdout": os.path.join(job.outdir, job.stdout) if job.stdout else None,
        "stderr": os.path.join(job.outdir, job.stderr) if job.stderr else None,
        "cores": r.get("cores", 1),
        "ram_mib": r.get("ram", 256),
        "time_limit": job.timelimit,
        "network": bool(job.networkaccess),
        "success_codes": [0, *(int(c) for c in job.successCodes or [])],
        "temporary_fail_codes": [int(c) for c in job.temporaryFailCodes or []],
        "unsupported": unsupported,
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
                reply = channel.request({"op": "task", "task": _task_request(self)})
                with checksum_lock:
                    for item in reply.get("produced") or []:
                        checksums[os.path.realpath(item["path"])] = item["sha256"]
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
