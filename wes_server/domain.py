"""WES domain: accept runs (with every submission check), show them to whom may see
them, cancel them. Execution happens in ``wes_server.worker``."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from helixgate.errors import BadRequest, Forbidden, HelixGateError, IntegrityError
from helixgate.platform import Platform
from helixgate.ports import DataPort, ToolPort
from helixgate.service_info import base_service_info
from helixgate.uris import has_scheme
from wes_server.gate import check_descriptors
from wes_server.queue import RunQueue, make_queue
from wes_server.runs import Attachment, RunStore, check_page_size, iso
from wes_server.submission import (
    WORKFLOW_TYPES,
    RunRequest,
    drs_inputs,
    parse_run_request,
    refuse_local_inputs,
)
from wes_server.tools import SignedVersions, parse_trs_reference
from wes_server.workflow_guard import check_input_references, check_workflow_documents

log = logging.getLogger("helixgate.wes")


@dataclass
class Viewer:
    """Who is looking at runs: their name and whether they may see everyone's."""

    username: str | None
    see_all: bool


class WorkflowService:
    def __init__(self, platform: Platform, *, data: DataPort, tools: ToolPort) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.runs = RunStore(platform.db)
        self.queue: RunQueue = make_queue(platform.settings, platform.db)
        # DRS and TRS only through their ports (in-process or HTTP: chosen by the caller)
        self.data = data
        self.tools = SignedVersions(tools, platform.settings)
        self._counts: tuple[float, dict[str, int]] | None = None
        # wakes this process's idle workers at once; workers elsewhere poll the queue
        self.submitted = threading.Event()

    # ------------------------------------------------------------------ service-info
    def service_info(self) -> dict[str, Any]:
        import cwltool.main

        s = self.settings
        info = base_service_info("wes", s.effective_public_url, s.drs_host)
        engine_version = cwltool.main.versionfunc().split()[-1] if hasattr(cwltool.main, "versionfunc") else "3.3"
        info.update(
            {
                "workflow_type_versions": {t: {"workflow_type_version": list(v)} for t, v in WORKFLOW_TYPES.items()},
                "supported_wes_versions": ["1.1.0"],
                "supported_filesystem_protocols": ["drs"],
                "workflow_engine_versions": {"cwltool": {"workflow_engine_version": [engine_version]}},
                "default_workflow_engine_parameters": [],
                "system_state_counts": self._state_counts(),
                "auth_instructions_url": f"{s.effective_public_url}/docs#tokens",
                "tags": {
                    "verification": "image signature, image digest and input checksums before every task",
                    "queue": self.queue.name,
                },
            }
        )
        return info

    def _state_counts(self) -> dict[str, int]:
        """Counting every run costs O(runs): computed at most every few seconds."""
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] > 5.0:
            self._counts = (now, self.runs.state_counts())
        return self._counts[1]

    # ------------------------------------------------------------------ submission
    def submit(self, user: str, form: Mapping[str, str], files: list[tuple[str, bytes]]) -> str:
        req = parse_run_request(form, files, max_attachment_bytes=self.settings.max_attachment_bytes)
        attachment_paths = {a.path for a in req.attachments}
        refuse_local_inputs(req.workflow_params, attachment_paths)
        try:
            source = self._resolve_workflow(req)
        except IntegrityError as exc:  # unsigned/badly signed version, edited descriptor: 422
            self.platform.audit.security_event(
                "integrity.failed",
                actor=user,
                service="wes",
                target=exc.subject or req.workflow_url[:200],
                severity=9,
                details={
                    "stage": "submission",
                    "workflow_url": req.workflow_url[:300],
                    "reason": exc.message,
                    "expected": exc.expected,
                    "actual": exc.actual,
                },
            )
            raise
        # workflows are untrusted code: every reference stays inside the run (400 naming it)
        check_input_references(req.workflow_params, {a.path for a in req.attachments})
        check_workflow_documents([(a.path, a.content) for a in req.attachments], source["main"], self.settings)
        self._check_inputs(user, req)
        row = self.runs.create(
            owner=user,
            request=req.to_spec(),
            tags=req.tags,
            attachments=req.attachments,
            workflow_source=source,
        )
        try:
            self.queue.enqueue(row.id)
        except HelixGateError as exc:
            # the client gets an error and no run id: the row must not linger as QUEUED forever
            self.runs.set_state(row.id, "SYSTEM_ERROR")
            self.runs.append_system_log(row.id, f"run could not be queued: {exc.message}")
            raise
        return row.id

    def _resolve_workflow(self, req: RunRequest) -> dict[str, Any]:
        url = req.workflow_url
        paths = {a.path for a in req.attachments}
        trs = parse_trs_reference(url, self.settings)
        if trs is not None:
            tool_id, version_id = trs
            files = self.tools.descriptors(tool_id, version_id)  # checksums verified against TRS
            # ...and against the version's own verified statement: an unsigned or badly signed
            # version, or a descriptor edited with its recorded checksum, is refused here (422).
            signed = self.tools.signed_version(tool_id, version_id)
            check_descriptors({f.path: f.content for f in files}, signed)
            for f in files:
                req.attachments.append(Attachment(f.path, f.content, f.sha256))
            primary = next(f.path for f in files if f.primary)
            return {"kind": "trs", "tool_id": tool_id, "version_id": version_id, "main": primary}
        if has_scheme(url, "https", "http"):
            from helixgate.integrity import sha256_bytes
            from helixgate.netguard import fetch

            content = fetch(
                url,
                max_bytes=self.settings.max_attachment_bytes,
                allow_list=self.settings.outbound_allow_list,
                allow_private=self.settings.allow_private_addresses,
            )
            name = "workflow" + (".cwl" if not url.rsplit("/", 1)[-1] else "-" + url.rsplit("/", 1)[-1][-64:])
            name = name.replace("/", "_")
            req.attachments.append(Attachment(name, content, sha256_bytes(content)))
            return {"kind": "url", "url": url, "main": name, "sha256": sha256_bytes(content)}
        rel = url[len("file://") :] if url.startswith("file://") else url
        rel = rel.lstrip("/") if url.startswith("file://") else rel
        if rel in paths:
            return {"kind": "attachment", "main": rel}
        base = rel.rsplit("/", 1)[-1]
        if url.startswith("file://") and base in paths:  # wes-client sends client-local file:// URLs
            return {"kind": "attachment", "main": base}
        raise BadRequest(f"workflow_url {url[:200]!r} is neither an attached file, an https URL nor a TRS tool version")

    def _check_inputs(self, user: str, req: RunRequest) -> None:
        inputs = drs_inputs(req.workflow_params)
        foreign = [ref.uri for ref in inputs if ref.host != self.settings.drs_host.lower()]
        if foreign:
            raise BadRequest(
                f"DRS inputs must live in this deployment's DRS ({self.settings.drs_host}): {', '.join(foreign[:10])}"
            )
        refused = self.data.unreadable(user, [ref.object_id for ref in inputs])
        if refused:
            raise Forbidden(
                f"user {user} may not read input(s): "
                + ", ".join(f"drs://{self.settings.drs_host}/{i}" for i in refused)
            )

    # ------------------------------------------------------------------ reads
    def list_runs(
        self, viewer: Viewer, page_size: int | None, page_token: str | None, state: str | None, tags: dict[str, str]
    ) -> dict[str, Any]:
        size = check_page_size(page_size)
        rows, token = self.runs.page(
            owner=None if viewer.see_all else viewer.username,
            page_size=size,
            page_token=page_token,
            state=state,
            tags=tags,
        )
        run_tags = self.runs.tags_for([r.id for r in rows])
        runs = [
            {
                "run_id": r.id,
                "state": r.state,
                "start_time": iso(r.start_time) or "",
                "end_time": iso(r.end_time) or "",
                "tags": run_tags[r.id],
            }
            for r in rows
        ]
        return {"runs": runs, "next_page_token": token}

    def run_log(self, viewer: Viewer, run_id: str, base_url: str) -> dict[str, Any]:
        row = self.runs.visible(run_id, viewer.username, viewer.see_all)
        main = row.workflow_source.get("main", "")
        return {
            "run_id": row.id,
            "request": row.request,
            "state": row.state,
            "run_log": {
                "name": main,
                "cmd": ["helixgate-executor", main] if main else [],
                "start_time": iso(row.start_time),
                "end_time": iso(row.end_time),
                "stdout": f"{base_url}/x-helixgate/runs/{row.id}/log/stdout",
                "stderr": f"{base_url}/x-helixgate/runs/{row.id}/log/stderr",
                "exit_code": row.exit_code,
                "system_logs": list(row.system_logs or []),
            },
            "task_logs_url": f"{base_url}/runs/{row.id}/tasks",
            "outputs": row.outputs or {},
        }

    def run_status(self, viewer: Viewer, run_id: str) -> dict[str, Any]:
        row = self.runs.visible(run_id, viewer.username, viewer.see_all)
        return {"run_id": row.id, "state": row.state}

    def task_log(self, row: Any, base_url: str) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "cmd": list(row.cmd or []),
            "start_time": iso(row.start_time),
            "end_time": iso(row.end_time),
            "stdout": f"{base_url}/x-helixgate/runs/{row.run_id}/tasks/{row.id}/stdout",
            "stderr": f"{base_url}/x-helixgate/runs/{row.run_id}/tasks/{row.id}/stderr",
            "exit_code": row.exit_code,
            "system_logs": list(row.system_logs or []),
        }

    def list_tasks(
        self, viewer: Viewer, run_id: str, page_size: int | None, page_token: str | None, base_url: str
    ) -> dict[str, Any]:
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        rows, token = self.runs.tasks(run_id, check_page_size(page_size), page_token)
        return {"task_logs": [self.task_log(r, base_url) for r in rows], "next_page_token": token}

    def get_task(self, viewer: Viewer, run_id: str, task_id: str, base_url: str) -> dict[str, Any]:
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        return self.task_log(self.runs.task(run_id, task_id), base_url)

    def task_output(self, viewer: Viewer, run_id: str, task_id: str, stream: str) -> bytes:
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        task = self.runs.task(run_id, task_id)
        return (task.stdout if stream == "stdout" else task.stderr) or b""

    def run_output(self, viewer: Viewer, run_id: str, stream: str) -> bytes:
        """The run-level log: the executor's own messages (system logs) and each task's stream."""
        row = self.runs.visible(run_id, viewer.username, viewer.see_all)
        parts: list[bytes] = []
        if stream == "stderr":
            parts.extend((line + "\n").encode() for line in row.system_logs or [])
        for t in self.runs.all_tasks(run_id):
            data = t.stdout if stream == "stdout" else t.stderr
            if data:
                parts.append(f"==> {t.name} <==\n".encode() + data + b"\n")
        return b"".join(parts)

    # ------------------------------------------------------------------ cancel
    def cancel(self, viewer: Viewer, run_id: str) -> str:
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        return self.runs.request_cancel(run_id)


def build(platform: Platform) -> WorkflowService:
    return WorkflowService(platform, data=platform.port(DataPort), tools=platform.port(ToolPort))
