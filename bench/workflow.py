"""Workflow end to end: the same 10-step CWL chain (each step one small container task) through
HelixGate WES — tool published and signed in TRS, input in DRS, every task verified — against
plain ``cwltool`` running the identical files with Docker (``docker run`` through the CLI).

Both use the same locally built image ``helixgate-bench/busybox:b-<id>``; cwltool finds it
with ``docker image inspect`` and never pulls. HelixGate's figure is submit → COMPLETE, as
a client sees it (queue pick-up, DRS staging, ten verified tasks, outputs published to DRS).

    .venv/bin/python -m bench.workflow [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    BenchContext,
    Options,
    Row,
    bench_image,
    chain_output,
    chain_workflow,
    fmt_ratio,
    fmt_seconds,
    median,
    ratio,
    run_standalone,
    start_live_server,
    timed,
    wes_world,
)

NAME = "workflow"
STEPS = 10
CWLTOOL = str(Path(sys.executable).parent / "cwltool")


def cwltool_run(workdir: Path, n: int, image_ref: str, text: bytes) -> float:
    """One plain cwltool run of the chain in its own directory; wall seconds."""
    workdir.mkdir(parents=True)
    for name, content in chain_workflow(STEPS, image_ref).items():
        (workdir / name).write_text(content)
    (workdir / "input.txt").write_bytes(text)
    (workdir / "job.json").write_text(json.dumps({"text": {"class": "File", "path": str(workdir / "input.txt")}}))
    out = workdir / "out"
    cmd = [
        CWLTOOL, "--quiet", "--outdir", str(out),
        "--tmpdir-prefix", str(workdir / "tmp") + "/", "--tmp-outdir-prefix", str(workdir / "tmpout") + "/",
        str(workdir / "workflow.cwl"), str(workdir / "job.json"),
    ]
    result: list[subprocess.CompletedProcess[str]] = []
    seconds = timed(lambda: result.append(subprocess.run(cmd, capture_output=True, text=True, timeout=600)))
    proc = result[0]
    if proc.returncode != 0:
        raise RuntimeError(f"cwltool run {n} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if (out / "out.txt").read_bytes() != chain_output(text, STEPS):
        raise RuntimeError(f"cwltool run {n} produced unexpected output")
    return seconds


def run(opts: Options, ctx: BenchContext) -> list[Row]:
    repeats = 1 if opts.quick else 3
    image_ref, _ = bench_image(ctx)
    server = start_live_server(ctx, "server", workers=1)
    world = wes_world(ctx, server, image_ref, (STEPS,))
    ctx.log(f"{NAME}: warm-up run through WES (the worker loads cwltool once per process)")
    world.run_once(STEPS)
    ctx.log(f"{NAME}: {repeats} × {STEPS}-step workflow, WES vs plain cwltool, interleaved")
    wes_times: list[float] = []
    plain_times: list[float] = []
    for i in range(repeats):
        plain_times.append(cwltool_run(ctx.tmp / f"cwltool-{i}", i, image_ref, world.input_text))
        wes_times.append(world.run_once(STEPS))
    t_wes, t_plain = median(wes_times), median(plain_times)
    return [
        Row(f"workflow {STEPS} steps", "HelixGate WES (verified) vs plain cwltool + Docker, wall time",
            fmt_seconds(t_wes), fmt_seconds(t_plain), fmt_ratio(ratio(t_wes, t_plain)), "< 1.00×"),
        Row(f"workflow {STEPS} steps", "per step (wall / steps)", fmt_seconds(t_wes / STEPS),
            fmt_seconds(t_plain / STEPS), "", "ARCHITECTURE §9: cwltool ≈13.8 s"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(NAME, run, argv, __doc__ or NAME)


if __name__ == "__main__":
    raise SystemExit(main())
