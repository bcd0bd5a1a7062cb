"""The state of one run while a worker executes it, shared by the executor (preparation,
publication), the engine host (task requests) and ``tasks.run_task`` (one task): where the
run's files are, what checksums are known, the run's gate and its audit records."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from helixgate.audit import AuditTrail
from helixgate.config import Settings
from helixgate.errors import HelixGateError, IntegrityError
from wes_server.containers import ContainerRunner
from wes_server.gate import ChecksumRegistry, SignedVersionSource, TaskGate
from wes_server.runs import RunStore
from wes_server.workflow_guard import Refusals

CONTAINER_OUTDIR = "/var/spool/cwl"
CONTAINER_STAGEDIR = "/var/lib/cwl"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class RunOutcome:
    state: str
    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


class WorkflowFailed(HelixGateError):
    """The workflow itself failed in the engine (invalid document, failing expression)."""

    status = 422


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RunAudit:
    """The audit records of one run's execution: WES acting for the run's owner."""

    def __init__(self, audit: AuditTrail, service_user: str, run_id: str, owner: str) -> None:
        self.audit = audit
        self.service_user = service_user
        self.run_id = run_id
        self.owner = owner

    def executed(self, action: str, target: str, details: dict[str, Any]) -> None:
        self.audit.record(
            category="execution",
            action=action,
            outcome="success",
            actor=self.service_user,
            on_behalf_of=self.owner,
            service="wes",
            target=target,
            details={"run_id": self.run_id, **details},
        )

    def integrity_failed(self, exc: IntegrityError, task_id: str | None) -> None:
        self.audit.security_event(
            "integrity.failed",
            actor=self.service_user,
            on_behalf_of=self.owner,
            service="wes",
            target=exc.subject or self.run_id,
            severity=9,
            details={
                "run_id": self.run_id,
                "task_id": task_id,
                "reason": exc.message,
                "expected": exc.expected,
                "actual": exc.actual,
            },
        )


class RunExecution:
    """State of one run while it executes: where things are, what is known to be right."""

    def __init__(
        self,
        *,
        run: Any,
        cancel: threading.Event,
        workdir: Path,
        settings: Settings,
        runs: RunStore,
        runner: ContainerRunner,
        audit: AuditTrail,
        tools: SignedVersionSource,
    ) -> None:
        self.run = run
        self.cancel = cancel
        self.workdir = workdir
        # the gate's staged, checked input copies and task logs: beside the run's directory,
        # never inside it -- the engine's sandbox can write the run's directory, not this one
        self.stage_root = workdir.with_name(f"{workdir.name}.tasks")
        self.settings = settings
        self.runs = runs
        self.runner = runner
        self.audit = RunAudit(audit, settings.service_user, run.id, run.owner)
        self.registry = ChecksumRegistry()
        self.gate = TaskGate(tools=tools, images=runner, registry=self.registry, sink=self)
        self.task_counter = 0
        self.counter_lock = threading.Lock()
        self.failure: HelixGateError | None = None
        self.done = threading.Event()
        self.download_lock = threading.Lock()  # one download of a DRS object per run
        # references the restricted loader or the confined file system refused: each one is
        # a security event (a workflow reached for something that is not its own)
        self.refusals = Refusals(self._refused_reference)

    def _refused_reference(self, reference: str, reason: str) -> None:
        exc = IntegrityError(f"workflow reference {reference} refused: {reason}", subject=reference)
        self.audit.integrity_failed(exc, None)

    def refused(self, exc: IntegrityError, task_id: str) -> None:
        """A task was refused (the gate's ``RefusalSink``): the run stops, the refusal is a
        security event and lands in the run log."""
        self.fail(exc)
        self.audit.integrity_failed(exc, task_id)
        self.runs.append_system_log(self.run.id, f"task {task_id} refused before start: {exc.message}")

    def next_task_id(self, name: str) -> str:
        with self.counter_lock:
            self.task_counter += 1
            return f"{self.task_counter:03d}-{SAFE_NAME.sub('_', name)[:80]}"

    def fail(self, exc: HelixGateError) -> None:
        if self.failure is None:
            self.failure = exc
