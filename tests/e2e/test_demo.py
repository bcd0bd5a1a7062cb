"""The README's first command: `helixgate demo` (its workflow in CWL, then in WDL) runs end to end
against the real Docker engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def demo_containers() -> set[str]:
    """Containers of any demo (scope ``demo-*``): the shared engine also runs other tests' tasks."""
    client = docker.from_env()
    try:
        found = client.api.containers(all=True, filters={"label": "helixgate.managed=true"})
        return {c["Id"] for c in found if str((c.get("Labels") or {}).get("helixgate.scope", "")).startswith("demo-")}
    finally:
        client.close()


@pytest.mark.parametrize("language", ["cwl", "wdl"])
def test_demo_runs_end_to_end_and_cleans_up(language: str) -> None:
    helixgate = str(Path(sys.executable).parent / "helixgate")
    before = demo_containers()
    r = subprocess.run([helixgate, "demo", "--language", language], capture_output=True, text=True, timeout=600)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "FAILED" not in out
    assert "signed=True" in out and "signed by: " in out and "signature by registry key" in out
    assert "matches drs://" in out  # each input's checksum check is shown
    assert f"three-step {language.upper()} workflow" in out
    output = "textkit.line_count" if language == "wdl" else "line_count"  # WDL outputs carry the workflow's name
    assert "ended COMPLETE" in out and f"output {output}: drs://" in out
    assert "refused by DRS" in out and "refusing an unsigned image" in out
    assert "hash chain verified" in out
    assert r.stderr.strip() == ""  # nothing but the evidence
    after = demo_containers()
    assert after <= before  # the demo left no container behind
