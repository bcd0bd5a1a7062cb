"""WES domain: accept runs (with every submission check), show them to whom may see
them, cancel them. Execution happens in ``wes_server.worker``; the handlers render what
these methods return with ``wes_server.shapes``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from helixgate.errors import BadRequest, Forbidden, HelixGateError, IntegrityError
from helixgate.platform import Platform
from helixgate.ports import DataPort, ToolPort
from helixgate.uris import has_scheme
from wes_server.gate import check_descriptors
from wes_server.models import RunRow, TaskRow
from wes_server.queue import RunQueue, make_queue
from wes_server.runs import Attachment, RunStore, check_page_size
from wes_server.submission import (
    RunRequest,
    check_wdl_run,
    drs_inputs,
    engine_versions,
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


@dataclass(frozen=True)
class ServiceFacts:
    """What service-info reports that only the running service knows."""

    engine_versions: Mapping[str, str]  # engine name -> installed version
    queue_name: str
    state_counts: Mapping[str, int]


@dataclass(frozen=True)
class RunPage:
    rows: Sequence[RunRow]
    tags: Mapping[str, dict[str, str]]  # run id -> its tags
    next_page_token: str


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
    def service_facts(self) -> ServiceFacts:
        return ServiceFacts(engine_versions(), self.queue.name, self._state_counts())

    def _state_counts(self) -> dict[str, int]:
        """Counting every run costs O(runs): computed at most every few seconds."""
        now = time.monotonic()
        if self._counts is None or now - self._counts[0] > 5.0:
            self._counts = (now, self.runs.state_counts())
        return self._counts[1]

    # ------------------------------------------------------------------ submission
    def submit(self, user: str, req: RunRequest) -> str:
        """Accept a run request (parsed from the form by ``submission.parse_run_request``)."""
        attachment_paths = {a.path for a in req.attachments}
        if req.workflow_type != "WDL":
            # CWL marks its files in the inputs; WDL's are known by the declared types only
            # (check_wdl_run, once the document is read): a WDL String may hold any text
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
        if req.workflow_type == "WDL":
            check_wdl_run(req, source["main"])
        else:
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
            # the version's descriptors in the request's language, checksums verified against TRS
            files = self.tools.descriptors(tool_id, version_id, req.workflow_type)
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
            suffix = ".wdl" if req.workflow_type == "WDL" else ".cwl"
            name = "workflow" + (suffix if not url.rsplit("/", 1)[-1] else "-" + url.rsplit("/", 1)[-1][-64:])
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
    ) -> RunPage:
        size = check_page_size(page_size)
        rows, token = self.runs.page(
            owner=None if viewer.see_all else viewer.username,
            page_size=size,
            page_token=page_token,
            state=state,
            tags=tags,
        )
        return RunPage(rows, self.runs.tags_for([r.id for r in rows]), token)

    def get_run(self, viewer: Viewer, run_id: str) -> RunRow:
        """The run, if ``viewer`` may see it (else the same 404 as a missing run)."""
        return self.runs.visible(run_id, viewer.username, viewer.see_all)

    def list_tasks(
        self, viewer: Viewer, run_id: str, page_size: int | None, page_token: str | None
    ) -> tuple[list[TaskRow], str]:
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        return self.runs.tasks(run_id, check_page_size(page_size), page_token)

    def get_task(self, viewer: Viewer, run_id: str, task_id: str) -> TaskRow:
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        return self.runs.task(run_id, task_id)

    def run_evidence(self, viewer: Viewer, run_id: str) -> list[TaskRow]:
        """Every task of the run, in start order, with what the gate checked."""
        self.runs.visible(run_id, viewer.username, viewer.see_all)
        return self.runs.all_tasks(run_id)

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
