"""wes_server.slurm.SlurmCli against the one-machine Slurm cluster of scripts/services.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helixgate.errors import NotFound
from wes_server.slurm import JobRequest, JobStatus, SlurmCli

pytestmark = pytest.mark.integration

DEADLINE_S = 300.0  # an upper bound for Slurm to act, not a measured threshold


@pytest.fixture()
def cli(slurm_env: dict[str, str]) -> Iterator[SlurmCli]:
    client = SlurmCli(slurm_env["SLURM_CONF"])
    yield client


def wait(cli: SlurmCli, job_id: str, *, until_running: bool = False) -> JobStatus:
    end = time.monotonic() + DEADLINE_S
    while True:
        status = cli.status(job_id)
        if status.finished or (until_running and status.state == "RUNNING"):
            return status
        assert time.monotonic() < end, status.explain()
        time.sleep(0.5)


def job(tmp_path: Path, script: str, **overrides: object) -> JobRequest:
    fields: dict[str, object] = {
        "name": "run-test.step-1",
        "script": "#!/bin/sh\n" + script + "\n",
        "cpus": 1,
        "mem_mb": 32,
        "time_limit_s": 300,
        "workdir": tmp_path,
        "stdout": tmp_path / "out.txt",
        "stderr": tmp_path / "err.txt",
    }
    fields.update(overrides)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_submit_runs_the_script_with_the_requested_resources(cli: SlurmCli, tmp_path: Path) -> None:
    script = 'echo "node=$SLURMD_NODENAME cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE name=$SLURM_JOB_NAME"'
    job_id = cli.submit(job(tmp_path, script, cpus=2, mem_mb=48, nodelist="hgnode2"))
    status = wait(cli, job_id)
    assert status.succeeded, status.explain()
    assert (status.job_id, status.nodes, status.name, status.time_limit) == (
        job_id,
        "hgnode2",
        "run-test.step-1",
        "00:05:00",
    )
    assert (tmp_path / "out.txt").read_text().strip() == "node=hgnode2 cpus=2 mem=48 name=run-test.step-1"


def test_a_failing_script_reports_its_exit_code(cli: SlurmCli, tmp_path: Path) -> None:
    job_id = cli.submit(job(tmp_path, "echo oops >&2\nexit 3"))
    status = wait(cli, job_id)
    assert (status.state, status.exit_code, status.signal) == ("FAILED", 3, 0)
    assert status.explain().startswith(f"Slurm job {job_id} failed on hgnode")
    assert (tmp_path / "err.txt").read_text() == "oops\n"


def test_cancel_a_running_job(cli: SlurmCli, tmp_path: Path) -> None:
    job_id = cli.submit(job(tmp_path, "sleep 600"))
    assert wait(cli, job_id, until_running=True).state == "RUNNING"
    cli.cancel(job_id)
    status = wait(cli, job_id)
    assert status.state == "CANCELLED"
    assert status.explain().startswith(f"Slurm job {job_id} was cancelled")
    cli.cancel(job_id)  # again: the job has ended, not an error


def test_a_job_over_its_time_limit_is_explained(cli: SlurmCli, tmp_path: Path) -> None:
    job_id = cli.submit(job(tmp_path, "sleep 600", time_limit_s=30))  # Slurm's minimum: 1 minute
    status = wait(cli, job_id)
    assert (status.state, status.reason, status.time_limit) == ("TIMEOUT", "TimeLimit", "00:01:00")
    assert "reached its time limit of 00:01:00" in status.explain()


def test_unknown_job(cli: SlurmCli) -> None:
    with pytest.raises(NotFound):
        cli.status("999999999")
    assert cli.accounting("1") == []  # this cluster keeps no accounting (no slurmdbd)


def test_a_lost_node_ends_the_job_node_fail(cli: SlurmCli, slurm_env: dict[str, str], tmp_path: Path) -> None:
    # Stop hgnode2's slurmd (ours: its pid file is under the cluster's directory); the job
    # running there must end NODE_FAIL, not be requeued, and the node come back afterwards.
    cluster = Path(slurm_env["SLURM_CONF"]).parent.parent
    job_id = cli.submit(job(tmp_path, "sleep 600", nodelist="hgnode2"))
    assert wait(cli, job_id, until_running=True).state == "RUNNING"
    os.kill(int((cluster / "run" / "slurmd-hgnode2.pid").read_text()), signal.SIGTERM)
    try:
        status = wait(cli, job_id)
        assert (status.state, status.reason) == ("NODE_FAIL", "NodeDown"), status.explain()
        assert status.explain() == f"Slurm job {job_id} ended: its node failed on hgnode2 (reason: NodeDown)"
    finally:
        env = {**slurm_env, "HELIXGATE_SERVICES_DIR": str(cluster.parent)}
        root = Path(__file__).resolve().parents[2]
        subprocess.run(["bash", "scripts/slurm_cluster.sh"], cwd=root, env=env, check=True, timeout=120)
