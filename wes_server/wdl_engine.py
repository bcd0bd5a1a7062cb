"""The WDL engine process: miniwdl's evaluation of one run, unprivileged.

Started by the worker (``wes_server.engine_host.run_in_engine`` with ``WDL_ENGINE``) in the
same bubblewrap sandbox as cwltool: no network, no data directory, no Docker socket, no
credentials; the run's working directory is its only writable mount. miniwdl runs as a
library and reaches the outside world only through its own extension points, registered in
``setup.cfg``'s entry points and enabled by this module's configuration:

* container backend ``helixgate`` (``GatedTaskContainer``): a task's ``_run`` sends ONE
  language-neutral task request (``wes_server.tasks``) over the channel and waits for the
  worker's answer (exit code); the worker runs it through the verification gate and the
  hardened container. miniwdl then evaluates the task's outputs from the files the worker
  recorded; the engine vouches for nothing.
* file download ``drs`` (``drs_download``): a ``drs://`` File is fetched by the worker on the
  run owner's behalf through the DataPort, hashed and recorded; the engine gets a path inside
  the run. Every other URI scheme miniwdl would download (``http``, ``https``, ``ftp``, ``s3``,
  ``gs``) is refused (``refused_download``).

The documents are loaded with the same restricted loader as submission
(``helixgate.wdl_documents``: imports only among the run's own files) and the inputs checked
again (File values only ``drs://`` or the run's attached files). Imports: the standard
library, ``WDL`` (miniwdl), ``helixgate.wdl_documents`` and the channel.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import WDL
import WDL.runtime
import WDL.runtime.task
from WDL.runtime.error import Terminated
from WDL.runtime.task_container import TaskContainer

from helixgate.wdl_documents import WdlDocumentError, check_inputs, load_wdl, target_of
from wes_server.channel import ENGINE_FD_ENV, Channel

log = logging.getLogger("helixgate.wdl_engine")
BACKEND = "helixgate"
MAX_COMMAND = 120 * 1024  # one argv string (the kernel's MAX_ARG_STRLEN is 128 KiB)
# WDL commands are written for bash (miniwdl's default shell); images without it get POSIX sh
SHELL = 'if command -v bash >/dev/null 2>&1; then exec bash -c "$1"; fi; exec /bin/sh -c "$1"'

MAX_DOCUMENTS = 64 * 1024 * 1024
# set by run_engine before miniwdl starts: the channel and the worker's resource limits
_STATE: dict[str, Any] = {}


class GateRefused(Terminated):
    """The worker did not run the task (gate refusal, cancellation, malformed request): the
    run stops here. A ``Terminated`` so that miniwdl never retries it."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.args = (reason,)  # miniwdl's Terminated takes no message; the run log shows this one


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)]) == os.path.abspath(directory)


class GatedTaskContainer(TaskContainer):
    """miniwdl's container backend: every task goes to the worker's gate as a task request."""

    @classmethod
    def global_init(cls, cfg: Any, logger: logging.Logger) -> None:
        pass  # the worker owns the container engine

    @classmethod
    def detect_resource_limits(cls, cfg: Any, logger: logging.Logger) -> dict[str, int]:
        return dict(_STATE.get("limits") or {"cpu": 1, "mem_bytes": 1 << 30})

    def add_paths(self, host_paths: Any) -> None:
        """A task may only see files of its own run: a File value made at run time that names
        anything else (a host path the submission check could not see) is refused here, as a
        security event, before miniwdl looks at it."""
        paths = list(host_paths)
        workdir = str(_STATE["workdir"])
        for host_path in paths:
            if not _within(host_path.rstrip("/"), workdir):
                reason = "a WDL File may only name the run's own files (attached, downloaded or produced)"
                _STATE["channel"].send({"op": "refused", "reference": host_path[:300], "reason": reason})
                raise GateRefused(f"{host_path[:300]} refused: {reason}")
        super().add_paths(paths)

    def task_request(self, command: str) -> dict[str, Any]:
        """The language-neutral request (``wes_server.tasks``) for this task and command."""
        rv = self.runtime_values
        cwork = os.path.join(self.container_dir, "work")
        write_dir = os.path.join(self.host_dir, "write_")
        inputs, generated = [], []
        unsupported = None
        for host_path, container_path in self.input_path_map.items():
            directory = host_path.endswith("/")
            hp, cp = host_path.rstrip("/"), container_path.rstrip("/")
            if not directory and _within(hp, write_dir):
                # written by write_lines() & co. while the command was evaluated: data, like the command
                generated.append({"path": os.path.relpath(cp, cwork), "content": Path(hp).read_text()})
                continue
            # the worker stages a checked copy at this container path; the mount point is ours
            self.touch_mount_point(self.host_work_path(container_path))
            # miniwdl hands outputs on as links in a call's out/ directory: the gate reads the
            # recorded file itself (and refuses anything the worker did not record)
            inputs.append({"kind": "Directory" if directory else "File", "path": os.path.realpath(hp), "target": cp})
        if "inlineDockerfile" in rv:
            unsupported = "runtime.inlineDockerfile is not supported: tasks run only TRS-signed images"
        if len(command) > MAX_COMMAND:
            unsupported = f"the task's command is longer than {MAX_COMMAND} bytes"
        codes = rv.get("returnCodes", [0])
        mem = rv.get("memory_limit") or rv.get("memory_reservation") or (256 << 20)
        return {
            "name": self.run_id,
            "image": str(rv.get("docker") or ""),
            "command": ["/bin/sh", "-c", SHELL, "wdl-task", command],
            "environment": {str(k): str(v) for k, v in (rv.get("env") or {}).items()},
            "inputs": inputs,
            "generated": generated,
            "outdir": self.host_work_dir(),
            "workdir": cwork,
            "stdout": self.host_stdout_txt(),
            "stderr": self.host_stderr_txt(),
            "cores": int(rv.get("cpu", 1)),
            "ram_mib": max(1, int(mem) >> 20),
            "time_limit": None,
            "network": False,
            "success_codes": "*" if codes == "*" else ([codes] if isinstance(codes, int) else list(codes)),
            "temporary_fail_codes": [],
            "unsupported": unsupported,
        }

    def _run(self, logger: logging.Logger, terminating: Callable[[], bool], command: str) -> int:
        reply = _STATE["channel"].request({"op": "task", "task": self.task_request(command)})
        code = reply.get("exit_code")
        if terminating():
            raise Terminated()
        if not isinstance(code, int):
            # the worker already logged why (the gate's expected vs actual) in the run log
            raise GateRefused(f"the worker did not run task {self.run_id} (the gate's reason is logged above)")
        return code


def drs_download(cfg: Any, logger: logging.Logger, uri: str, **kwargs: Any) -> Generator[dict[str, Any], Any, None]:
    """miniwdl's file download plugin for ``drs://``: the worker downloads the object on the
    run owner's behalf, hashes and records it, and answers with its path inside the run."""
    reply = _STATE["channel"].request({"op": "download", "uri": uri})
    if reply.get("error") or not isinstance(reply.get("path"), str):
        raise WDL.Error.InputError(f"{uri[:200]}: {str(reply.get('error') or 'download failed')[:500]}")
    yield {"outputs": {"file": reply["path"]}}


def refused_download(cfg: Any, logger: logging.Logger, uri: str, **kwargs: Any) -> Generator[dict[str, Any], Any, None]:
    """Every other scheme miniwdl knows how to download: refused (inputs are drs:// or attached)."""
    reason = "WDL File values may only be drs:// objects or attached files"
    _STATE["channel"].send({"op": "refused", "reference": uri[:300], "reason": reason})
    raise WDL.Error.InputError(f"{uri[:200]}: only drs:// objects and the run's attached files may be File inputs")
    yield {}  # a generator, as miniwdl's plugin protocol expects


def _tolerant_chmod(path: str, file_bits: int = 0, dir_bits: int = 0) -> None:
    """miniwdl widens permissions after each task so later containers can read its files; here
    the worker stages a checked copy for every task, and the task's own files belong to its
    container user, which the sandboxed engine cannot chmod."""
    try:
        _chmod_R_plus(path, file_bits=file_bits, dir_bits=dir_bits)
    except PermissionError:
        pass


_chmod_R_plus = WDL.runtime.task.chmod_R_plus


def _config(workdir: Path, concurrency: int) -> Any:
    overrides = {
        "scheduler": {
            "container_backend": BACKEND,
            "task_concurrency": str(concurrency),
            "download_concurrency": "2",
        },
        # only this module's plugins (and miniwdl's call cache class, disabled below)
        "plugins": {"enable_patterns": '["wes_server.wdl_engine:*", "WDL.runtime.cache:*"]', "disable_patterns": "[]"},
        "download_cache": {"get": "false", "put": "false"},
        "call_cache": {"get": "false", "put": "false"},
        "file_io": {
            "root": str(workdir),
            "copy_input_files": "false",
            "output_hardlinks": "false",
            "delete_work": "false",
            "mount_tmpdir": "false",
            "allow_any_input": "false",
        },
        # no default image: a task without runtime.docker/container is refused by the worker
        "task_runtime": {"defaults": "{}", "as_user": "false"},
    }
    return WDL.runtime.config.Loader(logging.getLogger("wdl"), filenames=[], overrides=overrides)


def _read_documents(attachments: Path, main: str) -> tuple[dict[str, bytes], set[str]]:
    """The run's WDL documents (``*.wdl`` and the main file) and the names of all its files
    (attached data files are inputs, not documents: they are never read here)."""
    files: dict[str, bytes] = {}
    names: set[str] = set()
    total = 0
    for root, _, entries in os.walk(attachments):
        for entry in entries:
            path = Path(root, entry)
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(attachments).as_posix()
            names.add(rel)
            if rel != main and not rel.endswith(".wdl"):
                continue
            total += path.stat().st_size
            if total > MAX_DOCUMENTS:
                raise WdlDocumentError("the run's WDL documents are too large")
            files[rel] = path.read_bytes()
    return files, names


def _json_out(v: Any) -> Any:
    """A WDL output value as JSON, File/Directory as CWL-style objects at their recorded path
    (miniwdl's out/ links resolved: the worker publishes only files it recorded)."""
    if isinstance(v, WDL.Value.Null):
        return None
    if isinstance(v, (WDL.Value.File, WDL.Value.Directory)):
        kind = "File" if isinstance(v, WDL.Value.File) else "Directory"
        return {"class": kind, "location": os.path.realpath(v.value), "basename": os.path.basename(v.value.rstrip("/"))}
    if isinstance(v, WDL.Value.Array):
        return [_json_out(x) for x in v.value]
    if isinstance(v, WDL.Value.Map):
        return {str(k.value if isinstance(k, WDL.Value.String) else k.json): _json_out(x) for k, x in v.value}
    if isinstance(v, WDL.Value.Pair):
        return {"left": _json_out(v.value[0]), "right": _json_out(v.value[1])}
    if isinstance(v, WDL.Value.Struct):
        return {k: _json_out(x) for k, x in v.value.items()}
    return v.json


def run_engine(channel: Channel) -> None:
    import threading

    init = channel.recv()
    if init is None or init.get("op") != "init":
        raise SystemExit("engine: no init message")
    threading.Thread(target=channel.dispatch_replies, daemon=True).start()
    _STATE["channel"] = channel
    _STATE["limits"] = {"cpu": int(init.get("cpu") or 1), "mem_bytes": int(init.get("mem_bytes") or 1 << 30)}
    WDL.runtime.task.chmod_R_plus = _tolerant_chmod
    workdir = Path(init["workdir"])
    _STATE["workdir"] = workdir
    attachments = workdir / "attachments"
    main = str(init["main"])
    params = dict(init.get("inputs") or {})

    def refuse(reference: str, reason: str) -> None:
        channel.send({"op": "refused", "reference": reference[:300], "reason": reason[:300]})
        channel.send({"op": "done", "refused": f"{reference[:200]}: {reason}"})

    try:
        files, names = _read_documents(attachments, main)
        doc = load_wdl(files, main, root=str(attachments))
        check_inputs(doc, params, attachments=names)
        exe = target_of(doc)
        inputs = WDL.values_from_json(params, exe.available_inputs, exe.required_inputs, namespace=exe.name)
    except WdlDocumentError as exc:
        refuse(main, exc.message)
        return

    def local(v: Any) -> str | None:
        # check_inputs allowed only drs:// (downloaded by the plugin) or an attached file's name
        value = str(v.value)
        return value if value.startswith("drs://") else str(attachments / value)

    inputs = WDL.Value.rewrite_env_paths(inputs, local)
    jobs = workdir / "jobs"
    jobs.mkdir(exist_ok=True)
    cfg = _config(workdir, max(1, int(init.get("concurrency") or 2)))
    try:
        run_dir = str(jobs / "wdl" / ".")
        if isinstance(exe, WDL.Tree.Task):
            _, outputs = WDL.runtime.run_local_task(cfg, exe, inputs, run_id=exe.name, run_dir=run_dir)
        else:
            _, outputs = WDL.runtime.run_local_workflow(cfg, exe, inputs, run_id=exe.name, run_dir=run_dir)
    except WDL.runtime.RunFailed as exc:
        chain: list[BaseException] = []
        cause: BaseException | None = exc.__cause__
        while cause is not None and len(chain) < 8:
            if not isinstance(cause, WDL.runtime.RunFailed):
                chain.append(cause)
            cause = cause.__cause__
        status = "refused" if any(isinstance(c, GateRefused) for c in chain) else "failed"
        for c in chain:
            if isinstance(c, WDL.Error.InputError):
                # miniwdl's own guard: a File the run's inputs did not supply (e.g. a host path
                # made inside the workflow) -- a reference the workflow may not have
                reason = f"miniwdl refused a File the run does not own: {str(c)[:200]}"
                channel.send({"op": "refused", "reference": exe.name, "reason": reason})
                status = "refused"
        detail = "; ".join(f"{type(c).__name__}: {c}" for c in chain) or str(exc)
        message = f"WDL run {status}: {str(exc)[:300]}; {detail[:1500]}"
        channel.send({"op": "done", "status": "permanentFail", "error": message})
        return
    except (WDL.Error.InputError, WDL.Error.RuntimeError) as exc:
        channel.send({"op": "done", "error": f"{type(exc).__name__}: {str(exc)[:1500]}"})
        return
    result = {f"{exe.name}.{b.name}": _json_out(b.value) for b in outputs}
    channel.send({"op": "done", "outputs": result, "status": "success"})


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    channel = Channel(socket.socket(fileno=int(os.environ[ENGINE_FD_ENV])))
    try:
        run_engine(channel)
    except Exception as exc:  # the worker reports it; the traceback stays in the engine's log
        log.exception("engine failed")
        try:
            channel.send({"op": "done", "error": f"the WDL engine failed: {type(exc).__name__}: {exc}"})
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    # run as the imported module: miniwdl loads the plugins from ``wes_server.wdl_engine``, and
    # they must see the state this run sets up (``__main__`` would be a second copy)
    from wes_server.wdl_engine import main as _main

    sys.exit(_main())
