"""Run every benchmark in turn and print one table (``python -m bench`` does the same).

    .venv/bin/python -m bench [--quick] [--only ingest,read,task_overhead,workflow,api] [--keep]

Each benchmark starts and stops its own server and removes what it created, so a failure in
one does not leave the next with leftovers; a failed benchmark is reported and the others run.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone

from bench.common import Options, Row, bench_context, fmt_seconds, render_table

BENCHMARKS = ("ingest", "read", "task_overhead", "workflow", "api")


def machine_line() -> str:
    import os

    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Linux {platform.release()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run HelixGate's benchmarks and print one table.")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--keep", action="store_true", help="keep temporary directories and server logs")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    opts = Options(quick=args.quick, keep=args.keep)
    rows: list[Row] = []
    failed: list[str] = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        start = time.monotonic()
        try:
            with bench_context(name, keep=opts.keep) as ctx:
                rows += module.run(opts, ctx)
        except Exception:
            failed.append(name)
            traceback.print_exc()
        print(f"[bench] {name} took {fmt_seconds(time.monotonic() - start)}", file=sys.stderr, flush=True)
    print(f"HelixGate benchmarks ({'quick' if opts.quick else 'full'}): {machine_line()}")
    print(render_table(rows))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
