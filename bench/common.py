"""Shared benchmark plumbing: statistics, formatting, a live ``helixgate serve`` process, Docker
images and clean-up. Pure helpers (statistics and formatting) have no side effects and are
covered by ``tests/unit/test_bench_smoke.py``; everything else touches real services.

Every benchmark measures HelixGate and its baseline side by side in the same process and
run, alternating the two so a noisy neighbour on the shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BENCH_LABEL = "helixgate.bench"  # on every image and container a benchmark creates
BENCH_REPOSITORY = "helixgate-bench/busybox"
MiB = 1024 * 1024
GiB = 1024 * MiB


# ---------------------------------------------------------------------------- statistics
def median(values: Sequence[float]) -> float:
    """The median of ``values`` (mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median of no values")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; infinity when the baseline is zero (never divides by zero)."""
    if baseline == 0:
        return math.inf if value else 1.0
    return value / baseline


# ---------------------------------------------------------------------------- formatting
def fmt_seconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_ratio(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return "n/a"
    return f"{value:.2f}×"


def fmt_rate(nbytes: int, seconds: float) -> str:
    """Throughput in MB/s (10^6 bytes, as storage and network rates are usually quoted)."""
    if seconds <= 0:
        return "n/a"
    return f"{nbytes / seconds / 1e6:.0f} MB/s"


def fmt_bytes(nbytes: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    benchmark: str
    measure: str
    helixgate: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""


HEADER = ("Benchmark", "Measure", "HelixGate", "Baseline", "Ratio", "Target")


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table (pasted as is into docs/benchmarks.md)."""
    cells = [HEADER, *((r.benchmark, r.measure, r.helixgate, r.baseline, r.ratio, r.target) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]

    def line(c: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(c) for c in cells[1:])])


# ---------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    repeats: int, subject: Callable[[], float], baseline: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run ``subject`` and ``baseline`` ``repeats`` times each, interleaved (B, S, B, S...).

    Each callable returns the seconds it measured (so set-up inside it is not timed).
    """
    subj: list[float] = []
    base: list[float] = []
    for _ in range(repeats):
        base.append(baseline())
        subj.append(subject())
    return subj, base


# ---------------------------------------------------------------------------- process memory
def proc_status_kib(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmHWM, VmRSS...) in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(f"{field_name} not in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` value 5, Linux >= 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- options
@dataclass
class Options:
    quick: bool = False
    keep: bool = False  # keep the temporary directory (server logs) for inspection
    extra: dict[str, Any] = field(default_factory=dict)


def parse_options(argv: Sequence[str] | None, description: str) -> Options:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and server log")
    args = parser.parse_args(argv)
    return Options(quick=args.quick, keep=args.keep)


def run_standalone(
    name: str, fn: Callable[[Options, BenchContext], list[Row]], argv: Sequence[str] | None, description: str
) -> int:
    """Entry point of one benchmark module: run it, print its table."""
    opts = parse_options(argv, description)
    with bench_context(name, keep=opts.keep) as ctx:
        rows = fn(opts, ctx)
    print(render_table(rows))
    return 0


# ---------------------------------------------------------------------------- context & clean-up
@dataclass
class BenchContext:
    """One benchmark run: a unique id, a private temporary directory, and clean-up actions."""

    run_id: str
    tmp: Path
    cleanups: contextlib.ExitStack

    @property
    def scope(self) -> str:
        """Container scope of servers started by this run (``helixgate.scope`` label)."""
        return f"bench-{self.run_id}"

    def log(self, message: str) -> None:
        print(f"[bench {self.run_id}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def bench_context(name: str, *, keep: bool = False) -> Iterator[BenchContext]:
    run_id = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix=f"helixgate-bench-{name}-"))
    with contextlib.ExitStack() as stack:
        ctx = BenchContext(run_id, tmp, stack)
        stack.callback(_cleanup_docker, run_id, ctx.scope)
        if keep:
            stack.callback(ctx.log, f"kept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        yield ctx


def _cleanup_docker(run_id: str, scope: str) -> None:
    """Remove every container and image this run labelled; quiet when Docker was never used."""
    try:
        import docker
        import docker.errors

        client = docker.from_env()
        client.ping()
    except Exception:  # no engine: nothing of ours can exist there
        return
    try:
        found = client.api.containers(all=True, filters={"label": f"helixgate.scope={scope}"})
        found += client.api.containers(all=True, filters={"label": f"{BENCH_LABEL}={run_id}"})
        for c in found:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True, v=True)
        for image in client.api.images(filters={"label": f"{BENCH_LABEL}={run_id}"}):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(image["Id"], force=True)
    finally:
        client.close()


def bench_image(ctx: BenchContext) -> tuple[str, str]:
    """Build ``helixgate-bench/busybox:b-<run id>`` offline (removed at clean-up); return (reference, image id)."""
    import docker

    from helixgate.images import build_busybox_image

    client = docker.from_env()
    try:
        tag = f"b-{ctx.run_id}"
        image_id = build_busybox_image(client, BENCH_REPOSITORY, tag, labels={BENCH_LABEL: ctx.run_id})
    finally:
        client.close()
    return f"{BENCH_REPOSITORY}:{tag}", image_id


# ---------------------------------------------------------------------------- live server
def start_live_server(
    ctx: BenchContext, name: str, *, workers: int = 2, extra_env: dict[str, str] | None = None
) -> Any:
    """A real ``helixgate serve all`` process (tests/fixtures/live.py) stopped at clean-up."""
    if str(ROOT) not in sys.path:  # the fixture lives in the test tree, not in an installed package
        sys.path.insert(0, str(ROOT))
    from tests.fixtures.live import start_server, stop_server

    env = {"HELIXGATE_CONTAINER_SCOPE": ctx.scope, **(extra_env or {})}
    server = start_server(ctx.tmp / name, extra_env=env, workers=workers)
    ctx.cleanups.callback(stop_server, server)
    return server


def start_http_floor(ctx: BenchContext, serve_file: Path | None = None) -> str:
    """``bench/http_floor.py`` under uvicorn on a free loopback port, stopped at clean-up."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fixtures.live import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.http_floor:app", "--port", str(port), "--log-level", "warning"],
        cwd=str(ROOT),
        env={**os.environ, "HELIXGATE_BENCH_FLOOR_FILE": str(serve_file or "")},
    )
    ctx.cleanups.callback(proc.wait, 30)
    ctx.cleanups.callback(proc.terminate)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.post(url, data=b"", timeout=5)
            return url
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the HTTP floor server did not start") from None
            time.sleep(0.1)


def write_random_file(path: Path, size: int) -> None:
    """``size`` incompressible bytes (so no layer can cheat by compressing)."""
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, 4 * MiB)
            fh.write(os.urandom(n))
            left -= n



# ---------------------------------------------------------------------------- workflows
STEP_TOOL = """cwlVersion: v1.2
class: CommandLineTool
label: copy the input and append this step's label (one short container task)
requirements:
  DockerRequirement: {dockerPull: "@IMAGE@"}
  ResourceRequirement: {coresMax: 1, ramMax: 64}
baseCommand: [sh, -c, 'cat "$0"; echo "$1"']
inputs:
  src: {type: File, inputBinding: {position: 1}}
  label: {type: string, inputBinding: {position: 2}}
outputs:
  out: {type: stdout}
stdout: out.txt
"""


def chain_workflow(steps: int, image: str) -> dict[str, str]:
    """A CWL workflow of ``steps`` container tasks in a chain (each reads the previous output).

    Returns {file name: content}: ``workflow.cwl`` (primary) and ``step.cwl``.
    """
    if steps < 1:
        raise ValueError("a workflow needs at least one step")
    lines = [
        "cwlVersion: v1.2",
        "class: Workflow",
        f"label: a chain of {steps} container steps",
        "inputs:",
        "  text: File",
        "outputs:",
        f"  final: {{type: File, outputSource: s{steps:02d}/out}}",
        "steps:",
    ]
    for i in range(1, steps + 1):
        src = "text" if i == 1 else f"s{i - 1:02d}/out"
        lines += [
            f"  s{i:02d}:",
            "    run: step.cwl",
            f"    in: {{src: {src}, label: {{default: s{i:02d}}}}}",
            "    out: [out]",
        ]
    return {"workflow.cwl": "\n".join(lines) + "\n", "step.cwl": STEP_TOOL.replace("@IMAGE@", image)}


def chain_output(text: bytes, steps: int) -> bytes:
    """What ``chain_workflow(steps)`` produces from ``text``."""
    return text + b"".join(f"s{i:02d}\n".encode() for i in range(1, steps + 1))


@dataclass
class WesWorld:
    """A live server with a published chain workflow per step count and one DRS input."""

    server: Any
    analyst: Any  # helixgate.sdk.HelixGate
    tool_id: str
    versions: dict[int, str]  # steps -> TRS version id
    input_uri: str
    input_text: bytes
    last_run_id: str = ""

    def submit(self, steps: int) -> str:
        host = self.server.url.split("://", 1)[1]
        params = {"text": {"class": "File", "location": self.input_uri}}
        return str(self.analyst.submit_run(f"trs://{host}/{self.tool_id}/{self.versions[steps]}", params))

    def wait(self, run_id: str, *, timeout: float = 600, poll: float = 0.1) -> str:
        """Poll the status finely (the SDK polls every 0.5 s, too coarse for a per-task figure)."""
        from helixgate.sdk import TERMINAL, WES

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = str(self.analyst.api.get_json(f"{WES}/runs/{run_id}/status")["state"])
            if state in TERMINAL:
                return state
            time.sleep(poll)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f} s")

    def run_once(self, steps: int) -> float:
        """Submit, wait; wall seconds from submission to the terminal state. Fails on anything but COMPLETE."""
        start = time.perf_counter()
        run_id = self.submit(steps)
        state = self.wait(run_id)
        seconds = time.perf_counter() - start
        self.last_run_id = run_id
        if state != "COMPLETE":
            log = self.analyst.run_log(run_id)
            raise RuntimeError(f"{steps}-step run {run_id} ended {state}: {log['run_log'].get('system_logs')}")
        return seconds

    def task_seconds(self, run_id: str) -> list[float]:
        """Each task's duration as the server recorded it (from before the gate to after output hashing)."""
        from datetime import datetime

        def parse(value: str) -> datetime:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))

        return [
            (parse(t["end_time"]) - parse(t["start_time"])).total_seconds()
            for t in self.analyst.run_tasks(run_id)
            if t.get("start_time") and t.get("end_time")
        ]


def wes_world(ctx: BenchContext, server: Any, image_ref: str, step_counts: Sequence[int]) -> WesWorld:
    """Publish ``chain_workflow(n)`` for every n as signed TRS versions; upload the input to DRS."""
    from helixgate.sdk import HelixGate

    dev = HelixGate.connect(server.url, server.user("dev", "tool-developer"))
    steward = HelixGate.connect(server.url, server.user("steward", "data-steward"))
    analyst = HelixGate.connect(server.url, server.user("ann", "analyst"))
    tool = dev.create_tool("helixgate-bench", f"chain-{ctx.run_id}")
    versions: dict[int, str] = {}
    for n in step_counts:
        version = f"1.0.{n}"
        dev.publish_version(tool["id"], version, chain_workflow(n, image_ref), [image_ref], primary="workflow.cwl")
        versions[n] = version
    dataset = steward.create_dataset("bench-inputs")
    steward.grant(dataset["id"], "ann")
    text = b"helixgate benchmark input\n"
    obj = steward.upload(text, name="input.txt", dataset_id=dataset["id"])
    host = server.url.split("://", 1)[1]
    return WesWorld(server, analyst, tool["id"], versions, f"drs://{host}/{obj['id']}", text)
