"""Workers: lease runs from the queue, claim them (compare-and-set on the run row), keep
the lease alive with heartbeats, execute, record the outcome. A reconciler re-queues or
fails runs whose worker died and removes containers nobody owns any more."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from helixgate.errors import HelixGateError
from helixgate.platform import Platform
from wes_server.domain import WorkflowService
from wes_server.queue import Lease
from wes_server.runs import TERMINAL

log = logging.getLogger("helixgate.worker")


class RunCancelled(Exception):
    """Raised inside the executor when the run's cancellation was requested."""


class WorkerPool:
    def __init__(self, platform: Platform, *, concurrency: int = 2, poll_interval: float = 0.5) -> None:
        self.platform = platform
        self.wes = platform.domain(WorkflowService)
        self.settings = platform.settings
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        from wes_server.containers import process_identity

        # host:pid first: the reconciler matches it with the process label of task containers
        self.worker_id = f"{process_identity()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._executor: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from wes_server import jsbox
        from wes_server.engine_host import check_available

        # workflows are evaluated only in their sandboxes: without them, no worker
        jsbox.install(self.settings)
        check_available(self.settings.data_dir / "wes" / "work")
        for i in range(self.concurrency):
            t = threading.Thread(target=self._loop, name=f"hg-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._reconcile_loop, name="hg-reconciler", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    @property
    def executor(self) -> Any:
        if self._executor is None:
            from wes_server.executor import Executor

            self._executor = Executor(settings=self.settings, wes=self.wes, audit=self.platform.audit)
        return self._executor

    # ------------------------------------------------------------------ work loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                lease = self.wes.queue.lease(self.worker_id, self.settings.lease_seconds)
            except HelixGateError as exc:
                log.warning("queue unavailable: %s", exc.message)
                self._stop.wait(2.0)
                continue
            except Exception:
                log.exception("queue lease failed")
                self._stop.wait(2.0)
                continue
            if lease is None:
                if self.wes.submitted.wait(self.poll_interval):
                    self.wes.submitted.clear()
                continue
            try:
                self.process(lease)
            except Exception:
                log.exception("run %s failed in the worker", lease.run_id)

    def process(self, lease: Lease) -> None:
        """Run one leased run to a terminal state (or leave it for the reconciler if we die)."""
        runs = self.wes.runs
        run = runs.claim(lease.run_id, self.worker_id, self.settings.lease_seconds, self.settings.max_attempts)
        if run is None:
            # Someone else owns it, it ended, or it ran out of attempts: nothing to do here.
            current = None
            try:
                current = runs.get(lease.run_id)
            except HelixGateError:
                pass
            if current is None or current.state in TERMINAL:
                self.wes.queue.ack(lease)
            elif current.state == "QUEUED" and current.attempts >= self.settings.max_attempts:
                runs.set_state(lease.run_id, "SYSTEM_ERROR")
                runs.append_system_log(lease.run_id, "run gave up: attempts exhausted")
                self.wes.queue.ack(lease)
            return
        if run.attempts > 1:
            runs.append_system_log(
                run.id, f"attempt {run.attempts}: the previous attempt did not finish; run re-queued and restarted"
            )
        cancel = threading.Event()
        lost = threading.Event()
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(lease, cancel, lost, done), name=f"hg-heartbeat-{run.id[:8]}", daemon=True
        )
        beat.start()
        try:
            outcome = self.executor.execute(run, cancel=cancel)
            if lost.is_set():
                log.warning("lease on run %s lost during execution; result discarded", run.id)
                return
            runs.set_state(
                run.id,
                outcome.state,
                worker_id=self.worker_id,
                outputs=outcome.outputs,
                exit_code=outcome.exit_code,
            )
            self._audit_end(run, outcome.state)
        except Exception as exc:  # the executor must not take the worker down
            log.exception("executor crashed on run %s", run.id)
            runs.append_system_log(run.id, f"executor error: {type(exc).__name__}")
            runs.set_state(run.id, "SYSTEM_ERROR", worker_id=self.worker_id)
            self._audit_end(run, "SYSTEM_ERROR")
        finally:
            done.set()
            beat.join(5)
            try:
                self.wes.queue.ack(lease)
            except HelixGateError as exc:
                log.warning("ack of run %s failed: %s", run.id, exc.message)

    def _heartbeat(self, lease: Lease, cancel: threading.Event, lost: threading.Event, done: threading.Event) -> None:
        """Refresh the run's lease (row + queue) until the run is done; relay cancellation."""
        interval = max(0.5, min(5.0, self.settings.lease_seconds / 4))
        while not done.wait(interval):
            try:
                requested = self.wes.runs.heartbeat(lease.run_id, self.worker_id)
            except Exception:  # database blip: try again next beat, the lease has slack
                log.warning("heartbeat for run %s failed", lease.run_id)
                continue
            if requested is None:  # ended elsewhere, or taken over by the reconciler
                if self.wes.runs.get(lease.run_id).state not in TERMINAL:
                    lost.set()
                cancel.set()
                return
            if requested:
                cancel.set()
            try:
                self.wes.queue.extend(lease, self.settings.lease_seconds)
            except HelixGateError:
                log.warning("queue lease extension for run %s failed", lease.run_id)

    def _audit_end(self, run: Any, state: str) -> None:
        self.platform.audit.record(
            category="execution",
            action="wes.run.end",
            outcome="success" if state == "COMPLETE" else "failure",
            actor=self.settings.service_user,
            on_behalf_of=run.owner,
            service="wes",
            target=run.id,
            details={"state": state},
        )

    # ------------------------------------------------------------------ reconciler
    def reconcile_once(self) -> dict[str, int]:
        """Re-queue or fail runs whose worker stopped heart-beating; remove orphan containers."""
        runs = self.wes.runs
        requeued = failed = 0
        for run in runs.stale_runs(self.settings.lease_seconds):
            if run.state == "CANCELING" or run.cancel_requested:
                if runs.set_state(run.id, "CANCELED"):
                    runs.append_system_log(run.id, "worker lost while canceling; run canceled by the reconciler")
                continue
            if run.attempts < self.settings.max_attempts:
                if runs.requeue(run.id, f"worker {run.worker_id} stopped responding; run re-queued"):
                    self.wes.queue.enqueue(run.id)
                    requeued += 1
            else:
                if runs.set_state(run.id, "SYSTEM_ERROR"):
                    runs.append_system_log(run.id, f"worker {run.worker_id} stopped responding; attempts exhausted")
                    failed += 1
        removed = 0
        try:
            from wes_server.containers import ContainerRunner

            runner = ContainerRunner(scope=self.settings.container_scope)
            lease = self.settings.lease_seconds
            removed = len(runner.remove_orphans(lambda found: runs.container_owners(found, lease)))
        except Exception as exc:  # docker down: try again next round
            log.warning("orphan container sweep failed: %s", type(exc).__name__)
        return {"requeued": requeued, "failed": failed, "containers_removed": removed}

    def _reconcile_loop(self) -> None:
        interval = max(2.0, self.settings.lease_seconds / 2)
        while not self._stop.wait(interval):
            try:
                self.reconcile_once()
            except Exception:
                log.exception("reconciler round failed")
