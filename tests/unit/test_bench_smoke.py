"""The benchmark modules import cleanly and their pure helpers compute what they claim.

No timings are measured or asserted here: performance is measured by ``python -m bench``.
"""

from __future__ import annotations

import importlib
import math
import os

import pytest

from bench import common
from bench.run_all import BENCHMARKS


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_module_imports_and_exposes_run_and_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.run) and callable(module.main)
    assert module.__doc__ and f"bench.{name}" in module.__doc__  # documents how to run it alone


def test_median_of_odd_and_even_counts() -> None:
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    assert common.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        common.median([])


def test_percentile_interpolates_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert common.percentile(values, 0) == 1.0
    assert common.percentile(values, 100) == 100.0
    assert common.percentile(values, 50) == 50.5
    assert common.percentile(values, 99) == pytest.approx(99.01)
    assert common.percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        common.percentile(values, 101)


def test_ratio_never_divides_by_zero() -> None:
    assert common.ratio(3.0, 2.0) == 1.5
    assert math.isinf(common.ratio(1.0, 0.0))
    assert common.ratio(0.0, 0.0) == 1.0


def test_formatting() -> None:
    assert common.fmt_seconds(12.345) == "12.3 s"
    assert common.fmt_seconds(1.5) == "1.50 s"
    assert common.fmt_seconds(0.0123) == "12.3 ms"
    assert common.fmt_seconds(0.000042) == "42 µs"
    assert common.fmt_ratio(1.234) == "1.23×"
    assert common.fmt_ratio(math.inf) == "n/a"
    assert common.fmt_rate(2_000_000_000, 2.0) == "1000 MB/s"
    assert common.fmt_rate(1, 0.0) == "n/a"
    assert common.fmt_bytes(common.GiB) == "1.0 GiB"
    assert common.fmt_bytes(1536) == "1.5 KiB"
    assert common.fmt_bytes(12) == "12 B"


def test_render_table_is_aligned_markdown() -> None:
    rows = [
        common.Row("ingest", "upload vs hashlib", "1.00 s", "0.80 s", "0.80×", "≥ 0.80×"),
        common.Row("api", "x", "1 ms"),
    ]
    lines = common.render_table(rows).splitlines()
    assert lines[0].startswith("| Benchmark") and set(lines[1]) <= {"|", "-"}
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # every line equally wide
    assert "| ingest " in lines[2] and "0.80×" in lines[2]


def test_alternate_interleaves_baseline_first() -> None:
    calls: list[str] = []

    def subject() -> float:
        calls.append("s")
        return 2.0

    def baseline() -> float:
        calls.append("b")
        return 1.0

    subj, base = common.alternate(3, subject, baseline)
    assert calls == ["b", "s", "b", "s", "b", "s"]
    assert subj == [2.0] * 3 and base == [1.0] * 3


def test_chain_workflow_links_every_step_to_the_previous_one() -> None:
    files = common.chain_workflow(3, "helixgate-bench/busybox:t")
    assert set(files) == {"workflow.cwl", "step.cwl"}
    wf = files["workflow.cwl"]
    assert "in: {src: text," in wf and "in: {src: s01/out," in wf and "in: {src: s02/out," in wf
    assert "outputSource: s03/out" in wf and "s04" not in wf
    assert 'dockerPull: "helixgate-bench/busybox:t"' in files["step.cwl"]
    assert common.chain_output(b"x\n", 2) == b"x\ns01\ns02\n"
    with pytest.raises(ValueError):
        common.chain_workflow(0, "img")


def test_proc_status_reads_this_process_memory() -> None:
    assert common.proc_status_kib(os.getpid(), "VmRSS") > 0
    with pytest.raises(KeyError):
        common.proc_status_kib(os.getpid(), "NoSuchField")
