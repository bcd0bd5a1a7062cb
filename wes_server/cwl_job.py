"""The worker's side of a task: ``VerifiedJob`` runs each task the engine process asks for
through HelixGate's gate and container runner (no docker CLI, no 1-second docker monitor,
no pulls by tag)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

from cwltool.errors import WorkflowException
from cwltool.job import JobBase

from helixgate.errors import BadRequest, HelixGateError
from helixgate.integrity import sha256_file
from helixgate.paths import PathEscape, check_relative_path, write_inside
from wes_server.containers import TaskCancelled, TaskContainerSpec
from wes_server.execution import CONTAINER_OUTDIR, RunExecution, utcnow
from wes_server.gate import GateRefusal, Recorded, TaskInput, VerifiedImage

log = logging.getLogger("helixgate.executor")
MiB = 1024 * 1024


class VerifiedJob(JobBase):
    execution: RunExecution

    def _required_env(self) -> dict[str, str]:
        return {"HOME": self.builder.outdir, "TMPDIR": "/tmp"}  # noqa: S108 - inside the container

    def run(self, runtimeContext: Any, tmpdir_lock: threading.Lock | None = None) -> None:  # noqa: N803
        ex = self.execution
        task_id = ex.next_task_id(self.name)
        runs = ex.runs
        status = "permanentFail"
        outputs: dict[str, Any] = {}
        evidence: list[str] = []
        verification: dict[str, Any] = {}  # structured evidence, served by GET /x-helixgate/runs/{id}/evidence
        docker_req, _ = self.get_requirement("DockerRequirement")
        reference = str((docker_req or {}).get("dockerPull") or (docker_req or {}).get("dockerImageId") or "")
        runs.add_task(
            ex.run.id,
            task_id,
            self.name,
            state="INITIALIZING",
            image=reference[:512],
            cmd=list(self.command_line),
            start_time=utcnow(),
        )
        try:
            if ex.cancel.is_set():
                raise TaskCancelled("run cancelled")
            if ex.failure is not None:
                raise GateRefusal("an earlier task failed verification; not starting more tasks")
            os.makedirs(self.tmpdir, exist_ok=True)
            self._setup(runtimeContext)
            self.prepare_environment(runtimeContext, self._env_requirement())
            # --- the gate: signature, digests and pin, local image, every input
            src = ex.run.workflow_source
            prefer = (src["tool_id"], src["version_id"]) if src.get("kind") == "trs" else None
            stage = Path(ex.workdir) / "tasks" / task_id
            admitted = ex.gate.admit(task_id, reference, prefer, self._task_inputs(), stage / "inputs")
            image = admitted.image
            checked = [c.as_json() for c in admitted.inputs.checked]
            evidence = [
                f"image {reference} verified: signature by {image.signer} over tool "
                f"{image.tool_id}:{image.version_id}; local image id {image.image_id} equals the signed "
                "configuration digest",
                *(f"input {i['path']}: sha256 {i['sha256']} matches {i['source']}" for i in checked),
            ]
            verification = {"image": _image_evidence(image)}
            runs.update_task(
                ex.run.id,
                task_id,
                state="RUNNING",
                image_id=image.image_id,
                inputs=checked,
                resources=self._resources(),
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
                    "cmd": list(self.command_line)[:50],
                    "inputs": checked,
                    "resources": self._resources(),
                },
            )
            # --- run
            result = self._run_container(task_id, image.image_id, list(admitted.inputs.mounts), stage)
            rcode = result.exit_code if not result.timed_out else 124
            if result.error:
                runs.update_task(ex.run.id, task_id, system_logs=[*evidence, result.error[:2000]])
            status = self._status(rcode, result)
            produced = self._record_outputs(task_id)
            outputs = dict(self.collect_outputs(self.outdir, rcode)) if status == "success" else {}
            runs.update_task(
                ex.run.id,
                task_id,
                state="COMPLETE" if status == "success" else "EXECUTOR_ERROR",
                exit_code=rcode,
                end_time=utcnow(),
                outputs=produced,
                stdout=_read_capped(stage / "stdout.log"),
                stderr=_read_capped(stage / "stderr.log"),
            )
        except TaskCancelled:
            runs.update_task(ex.run.id, task_id, state="CANCELED", end_time=utcnow())
            status = "permanentFail"
        except GateRefusal as exc:
            runs.update_task(
                ex.run.id,
                task_id,
                state="EXECUTOR_ERROR",
                end_time=utcnow(),
                system_logs=[*evidence, exc.message[:2000]],
                verification={
                    **verification,
                    **({"image": _image_evidence(exc.image)} if exc.image is not None else {}),
                    "refusal": _refusal(exc),
                },
            )
            status = "permanentFail"
        except HelixGateError as exc:
            ex.fail(exc)
            runs.update_task(
                ex.run.id, task_id, state="SYSTEM_ERROR", end_time=utcnow(), system_logs=[*evidence, exc.message]
            )
            runs.append_system_log(ex.run.id, f"task {task_id}: {exc.message}")
            status = "permanentFail"
        except WorkflowException as exc:
            runs.update_task(
                ex.run.id, task_id, state="EXECUTOR_ERROR", end_time=utcnow(), system_logs=[*evidence, str(exc)[:2000]]
            )
            runs.append_system_log(ex.run.id, f"task {task_id}: {str(exc)[:500]}")
            status = "permanentFail"
        finally:
            shutil.rmtree(Path(ex.workdir) / "tasks" / task_id / "inputs", ignore_errors=True)
        if runtimeContext.workflow_eval_lock is None:
            raise WorkflowException("runtimeContext.workflow_eval_lock must not be None")
        if self.output_callback:
            with runtimeContext.workflow_eval_lock:
                self.output_callback(outputs, status)

    def _task_inputs(self) -> list[TaskInput]:
        """The staged File/Directory inputs cwltool mapped for this task. Its path mapper
        dereferences symlinks into ``resolved``: the gate checks the location the producer's
        record is bound to, never where a link points."""
        return [
            TaskInput(ent.type, _origin(key, ent.resolved), ent.target)
            for key, ent in self.pathmapper.items_exclude_children()
            if ent.staged and ent.type in ("File", "Directory")
        ]

    def _env_requirement(self) -> dict[str, str]:
        req, _ = self.get_requirement("EnvVarRequirement")
        if not req:
            return {}
        defs: list[Any] = list(req.get("envDef", []))  # type: ignore[arg-type]
        return {str(e["envName"]): str(self.builder.do_eval(e["envValue"])) for e in defs}

    def _resources(self) -> dict[str, Any]:
        r = self.builder.resources
        return {"cores": r.get("cores", 1), "ram_mib": r.get("ram", 256), "timelimit": self.timelimit}

    def _run_container(self, task_id: str, image_id: str, mounts: list[tuple[str, str]], stage: Path) -> Any:
        ex = self.execution
        settings = ex.settings
        os.chmod(self.outdir, 0o777)  # written by the task's non-root uid  # noqa: S103
        try:
            self._write_initial_workdir()
        except PathEscape as exc:  # an escape from the run directory is a security event
            raise ex.gate.refuse(task_id, exc) from None
        if self.stdin:
            raise WorkflowException("stdin redirection is not supported by the HelixGate executor")
        # CWL stdout/stderr captures are outputs (uncapped); otherwise logs (capped).
        stdout_path = os.path.join(self.outdir, self.stdout) if self.stdout else str(stage / "stdout.log")
        stderr_path = os.path.join(self.outdir, self.stderr) if self.stderr else str(stage / "stderr.log")
        cap = settings.max_upload_bytes if (self.stdout or self.stderr) else settings.task_log_cap_bytes
        res = self.builder.resources
        spec = TaskContainerSpec(
            run_id=ex.run.id,
            task_id=task_id,
            image_id=image_id,
            command=[str(c) for c in self.command_line],
            output_dir=self.outdir,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            inputs=mounts,
            workdir=self.builder.outdir or CONTAINER_OUTDIR,
            env=dict(self.environment),
            cpus=float(max(1, min(os.cpu_count() or 1, int(res.get("cores", 1) or 1)))),
            memory_bytes=int(max(64, int(res.get("ram", 256) or 256)) * MiB),
            time_limit=float(self.timelimit or settings.task_time_limit),
            network=bool(self.networkaccess and settings.allow_task_network),
            log_cap_bytes=cap,
        )
        return ex.runner.run(spec)

    def _write_initial_workdir(self) -> None:
        if self.generatemapper is None:
            return
        for _key, ent in self.generatemapper.items():
            if ent.type in ("CreateFile", "CreateWritableFile"):
                rel = os.path.relpath(ent.target, self.builder.outdir)
                try:
                    check_relative_path(rel, "InitialWorkDir entry")
                except BadRequest as exc:
                    raise WorkflowException(exc.message) from None
                write_inside(Path(self.outdir), rel, str(ent.resolved).encode(), mode=0o644)
            elif ent.type in ("File", "WritableFile", "Directory", "WritableDirectory") and ent.staged:
                raise WorkflowException("InitialWorkDir staging of existing files is not supported yet")

    def _status(self, rcode: int, result: Any) -> str:
        if result.timed_out or result.oom_killed or result.error:
            return "permanentFail"
        if rcode in self.successCodes or rcode == 0:
            return "success"
        if rcode in self.temporaryFailCodes:
            return "temporaryFail"
        return "permanentFail"

    def _record_outputs(self, task_id: str) -> list[dict[str, Any]]:
        """Hash every file the task left in its output directory: these are the intermediates'
        reference checksums for later tasks and for publication."""
        ex = self.execution
        produced = []
        for root, _, files in os.walk(self.outdir):
            for f in files:
                path = os.path.join(root, f)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    os.unlink(path)  # a task may not point outputs at files it does not own
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    continue  # no record: a later task or publication refuses it
                sha = sha256_file(path)
                ex.registry.record(path, Recorded(sha, task_id, f"task {task_id}"))
                produced.append(
                    {"path": os.path.relpath(path, self.outdir), "sha256": sha, "size": os.path.getsize(path)}
                )
        return produced


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


def _origin(key: str, resolved: str) -> str:
    """The local path an input was declared at (its ``file://`` location), before cwltool
    followed any symlink; other keys (literals) map to what cwltool resolved."""
    if key.startswith("file://"):
        from schema_salad.ref_resolver import uri_file_path

        return str(uri_file_path(key))
    return resolved


def _read_capped(path: Path, cap: int = 1024 * 1024) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(cap)
    except FileNotFoundError:
        return None
