"""HelixGate benchmarks: runnable measurements that print medians and ratios, HelixGate and its
baseline measured side by side in the same run (never timing assertions in tests).

Run all: ``.venv/bin/python -m bench [--quick]``; one: ``.venv/bin/python -m bench.<name> [--quick]``
with ``<name>`` one of ingest, read, task_overhead, workflow, api. Method and latest figures:
docs/benchmarks.md.
"""
