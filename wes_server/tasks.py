"""One task, whatever the workflow language.

An engine process (cwltool in ``wes_server.engine``, miniwdl in ``wes_server.wdl_engine``)
evaluates the workflow and, for every task, sends ONE language-neutral request over its
channel. ``parse_task_request`` turns that untrusted message into a ``TaskRequest`` (every
path inside the run, bounded strings); ``run_task`` puts it through the run's verification
gate (``TaskGate.admit``: signed image, every input re-hashed while staged) and runs one
hardened short-lived container (``ContainerRunner``), then hashes what the task produced.
The engine vouches for nothing: the worker records the checksums and answers only with
status, exit code and the checksums it computed. A future backend (Slurm, issue #19)
receives the same ``TaskRequest``.

Wire format of a request (``{"op": "task", "id": n, "task": {...}}``)::

    name         str                  the workflow's name for the step
    image        str                  the container image as the workflow names it
    command      [str]                argv inside the container
    environment  {str: str}
    inputs       [{kind, path, target}] File/Directory inputs: host path in the run, container path
    generated    [{path, content}]    files the engine evaluated (CWL InitialWorkDir, WDL write_*),
                                      written by the worker into the output directory
    outdir       str                  host directory (in the run's job area), the task's writable
                                      working directory, mounted at ``workdir``
    workdir      str                  container path of ``outdir``
    stdout, stderr  str | null        host paths (in the run's job area) when the captured stream is
                                      an output; otherwise it is a capped task log
    cores, ram_mib, time_limit, network
    success_codes  [int] | "*"        exit codes that count as success ("*": any)
    temporary_fail_codes [int]
    unsupported  str | null           the engine met a feature the executor refuses: no container
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helixgate.errors import BadRequest, HelixGateError
from helixgate.integrity import sha256_file
from helixgate.paths import PathEscape, check_relative_path, write_inside
from wes_server.containers import TaskCancelled, TaskContainerResult, TaskContainerSpec
from wes_server.execution import RunExecution, utcnow
from wes_server.gate import GateRefusal, Recorded, TaskInput, VerifiedImage
from wes_server.workflow_guard import inside

log = logging.getLogger("helixgate.executor")
MiB = 1024 * 1024
MAX_COMMAND_BYTES = 1024 * 1024
MAX_GENERATED_BYTES = 64 * MiB


class EngineFailed(HelixGateError):
    """The engine process misbehaved (malformed request, broken channel)."""

    status = 422


class TaskUnsupported(HelixGateError):
    """The task asks for something the executor refuses (no container is started)."""

    status = 422


@dataclass(frozen=True)
class GeneratedFile:
    path: str  # relative to the output directory
    content: bytes


@dataclass(frozen=True)
class TaskRequest:
    """What any engine asks the worker to run (see the module docstring for the wire format)."""

    name: str
    image: str
    command: tuple[str, ...]
    outdir: str
    workdir: str
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    inputs: tuple[TaskInput, ...] = ()
    generated: tuple[GeneratedFile, ...] = ()
    stdout: str | None = None
    stderr: str | None = None
    cores: float = 1.0
    ram_mib: float = 256.0
    time_limit: float | None = None
    network: bool = False
    success_codes: tuple[int, ...] | None = (0,)  # None: any exit code succeeds
    temporary_fail_codes: tuple[int, ...] = ()
    unsupported: str | None = None

    def resources(self) -> dict[str, Any]:
        return {"cores": self.cores, "ram_mib": self.ram_mib, "timelimit": self.time_limit}


@dataclass
class TaskResult:
    status: str  # success | temporaryFail | permanentFail
    exit_code: int | None = None
    produced: list[dict[str, Any]] = field(default_factory=list)  # {path (absolute), sha256, size}

    def as_reply(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "produced": self.produced if self.status == "success" else [],
        }


# ------------------------------------------------------------------ validating requests
def _str(value: Any, what: str, cap: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > cap or "\x00" in value:
        raise EngineFailed(f"engine request: invalid {what}")
    return value


def _inside_run(path: Any, ex: RunExecution, what: str, area: Path | None = None) -> str:
    # ``inside`` resolves links: a directory the engine swapped for a link out of the run is refused
    p = _str(path, what)
    if not os.path.isabs(p) or not inside(p, area or ex.workdir):
        raise EngineFailed(f"engine request: {what} {p[:200]} is outside the run{'' if area is None else ' job area'}")
    return os.path.normpath(p)


def _stream_path(value: Any, outdir: str, jobs: Path, what: str) -> str:
    """A captured stream's file: inside the output directory, or beside it in the task's own
    directory (WDL's stdout.txt) -- never another task's files."""
    path = os.path.normpath(_str(value, what))
    parent = os.path.dirname(outdir)
    if os.path.isabs(path) and (
        inside(path, outdir) or (os.path.normpath(parent) != os.path.normpath(jobs) and inside(path, parent))
    ):
        return path
    raise EngineFailed(f"engine request: {what} {path[:200]} is outside the task's directory")


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return default
    return float(value)


def _codes(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        raise EngineFailed(f"engine request: {what} must be a list of integers")
    return tuple(value[:256])


def parse_task_request(ex: RunExecution, data: Any) -> TaskRequest:
    """A ``TaskRequest`` from an engine's untrusted message, or ``EngineFailed`` naming what is wrong."""
    if not isinstance(data, dict):
        raise EngineFailed("engine request: the task is not an object")
    jobs = ex.workdir / "jobs"
    command = data.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise EngineFailed("engine request: command must be a non-empty list of strings")
    if sum(len(c) for c in command) > MAX_COMMAND_BYTES:
        raise EngineFailed("engine request: command line too long")
    env = data.get("environment") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise EngineFailed("engine request: environment must map strings to strings")
    inputs = []
    for item in data.get("inputs") or []:
        if not isinstance(item, dict):
            raise EngineFailed("engine request: an input is not an object")
        kind = _str(item.get("kind"), "input kind", 16)
        if kind not in ("File", "Directory"):
            raise EngineFailed(f"engine request: input kind {kind[:16]!r}")
        origin = _inside_run(item.get("path"), ex, "input")
        target = _str(item.get("target"), "input target")
        if not target.startswith("/") or os.path.normpath(target) != target:
            raise EngineFailed(f"engine request: input target {target[:200]} is not a normalized container path")
        inputs.append(TaskInput(kind, origin, target))
    generated, total = [], 0
    for item in data.get("generated") or []:
        if not isinstance(item, dict):
            raise EngineFailed("engine request: a generated file is not an object")
        rel = _str(item.get("path"), "generated file path", 1024)
        content = _str(item.get("content"), "generated file content", MAX_GENERATED_BYTES).encode()
        total += len(content)
        if total > MAX_GENERATED_BYTES:
            raise EngineFailed("engine request: generated files too large")
        generated.append(GeneratedFile(rel, content))
    outdir = _inside_run(data.get("outdir"), ex, "output directory", jobs)
    workdir = _str(data.get("workdir"), "container working directory", 1024)
    if not workdir.startswith("/") or os.path.normpath(workdir) != workdir:
        raise EngineFailed("engine request: the container working directory is not a normalized absolute path")
    streams = {}
    for name in ("stdout", "stderr"):
        value = data.get(name)
        streams[name] = None if value is None else _stream_path(value, outdir, jobs, name)
    image = _str(data.get("image") or "", "image reference", 1024)
    codes = data.get("success_codes", [0])
    unsupported = data.get("unsupported")
    return TaskRequest(
        name=_str(data.get("name"), "name", 256),
        image=image,
        command=tuple(command),
        environment=dict(env),
        inputs=tuple(inputs),
        generated=tuple(generated),
        outdir=outdir,
        workdir=workdir,
        stdout=streams["stdout"],
        stderr=streams["stderr"],
        cores=_number(data.get("cores"), 1.0),
        ram_mib=_number(data.get("ram_mib"), 256.0),
        time_limit=_number(data.get("time_limit"), 0.0) or None,
        network=data.get("network") is True,
        success_codes=None if codes == "*" else _codes(codes, "success_codes"),
        temporary_fail_codes=_codes(data.get("temporary_fail_codes") or [], "temporary_fail_codes"),
        unsupported=None if unsupported is None else _str(unsupported, "unsupported", 500),
    )


# ------------------------------------------------------------------ running one
def run_task(ex: RunExecution, req: TaskRequest) -> TaskResult:
    """The gate, then one hardened container, then the outputs hashed and recorded. Task rows
    carry the evidence; a refusal is a security event (``RunExecution.refused``)."""
    task_id = ex.next_task_id(req.name)
    runs = ex.runs
    result = TaskResult("permanentFail")
    evidence: list[str] = []
    verification: dict[str, Any] = {}  # structured evidence, served by GET /x-helixgate/runs/{id}/evidence
    runs.add_task(
        ex.run.id,
        task_id,
        req.name,
        state="INITIALIZING",
        image=req.image[:512],
        cmd=list(req.command),
        start_time=utcnow(),
    )
    stage = ex.stage_root / task_id  # outside the engine's writable mount
    try:
        if ex.cancel.is_set():
            raise TaskCancelled("run cancelled")
        if ex.failure is not None:
            raise GateRefusal("an earlier task failed verification; not starting more tasks")
        if req.unsupported:
            raise TaskUnsupported(req.unsupported)
        if not req.image:
            raise TaskUnsupported("every task must run in a signed container: the task names no container image")
        os.makedirs(req.outdir, exist_ok=True)
        # --- the gate: signature, digests and pin, local image, every input
        src = ex.run.workflow_source
        prefer = (src["tool_id"], src["version_id"]) if src.get("kind") == "trs" else None
        admitted = ex.gate.admit(task_id, req.image, prefer, req.inputs, stage / "inputs")
        image = admitted.image
        checked = [c.as_json() for c in admitted.inputs.checked]
        evidence = [
            f"image {req.image} verified: signature by {image.signer} over tool "
            f"{image.tool_id}:{image.version_id}; local image id {image.image_id} equals the signed "
            "configuration digest",
            *(f"input {i['path']}: sha256 {i['sha256']} matches {i['source']}" for i in checked),
            *(
                f"generated file {g.path[:200]}: {len(g.content)} bytes evaluated by the engine, written by the "
                f"worker (sha256 {hashlib.sha256(g.content).hexdigest()})"
                for g in req.generated
            ),
        ]
        verification = {"image": _image_evidence(image)}
        runs.update_task(
            ex.run.id,
            task_id,
            state="RUNNING",
            image_id=image.image_id,
            inputs=checked,
            resources=req.resources(),
            system_logs=evidence,
            verification=verification,
        )
        ex.audit.executed(
            "wes.task.start",
            task_id,
            {
                "image": image.pinned_ref,
                "image_id": image.image_id,
                "signer": image.signer,
                "cmd": list(req.command)[:50],
                "inputs": checked,
                "resources": req.resources(),
            },
        )
        # --- run
        outcome = _run_container(ex, req, task_id, image.image_id, list(admitted.inputs.mounts), stage)
        rcode = outcome.exit_code if not outcome.timed_out else 124
        if outcome.error:
            runs.update_task(ex.run.id, task_id, system_logs=[*evidence, outcome.error[:2000]])
        result.exit_code = rcode
        result.status = _status(req, rcode, outcome)
        result.produced = _record_outputs(ex, req, task_id)
        runs.update_task(
            ex.run.id,
            task_id,
            state="COMPLETE" if result.status == "success" else "EXECUTOR_ERROR",
            exit_code=rcode,
            end_time=utcnow(),
            outputs=[{**p, "path": os.path.relpath(p["path"], req.outdir)} for p in result.produced],
            stdout=_read_capped(req.stdout or str(stage / "stdout.log")),
            stderr=_read_capped(req.stderr or str(stage / "stderr.log")),
        )
    except TaskCancelled:
        runs.update_task(ex.run.id, task_id, state="CANCELED", end_time=utcnow())
    except (GateRefusal, TaskUnsupported) as exc:
        refusal: dict[str, Any] = {}
        if isinstance(exc, GateRefusal):
            refusal = {
                **({"image": _image_evidence(exc.image)} if exc.image is not None else {}),
                "refusal": _refusal(exc),
            }
        runs.update_task(
            ex.run.id,
            task_id,
            state="EXECUTOR_ERROR",
            end_time=utcnow(),
            system_logs=[*evidence, exc.message[:2000]],
            verification={**verification, **refusal},
        )
        if isinstance(exc, TaskUnsupported):
            runs.append_system_log(ex.run.id, f"task {task_id}: {exc.message[:500]}")
    except HelixGateError as exc:
        ex.fail(exc)
        runs.update_task(
            ex.run.id, task_id, state="SYSTEM_ERROR", end_time=utcnow(), system_logs=[*evidence, exc.message]
        )
        runs.append_system_log(ex.run.id, f"task {task_id}: {exc.message}")
    finally:
        shutil.rmtree(stage / "inputs", ignore_errors=True)
    return result


def _image_evidence(image: VerifiedImage) -> dict[str, str]:
    """What the gate proved about a task's image (served as the task's evidence)."""
    return {
        "image_id": image.image_id,
        "pinned_ref": image.pinned_ref,
        "signer": image.signer,
        "tool_id": image.tool_id,
        "version_id": image.version_id,
    }


def _refusal(exc: GateRefusal) -> dict[str, str]:
    """What the gate refused and why (expected vs actual when the check compared values)."""
    out = {"message": exc.message[:2000]}
    for key in ("subject", "expected", "actual"):
        value = exc.details.get(key)
        if value:
            out[key] = str(value)[:500]
    return out


def _run_container(
    ex: RunExecution, req: TaskRequest, task_id: str, image_id: str, mounts: list[tuple[str, str]], stage: Path
) -> TaskContainerResult:
    settings = ex.settings
    os.chmod(req.outdir, 0o777)  # written by the task's non-root uid  # noqa: S103
    for gen in req.generated:
        try:
            check_relative_path(gen.path, "generated file")
            write_inside(Path(req.outdir), gen.path, gen.content, mode=0o644)
        except PathEscape as exc:  # an escape from the output directory is a security event
            raise ex.gate.refuse(task_id, exc) from None
        except BadRequest as exc:
            raise ex.gate.refuse(task_id, PathEscape(exc.message, subject=gen.path[:200])) from None
    # captured streams that are outputs are uncapped (up to an upload); otherwise logs (capped)
    cap = settings.max_upload_bytes if (req.stdout or req.stderr) else settings.task_log_cap_bytes
    spec = TaskContainerSpec(
        run_id=ex.run.id,
        task_id=task_id,
        image_id=image_id,
        command=list(req.command),
        output_dir=req.outdir,
        stdout_path=req.stdout or str(stage / "stdout.log"),
        stderr_path=req.stderr or str(stage / "stderr.log"),
        inputs=mounts,
        workdir=req.workdir,
        env=dict(req.environment),
        cpus=float(max(1, min(os.cpu_count() or 1, int(req.cores or 1)))),
        memory_bytes=int(max(64, int(req.ram_mib or 256)) * MiB),
        time_limit=float(req.time_limit or settings.task_time_limit),
        network=bool(req.network and settings.allow_task_network),
        log_cap_bytes=cap,
    )
    stage.mkdir(parents=True, exist_ok=True)
    return ex.runner.run(spec)


def _status(req: TaskRequest, rcode: int, outcome: TaskContainerResult) -> str:
    if outcome.timed_out or outcome.oom_killed or outcome.error:
        return "permanentFail"
    if req.success_codes is None or rcode in req.success_codes:
        return "success"
    if rcode in req.temporary_fail_codes:
        return "temporaryFail"
    return "permanentFail"


def _record_outputs(ex: RunExecution, req: TaskRequest, task_id: str) -> list[dict[str, Any]]:
    """Hash every file the task left in its output directory (and its captured streams when
    they are outputs): these are the intermediates' reference checksums for later tasks and
    for publication."""
    # input mount points inside the working directory (WDL's _miniwdl_inputs) are not outputs
    mount_points = {
        os.path.normpath(os.path.join(req.outdir, os.path.relpath(i.target, req.workdir)))
        for i in req.inputs
        if inside(i.target, req.workdir)
    }
    paths = [os.path.join(root, f) for root, _, files in os.walk(req.outdir) for f in files]
    paths = [p for p in paths if os.path.normpath(p) not in mount_points]
    paths += [p for p in (req.stdout, req.stderr) if p and not inside(p, req.outdir)]
    produced = []
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            os.unlink(path)  # a task may not point outputs at files it does not own
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            continue  # no record: a later task or publication refuses it
        sha = sha256_file(path)
        ex.registry.record(path, Recorded(sha, task_id, f"task {task_id}"))
        produced.append({"path": path, "sha256": sha, "size": st.st_size})
    return produced


def _read_capped(path: str, cap: int = 1024 * 1024) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(cap)
    except FileNotFoundError:
        return None
