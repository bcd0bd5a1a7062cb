"""Per-task overhead: one verified task against the bare Docker SDK running the same image and
command (create / start / wait / remove).

Two measurements, both side by side with the bare baseline:

* **direct** — the gate's phases (``TaskGate``) called in this process one by one, each
  timed: TRS lookup (image pin over HTTP), signature check, ensure image (local id ==
  signed id), input staging (copy while hashing + checksum compare), task bookkeeping
  (task rows + audit record), the hardened container (``ContainerRunner.run``),
  output hashing. The server is a real ``helixgate serve`` (TRS/DRS over HTTP); the worker
  objects are built on its data directory.
* **through WES** — one-step and three-step runs of the same chain workflow submitted over
  HTTP; the per-task cost is ``(T3 - T1) / 2`` (the run's fixed cost cancels out).

    .venv/bin/python -m bench.task_overhead [--quick]
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_LABEL,
    BenchContext,
    Options,
    Row,
    bench_image,
    fmt_ratio,
    fmt_seconds,
    median,
    ratio,
    run_standalone,
    start_live_server,
    timed,
    wes_world,
)

NAME = "task_overhead"
COMMAND = ["sh", "-c", 'cat "$0"; echo "$1"', "/var/lib/cwl/input.txt", "s01"]
PHASES = (
    "TRS lookup (image pin, HTTP; bundle cached 60 s)",
    "verify signature",
    "ensure image (local id == signed id)",
    "stage inputs (copy + sha256 + compare)",
    "task bookkeeping (task rows + audit)",
    "run hardened container",
    "hash outputs",
)


class PhaseClock:
    """Wall time per named phase: summed within a task, one sample per task and phase."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {p: [] for p in PHASES}
        self._task: dict[str, float] = {}

    def time(self, phase: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self._task[phase] = self._task.get(phase, 0.0) + time.perf_counter() - start

    def end_task(self) -> None:
        for phase in PHASES:
            self.samples[phase].append(self._task.pop(phase, 0.0))


def bare_task(client: Any, image_id: str, input_path: Path, run_id: str, *, network: str | None = None) -> float:
    """The baseline: the Docker SDK's create/start/wait/remove of the same image and command
    (engine defaults; ``network="none"`` skips the bridge set-up as the hardened runner does)."""
    from docker.types import Mount

    def go() -> None:
        c = client.containers.create(
            image=image_id,
            command=COMMAND,
            labels={BENCH_LABEL: run_id},
            mounts=[Mount(target="/var/lib/cwl/input.txt", source=str(input_path), type="bind", read_only=True)],
            network_mode=network,
        )
        try:
            c.start()
            if c.wait()["StatusCode"] != 0:
                raise RuntimeError("bare task failed")
        finally:
            c.remove(force=True)

    return timed(go)


def run(opts: Options, ctx: BenchContext) -> list[Row]:
    import docker

    from helixgate.config import load_settings
    from helixgate.integrity import sha256_file
    from helixgate_app.services import build_platform
    from wes_server import gate
    from wes_server.containers import TaskContainerSpec
    from wes_server.domain import WorkflowService
    from wes_server.executor import Executor

    repeats = 5 if opts.quick else 15
    wes_repeats = 2 if opts.quick else 5
    image_ref, image_id = bench_image(ctx)
    server = start_live_server(ctx, "server", workers=1)
    world = wes_world(ctx, server, image_ref, (1, 3))
    client = docker.from_env()
    ctx.cleanups.callback(client.close)

    # worker-side objects on the server's data directory (same database, keys, TRS over HTTP)
    platform = build_platform(load_settings(env=server.env))
    ctx.cleanups.callback(platform.close)
    executor = Executor(settings=platform.settings, wes=platform.domain(WorkflowService), audit=platform.audit)
    wes = executor.wes
    run_row = wes.runs.create(owner="ann", request={}, tags={}, attachments=[], workflow_source={"kind": "bench"})
    execution = executor.execution(run_row, threading.Event())
    task_gate = execution.gate
    src = ctx.tmp / "input.txt"
    src.write_bytes(world.input_text)
    known = hashlib.sha256(world.input_text).hexdigest()
    prefer = (world.tool_id, world.versions[1])
    clock = PhaseClock()

    def verified_task(n: int) -> float:
        task_id = f"{n:03d}-s01"
        task_dir = ctx.tmp / "tasks" / task_id
        stage, outdir = task_dir / "inputs", task_dir / "out"
        stage.mkdir(parents=True)
        outdir.mkdir()
        start = time.perf_counter()
        clock.time(PHASES[4], lambda: wes.runs.add_task(run_row.id, task_id, "s01", state="INITIALIZING"))
        pin = clock.time(PHASES[0], lambda: wes.tools.image_pin(image_ref, prefer))

        def verify() -> gate.SignedTool:
            signed = wes.tools.signed_version(pin.tool_id, pin.version_id)
            task_gate.digests(image_ref, pin, signed)
            return signed

        signed = clock.time(PHASES[1], verify)

        def ensure() -> None:
            task_gate.local_image(signed)

        clock.time(PHASES[2], ensure)

        def stage_input() -> None:
            dst = stage / "input.txt"
            what = "input input.txt"
            gate.check_input(what, known, gate.hash_input_file(str(src), what, copy_to=str(dst)), "bench")
            os.chmod(dst, 0o444)

        clock.time(PHASES[3], stage_input)

        def start_bookkeeping() -> None:
            wes.runs.update_task(run_row.id, task_id, state="RUNNING", image_id=pin.image_id,
                                 inputs=[{"path": "input.txt", "sha256": known}])
            execution.audit.executed("wes.task.start", task_id, {"image_id": pin.image_id})

        clock.time(PHASES[4], start_bookkeeping)
        spec = TaskContainerSpec(
            run_id=run_row.id, task_id=task_id, image_id=pin.image_id, command=COMMAND,
            output_dir=str(outdir), stdout_path=str(outdir / "out.txt"), stderr_path=str(task_dir / "stderr.log"),
            inputs=[(str(stage / "input.txt"), "/var/lib/cwl/input.txt")], workdir="/var/spool/cwl",
            cpus=1.0, memory_bytes=64 * 1024 * 1024,
        )
        result = clock.time(PHASES[5], lambda: executor.runner.run(spec))
        if not result.succeeded:
            raise RuntimeError(f"verified task failed: exit {result.exit_code} {result.error}")
        digest = clock.time(PHASES[6], lambda: sha256_file(str(outdir / "out.txt")))
        clock.time(PHASES[4], lambda: wes.runs.update_task(
            run_row.id, task_id, state="COMPLETE", exit_code=0, outputs=[{"path": "out.txt", "sha256": digest}]))
        seconds = time.perf_counter() - start
        clock.end_task()
        return seconds

    ctx.log(f"{NAME}: warming up (first trust-policy fetch, first container)")
    verified_task(0)
    clock = PhaseClock()
    bare_task(client, image_id, src, ctx.run_id)
    ctx.log(f"{NAME}: {repeats} verified tasks vs {repeats} bare SDK tasks, interleaved")
    verified: list[float] = []
    bare: list[float] = []
    bare_none: list[float] = []
    for n in range(1, repeats + 1):
        bare.append(bare_task(client, image_id, src, ctx.run_id))
        bare_none.append(bare_task(client, image_id, src, ctx.run_id, network="none"))
        verified.append(verified_task(n))

    ctx.log(f"{NAME}: {wes_repeats} one-step and three-step runs through WES")
    world.run_once(1)  # warm-up: the worker loads cwltool once
    t1s: list[float] = []
    t3s: list[float] = []
    wes_bare: list[float] = []
    task_times: list[float] = []
    for _ in range(wes_repeats):
        wes_bare.append(bare_task(client, image_id, src, ctx.run_id))
        t1s.append(world.run_once(1))
        t3s.append(world.run_once(3))
        task_times += world.task_seconds(world.last_run_id)
    t_bare, t_none, t_ver = median(bare), median(bare_none), median(verified)
    t_wes_bare = median(wes_bare + bare)
    per_task = (median(t3s) - median(t1s)) / 2
    b = "task overhead"
    rows = [
        Row(b, "one verified task, direct (gate phases + hardened run) vs bare SDK (defaults)",
            fmt_seconds(t_ver), fmt_seconds(t_bare), fmt_ratio(ratio(t_ver, t_bare)), "≤ 1.30×"),
        Row(b, "one verified task, direct vs bare SDK with network none", fmt_seconds(t_ver), fmt_seconds(t_none),
            fmt_ratio(ratio(t_ver, t_none))),
    ]
    for phase in PHASES:
        t = median(clock.samples[phase])
        rows.append(Row(b, f"  phase: {phase}", fmt_seconds(t), "", f"{100 * t / t_ver:.0f}% of task"))
    rows += [
        Row(b, "task inside a WES run (task record start → end, gate included) vs bare SDK",
            fmt_seconds(median(task_times)), fmt_seconds(t_wes_bare), fmt_ratio(ratio(median(task_times), t_wes_bare)),
            "≤ 1.30×"),
        Row(b, "per task through WES: (T(3 steps) − T(1 step)) / 2 vs bare SDK",
            fmt_seconds(per_task), fmt_seconds(t_wes_bare), fmt_ratio(ratio(per_task, t_wes_bare))),
        Row(b, "one-step run through WES, submit → COMPLETE (fixed run cost + 1 task)", fmt_seconds(median(t1s)),
            fmt_seconds(t_wes_bare), fmt_ratio(ratio(median(t1s), t_wes_bare))),
    ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(NAME, run, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
