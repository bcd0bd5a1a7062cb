"""The CWL features docs/compatibility.md says the executor refuses are refused, on a live
server, before the task's container starts: ``stdin`` redirection and InitialWorkDir staging of
an existing file. When one becomes supported, this test and that list change together."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import World
from tests.e2e.test_run_control import TEXT, _containers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tool(image: str, extra: str) -> bytes:
    return f"""cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
{extra}
baseCommand: [cat]
inputs:
  src: File
outputs:
  out: {{type: stdout}}
stdout: out.txt
""".encode()


STDIN = "stdin: $(inputs.src.path)"
INITIAL_WORKDIR = "  InitialWorkDirRequirement:\n    listing: [$(inputs.src)]"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [(STDIN, "stdin redirection is not supported"), (INITIAL_WORKDIR, "InitialWorkDir staging of existing files")],
    ids=["stdin", "initial-workdir-file"],
)
def test_refused_cwl_features(world: World, extra: str, reason: str) -> None:
    obj = world.steward.upload(TEXT, name="t.txt", dataset_id=world.dataset_id)
    run_id = world.analyst.submit_run(
        "tool.cwl",
        {"src": {"class": "File", "location": world.drs_uri(obj["id"])}},
        attachments={"tool.cwl": _tool(world.image.pinned_ref, extra)},
    )
    assert world.analyst.wait(run_id, timeout=120) == "EXECUTOR_ERROR"
    log = world.analyst.run_log(run_id)
    tasks = world.analyst.run_tasks(run_id)
    text = "\n".join(log["run_log"]["system_logs"] + [str(t.get("system_logs") or "") for t in tasks])
    assert reason in text, (log, tasks)
    assert all(t.get("exit_code") is None for t in tasks), "no task container may have run"
    assert _containers(run_id) == []
