"""The verified executor: cwltool (CWL) or miniwdl (WDL) evaluates the workflow in an
unprivileged engine process (``wes_server.engine`` / ``wes_server.wdl_engine``, started by
``wes_server.engine_host``); every task it asks for arrives as the same language-neutral
request and runs here through ``wes_server.tasks.run_task``, which asks the run's
``TaskGate`` (``wes_server.gate``) to admit it and then runs one short-lived hardened
container through the Docker SDK. DRS and TRS are reached only through the ports the WES
domain was built with.

The gate, before EVERY task, fails closed:
  1. the image reference resolves to a TRS-signed version; its bundle verifies under the
     trust policy and its subject digest is the pinned digest; the local image id equals
     the signed config digest (``ContainerRunner`` creates by id and re-checks);
  2. every input file is copied into a task-owned staging directory while its SHA-256 is
     computed, and compared with the checksum DRS holds (external inputs) or the checksum
     recorded when the producing task finished (intermediates).
Any failure stops the task, is audited as a security event and lands in the run log
with expected and actual values.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from helixgate.audit import AuditTrail
from helixgate.config import Settings
from helixgate.errors import BadRequest, HelixGateError, IntegrityError
from helixgate.integrity import check_sha256, sha256_bytes
from helixgate.paths import PathEscape, check_relative_path, write_inside
from helixgate.ports import Provenance
from helixgate.uris import DrsRef, parse_drs
from wes_server import gate
from wes_server.containers import ContainerRunner
from wes_server.domain import WorkflowService
from wes_server.engine_host import CWL_ENGINE, WDL_ENGINE, run_in_engine
from wes_server.execution import (
    CONTAINER_OUTDIR,
    CONTAINER_STAGEDIR,
    SAFE_NAME,
    RunExecution,
    RunOutcome,
    WorkflowFailed,
)
from wes_server.gate import GateRefusal, Recorded
from wes_server.tasks import EngineFailed
from wes_server.workflow_guard import inside, map_input_references

log = logging.getLogger("helixgate.executor")
# cwltool narrates every step on stderr; the run and task logs carry what matters
logging.getLogger("cwltool").setLevel(logging.ERROR)
logging.getLogger("salad").setLevel(logging.ERROR)


class Executor:
    def __init__(
        self, *, settings: Settings, wes: WorkflowService, audit: AuditTrail, runner: ContainerRunner | None = None
    ) -> None:
        self.settings = settings
        self.wes = wes
        self.audit = audit
        self.runner = runner or ContainerRunner(scope=self.settings.container_scope)
        from wes_server import jsbox

        jsbox.install(self.settings)  # expressions only ever run in the sandbox
        work_root = self.settings.data_dir / "wes" / "work"
        work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # resolved once: inputs are then opened by exact path, never through a symlink
        self.work_root = work_root.resolve()

    def execution(self, run: Any, cancel: threading.Event) -> RunExecution:
        """The state of one run, with its gate (the tool port's signed versions, this
        worker's container engine, the run's checksum registry)."""
        return RunExecution(
            run=run,
            cancel=cancel,
            workdir=self.work_root / run.id,
            settings=self.settings,
            runs=self.wes.runs,
            runner=self.runner,
            audit=self.audit,
            tools=self.wes.tools,
        )

    # ------------------------------------------------------------------ one run
    def execute(self, run: Any, *, cancel: threading.Event) -> RunOutcome:
        ex = self.execution(run, cancel)
        runs = self.wes.runs
        watcher = threading.Thread(target=self._watch_cancel, args=(ex,), daemon=True)
        watcher.start()
        try:
            if ex.workdir.exists() or ex.stage_root.exists():  # a previous attempt died: start clean
                shutil.rmtree(ex.workdir, ignore_errors=True)
                shutil.rmtree(ex.stage_root, ignore_errors=True)
                runs.delete_tasks(run.id)
            ex.workdir.mkdir(parents=True, mode=0o700)
            ex.stage_root.mkdir(mode=0o700)
            wdl = is_wdl(run)
            main, job_order = self._prepare(ex, wdl=wdl)
            runs.set_state(run.id, "RUNNING", worker_id=None)
            outputs, status = self._run_wdl(ex, main, job_order) if wdl else self._run_cwl(ex, main, job_order)
            if cancel.is_set():
                return RunOutcome("CANCELED")
            if ex.failure is not None:
                return RunOutcome("SYSTEM_ERROR" if not isinstance(ex.failure, IntegrityError) else "EXECUTOR_ERROR")
            if ex.refusals:  # whatever cwltool made of it, a refused reference fails the run
                runs.append_system_log(run.id, ex.refusals.message())
                return RunOutcome("EXECUTOR_ERROR", exit_code=1)
            if status != "success" or outputs is None:
                runs.append_system_log(run.id, f"workflow finished with status {status}")
                return RunOutcome("EXECUTOR_ERROR", exit_code=1)
            published = self._publish_outputs(ex, outputs)
            return RunOutcome("COMPLETE", outputs=published, exit_code=0)
        except WorkflowFailed as exc:
            if ex.refusals:
                runs.append_system_log(run.id, ex.refusals.message())
            runs.append_system_log(run.id, f"workflow failed: {exc.message}")
            if cancel.is_set():
                return RunOutcome("CANCELED", exit_code=1)
            if ex.failure is not None and not isinstance(ex.failure, IntegrityError):
                return RunOutcome("SYSTEM_ERROR")  # a task could not be run (docker down...), as for CWL
            return RunOutcome("EXECUTOR_ERROR", exit_code=1)
        except GateRefusal as exc:
            runs.append_system_log(run.id, exc.message)
            return RunOutcome("CANCELED" if cancel.is_set() else "EXECUTOR_ERROR", exit_code=1)
        except IntegrityError as exc:
            ex.audit.integrity_failed(exc, None)
            runs.append_system_log(run.id, f"refused: {exc.message}")
            return RunOutcome("EXECUTOR_ERROR", exit_code=1)
        except HelixGateError as exc:
            runs.append_system_log(run.id, f"run failed: {exc.message}")
            return RunOutcome("CANCELED" if cancel.is_set() else "SYSTEM_ERROR")
        finally:
            ex.done.set()
            try:
                self.runner.kill_run(run.id)  # nothing of this run survives it
            except Exception:  # docker down: the reconciler sweeps later
                log.warning("could not sweep containers of run %s", run.id)
            shutil.rmtree(ex.workdir, ignore_errors=True)
            shutil.rmtree(ex.stage_root, ignore_errors=True)

    def _watch_cancel(self, ex: RunExecution) -> None:
        while not ex.done.is_set():
            if ex.cancel.wait(0.5):
                self.wes.runs.set_state(ex.run.id, "CANCELING")
                self.runner.kill_run(ex.run.id)
                return

    # ------------------------------------------------------------------ preparation
    def _prepare(self, ex: RunExecution, *, wdl: bool = False) -> tuple[Path, dict[str, Any]]:
        """Write attachments, fetch DRS inputs (verified while downloading), build the job order.

        A TRS run's descriptors come from WES's own tables: before the engine reads a byte, each
        is hashed and compared with the checksum its version's verified statement signs.
        A WDL run's inputs go to the engine as they are: its restricted loader checks them
        against the workflow's types, and its drs:// files come back here one by one through
        miniwdl's download plugin (``_download_for_engine``), hashed while downloaded.
        """
        run = ex.run
        att_dir = ex.workdir / "attachments"
        att_dir.mkdir()
        attachments = self.wes.runs.attachments(run.id)
        main_rel = str(run.workflow_source["main"])
        src = run.workflow_source
        if src.get("kind") == "trs":
            signed = self.wes.tools.signed_version(src["tool_id"], src["version_id"])
            gate.check_descriptors({a.path: a.content for a in attachments}, signed, primary=main_rel)
        for a in attachments:
            check_sha256(f"attachment {a.path}", a.sha256, sha256_bytes(a.content))
            dest = write_inside(att_dir, a.path, a.content)
            ex.registry.record(str(dest), Recorded(a.sha256, None, f"attachment {a.path}"))
        try:
            check_relative_path(main_rel, "workflow path")
        except BadRequest as exc:
            raise PathEscape(exc.message, subject=main_rel[:200]) from None
        main = att_dir / main_rel
        params = json.loads(json.dumps(run.request.get("workflow_params") or {}))
        if wdl:
            return main, params
        # the submission check again: attached files point at the run's copies, nothing else
        map_input_references(params, att_dir, ex.refusals)
        if ex.refusals:
            raise GateRefusal(ex.refusals.message().replace("workflow reference", "input reference"))
        inputs_dir = ex.workdir / "inputs"
        inputs_dir.mkdir()
        self._resolve_drs(ex, params, inputs_dir)
        return main, params

    def _resolve_drs(self, ex: RunExecution, value: Any, inputs_dir: Path) -> Any:
        host = self.settings.drs_host
        if isinstance(value, dict):
            loc = value.get("location") or value.get("path")
            ref = parse_drs_reference(loc) if isinstance(loc, str) else None
            if ref is not None:
                # the same parser as the submission check: any spelling is read on the owner's behalf
                object_id, loc = ref.object_id, ref.uri
                if ref.host != host.lower():
                    raise IntegrityError(f"input {loc} is not in this deployment's DRS", subject=loc)
                if object_id in (".", ".."):
                    raise PathEscape(f"input {loc[:200]} names no object", subject=loc[:200])
                dest = self._fetch_drs(ex, object_id, loc, value.get("basename"), inputs_dir)
                name = dest.name
                value.pop("path", None)
                value["location"] = dest.as_uri()
                value.setdefault("basename", name)
                return value
            for k, v in list(value.items()):
                value[k] = self._resolve_drs(ex, v, inputs_dir)
            return value
        if isinstance(value, list):
            return [self._resolve_drs(ex, v, inputs_dir) for v in value]
        return value

    def _fetch_drs(self, ex: RunExecution, object_id: str, uri: str, basename: str | None, inputs_dir: Path) -> Path:
        """Download one DRS object on the owner's behalf into the run (hashed while written:
        only bytes that hash to DRS's checksum arrive) and record its checksum."""
        with ex.download_lock:
            dest_dir = inputs_dir / object_id
            dest_dir.mkdir(parents=True, exist_ok=True)
            obj = self.wes.data.lookup(ex.run.owner, object_id)
            dest = dest_dir / SAFE_NAME.sub("_", basename or obj.name or object_id)[:200]
            if not dest.exists():
                sha = self.wes.data.download(ex.run.owner, object_id, dest).sha256
                ex.registry.record(str(dest), Recorded(sha, None, uri))
                ex.audit.executed("wes.input.read", uri, {"sha256": sha})
            return dest

    def _download_for_engine(self, ex: RunExecution, msg: dict[str, Any]) -> dict[str, Any]:
        """The WDL engine's drs:// download plugin asks: the same rules as a CWL input (this
        deployment's DRS, read as the run's owner), answered with a path inside the run."""
        uri = msg.get("uri")
        ref = parse_drs_reference(uri) if isinstance(uri, str) else None
        if ref is None:
            raise IntegrityError("download request names no drs:// object", subject=str(uri)[:200])
        if ref.host != self.settings.drs_host.lower():
            raise IntegrityError(f"input {ref.uri} is not in this deployment's DRS", subject=ref.uri)
        if ref.object_id in (".", ".."):
            raise PathEscape(f"input {ref.uri[:200]} names no object", subject=ref.uri[:200])
        try:
            dest = self._fetch_drs(ex, ref.object_id, ref.uri, None, ex.workdir / "inputs")
        except IntegrityError as exc:
            ex.audit.integrity_failed(exc, None)
            ex.fail(exc)
            ex.runs.append_system_log(ex.run.id, f"refused: {exc.message}")
            raise
        return {"path": str(dest)}

    # ------------------------------------------------------------------ WDL
    def _run_wdl(self, ex: RunExecution, main: Path, inputs: dict[str, Any]) -> tuple[Any, str]:
        """miniwdl's evaluation runs in the same unprivileged engine sandbox as cwltool
        (``wes_server.wdl_engine``); its tasks and drs:// downloads come back here."""
        (ex.workdir / "jobs").mkdir()
        init = {
            "workdir": str(ex.workdir),
            "main": str(main.relative_to(ex.workdir / "attachments")),
            "inputs": inputs,
            "cpu": os.cpu_count() or 1,
            "mem_bytes": _memory_bytes(),
            "concurrency": max(2, os.cpu_count() or 1),
        }
        try:
            outputs, status = run_in_engine(ex, init, WDL_ENGINE, {"download": self._download_for_engine})
        except (WorkflowFailed, EngineFailed) as exc:
            self._check_recorded_files(ex)
            raise WorkflowFailed(_client_text(exc.message, ex.workdir)) from None
        if status != "success":
            self._check_recorded_files(ex)
        return outputs, status

    # ------------------------------------------------------------------ cwltool
    def _run_cwl(self, ex: RunExecution, main: Path, job_order: dict[str, Any]) -> tuple[Any, str]:
        """cwltool's evaluation runs in the unprivileged engine process (``wes_server.engine``,
        no keys, no Docker socket, no network); this worker answers its task requests
        through the verification gate (``wes_server.engine_host``)."""
        (ex.workdir / "jobs").mkdir()
        try:
            outputs, status = run_in_engine(ex, self._cwl_init(ex, main, job_order), CWL_ENGINE)
        except WorkflowFailed as exc:
            self._check_recorded_files(ex)
            raise WorkflowFailed(_client_text(exc.message, ex.workdir)) from None
        except EngineFailed as exc:
            self._check_recorded_files(ex)
            raise WorkflowFailed(exc.message) from None
        if status != "success":
            self._check_recorded_files(ex)
        return outputs, status

    def _cwl_init(self, ex: RunExecution, main: Path, job_order: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        return {
            "workdir": str(ex.workdir),
            "main": str(main),
            "job_order": job_order,
            "checksums": {path: rec.sha256 for path, rec in ex.registry.items()},
            "expression_time_limit": settings.expression_time_limit,
            "expression_memory_mib": settings.expression_memory_mib,
            "container_outdir": CONTAINER_OUTDIR,
            "container_stagedir": CONTAINER_STAGEDIR,
        }

    @staticmethod
    def _check_recorded_files(ex: RunExecution) -> None:
        """A run that stopped short: if a recorded file was replaced (a link planted between
        tasks makes the sandboxed engine fail before the gate sees it), say so as an integrity
        failure naming the file, not as a bare engine error."""
        gate.check_recorded_files((path, rec.sha256, rec.source) for path, rec in ex.registry.items())

    # ------------------------------------------------------------------ outputs
    def _publish_outputs(self, ex: RunExecution, outputs: Any) -> dict[str, Any]:
        """Upload every output file to DRS on behalf of the owner, with provenance; refuse drift."""

        def publish(value: Any) -> Any:
            if isinstance(value, dict) and value.get("class") == "File":
                path = _local_path(value["location"])
                rec = ex.registry.get(path)
                if rec is None:
                    raise IntegrityError(f"output {path} has no recorded checksum", subject=path)
                task = self.wes.runs.task(ex.run.id, rec.task_id) if rec.task_id else None
                provenance = Provenance(
                    run_id=ex.run.id,
                    task_id=rec.task_id or "",
                    workflow=str(ex.run.workflow_source.get("main", "")),
                    input_checksums={i["path"]: i["sha256"] for i in (task.inputs if task else [])},
                    image_digest=(task.image_id or "") if task is not None else "",
                    tool=(task.image or "") if task is not None and task.image_id else "",
                )
                with open(path, "rb") as fh:
                    obj = self.wes.data.upload(
                        ex.run.owner,
                        fh,
                        name=value.get("basename") or os.path.basename(path),
                        sha256=rec.sha256,
                        provenance=provenance,
                    )
                uri = obj.self_uri or f"drs://{self.settings.drs_host}/{obj.id}"
                ex.audit.executed("wes.output.write", uri, {"sha256": rec.sha256, "task_id": rec.task_id})
                out = {
                    "class": "File",
                    "location": uri,
                    "basename": value.get("basename"),
                    "size": obj.size,
                    "checksum": f"sha256${rec.sha256}",
                }
                if value.get("secondaryFiles"):
                    out["secondaryFiles"] = [publish(s) for s in value["secondaryFiles"]]
                return out
            if isinstance(value, dict) and value.get("class") == "Directory":
                listing = value.get("listing")
                if listing is None:
                    if not inside(_local_path(value["location"]), ex.workdir):
                        raise IntegrityError(f"output directory {value['location'][:200]} is outside the run")
                    listing = [
                        {"class": "File", "location": Path(root, f).as_uri(), "basename": f}
                        for root, _, files in os.walk(_local_path(value["location"]))
                        for f in files
                    ]
                return {
                    "class": "Directory",
                    "basename": value.get("basename"),
                    "listing": [publish(v) for v in listing],
                }
            if isinstance(value, dict):
                return {k: publish(v) for k, v in value.items()}
            if isinstance(value, list):
                return [publish(v) for v in value]
            return value

        return {name: publish(value) for name, value in dict(outputs).items()}  # the output object's fields


def is_wdl(run: Any) -> bool:
    """Which engine runs ``run``: its workflow_type as submitted (CWL unless WDL)."""
    return str((run.request or {}).get("workflow_type") or "CWL").strip().upper() == "WDL"


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 1 << 30


def _client_text(message: str, workdir: Path, cap: int = 2000) -> str:
    """An engine message for the run log: the worker's own paths shown relative to the run."""
    for prefix in (f"{(workdir / 'attachments').as_uri()}/", f"{workdir / 'attachments'}/", f"{workdir}/"):
        message = message.replace(prefix, "")
    message = message.replace(str(workdir), "<run>")
    return message if len(message) <= cap else message[: cap - 15] + " ...(truncated)"


def parse_drs_reference(location: str) -> DrsRef | None:
    """``parse_drs`` for the worker: a malformed reference stops the task as an integrity failure."""
    try:
        return parse_drs(location)
    except HelixGateError as exc:
        raise IntegrityError(f"input {location[:120]!r}: {exc.message}", subject=location[:200]) from None


def _local_path(location: str) -> str:
    from urllib.parse import unquote, urlsplit

    if location.startswith("file://"):
        return unquote(urlsplit(location).path)
    return location
