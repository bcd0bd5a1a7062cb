"""The one-machine Slurm cluster of scripts/services.sh, driven through Slurm's own commands.

These tests prove the cluster the slurm task backend will run on does what the backend relies
on: jobs run on either node name, scancel stops a running job, Slurm kills a job that outlives
its --time (TIMEOUT) and one that outgrows its --mem.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

NODES = {"hgnode1", "hgnode2"}
FINISHED = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
# An upper bound for Slurm to act, not a measured threshold: only a broken cluster reaches it.
DEADLINE_S = 300.0


def slurm(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def job_fields(env: dict[str, str], job_id: str) -> dict[str, str]:
    """``scontrol show job -o``: one line of Key=Value pairs (values without spaces here)."""
    line = slurm(env, "scontrol", "show", "job", "-o", job_id).strip()
    fields: dict[str, str] = {}
    for token in line.split():
        if "=" in token:
            key, value = token.split("=", 1)
            fields[key] = value
    return fields


def wait_for_state(env: dict[str, str], job_id: str, accept: Callable[[str], bool]) -> dict[str, str]:
    end = time.monotonic() + DEADLINE_S
    while True:
        fields = job_fields(env, job_id)
        if accept(fields["JobState"]):
            return fields
        if time.monotonic() > end:
            pytest.fail(f"job {job_id} stayed {fields['JobState']} ({fields.get('Reason')})")
        time.sleep(0.5)


def wait_finished(env: dict[str, str], job_id: str) -> dict[str, str]:
    return wait_for_state(env, job_id, lambda s: s in FINISHED)


def wait_for_file(path: Path) -> str:
    end = time.monotonic() + DEADLINE_S
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > end:
            pytest.fail(f"{path} was never written")
        time.sleep(0.2)
    return path.read_text()


@pytest.fixture()
def submit(slurm_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., str]]:
    """sbatch a script (run in tmp_path, output to out-<jobid>.txt); cancels leftovers at the end."""
    submitted: list[str] = []

    def run(script: str, *options: str) -> str:
        path = tmp_path / f"job{len(submitted)}.sh"
        path.write_text("#!/bin/sh\n" + script + "\n")
        out = slurm(
            slurm_env,
            "sbatch",
            "--parsable",
            f"--chdir={tmp_path}",
            f"--output={tmp_path}/out-%j.txt",
            "--job-name=helixgate-test",
            *options,
            str(path),
        )
        job_id = out.strip().split(";")[0]
        submitted.append(job_id)
        return job_id

    yield run
    if submitted:
        subprocess.run(["scancel", *submitted], env=slurm_env, capture_output=True, timeout=60)


def test_cluster_has_two_node_names_up(slurm_env: dict[str, str]) -> None:
    rows = slurm(slurm_env, "sinfo", "-h", "-N", "-o", "%N %t").split("\n")
    states = dict(row.split() for row in rows if row.strip())
    assert set(states) == NODES
    assert all(state in {"idle", "mix", "alloc"} for state in states.values()), states


def test_jobs_land_on_both_node_names(slurm_env: dict[str, str], submit: Callable[..., str], tmp_path: Path) -> None:
    # Each job takes every CPU of a node and waits until the other one has started: both can
    # only be running together on two different nodes.
    cpus = slurm(slurm_env, "sinfo", "-h", "-N", "-n", "hgnode1", "-o", "%c").strip()
    script = (
        'echo "$SLURMD_NODENAME" > "started-$SLURM_JOB_ID"\n'
        "while [ $(ls started-* | wc -l) -lt 2 ]; do sleep 0.2; done\n"
        'echo "ran-on=$SLURMD_NODENAME"'
    )
    jobs = [submit(script, f"--cpus-per-task={cpus}", "--mem=32M", "--time=10") for _ in range(2)]

    ran_on: dict[str, str] = {}
    for job in jobs:
        fields = wait_finished(slurm_env, job)
        assert fields["JobState"] == "COMPLETED", fields
        output = (tmp_path / f"out-{job}.txt").read_text()
        assert f"ran-on={fields['NodeList']}" in output  # Slurm's record and the node agree
        ran_on[job] = fields["NodeList"]
    assert set(ran_on.values()) == NODES

    # And a job can be sent to a named node.
    for node in sorted(NODES):
        job = submit('echo "ran-on=$SLURMD_NODENAME"', f"--nodelist={node}", "--mem=16M", "--time=5")
        fields = wait_finished(slurm_env, job)
        assert (fields["JobState"], fields["NodeList"]) == ("COMPLETED", node)
        assert f"ran-on={node}" in (tmp_path / f"out-{job}.txt").read_text()


def test_scancel_stops_a_running_job(slurm_env: dict[str, str], submit: Callable[..., str], tmp_path: Path) -> None:
    job = submit('echo $$ > pid\nsleep 600\necho "not cancelled"', "--mem=16M", "--time=20")
    wait_for_state(slurm_env, job, lambda s: s == "RUNNING")
    pid = int(wait_for_file(tmp_path / "pid"))
    assert Path(f"/proc/{pid}").exists()

    slurm(slurm_env, "scancel", job)
    fields = wait_finished(slurm_env, job)
    assert fields["JobState"] == "CANCELLED"
    end = time.monotonic() + DEADLINE_S
    while _alive(pid):
        assert time.monotonic() < end, f"the job's script (pid {pid}) outlived scancel"
        time.sleep(0.2)
    assert "not cancelled" not in (tmp_path / f"out-{job}.txt").read_text()


def test_job_over_its_time_limit_ends_timeout(
    slurm_env: dict[str, str], submit: Callable[..., str], tmp_path: Path
) -> None:
    # Slurm's smallest time limit is one minute; slurmctld checks limits about every 30 s.
    job = submit('echo started\nsleep 600\necho "outlived the limit"', "--mem=16M", "--time=1")
    fields = wait_finished(slurm_env, job)
    assert fields["JobState"] == "TIMEOUT", fields
    assert fields["TimeLimit"] == "00:01:00"
    output = (tmp_path / f"out-{job}.txt").read_text()
    assert "started" in output
    assert "outlived the limit" not in output
    assert "DUE TO TIME LIMIT" in output  # slurmstepd's own message in the job's output


def test_job_over_its_memory_limit_is_killed(
    slurm_env: dict[str, str], submit: Callable[..., str], tmp_path: Path
) -> None:
    # No cgroups here: slurmstepd samples the job's RSS (JobAcctGatherFrequency=1) and kills
    # it past --mem (JobAcctGatherParams=OverMemoryKill). 256 MiB touched vs a 32 MiB limit.
    grow = "import time; b = bytearray(256 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(120)"
    job = submit(f'python3 -c "{grow}"\necho "survived"', "--mem=32M", "--time=10")
    fields = wait_finished(slurm_env, job)
    assert fields["JobState"] != "COMPLETED", fields
    assert fields["ExitCode"] == "0:9", fields  # killed by SIGKILL
    output = (tmp_path / f"out-{job}.txt").read_text()
    assert "Exceeded job memory limit" in output
    assert "survived" not in output


def test_a_second_services_run_leaves_the_cluster_alone(slurm_env: dict[str, str]) -> None:
    conf = Path(slurm_env["SLURM_CONF"])
    pid_files = sorted((conf.parent.parent / "run").glob("*.pid"))
    before = {p.name: p.read_text() for p in pid_files}
    assert {"slurmctld.pid", "slurmd-hgnode1.pid", "slurmd-hgnode2.pid"} <= set(before)
    env = {**slurm_env, "HELIXGATE_SERVICES_DIR": str(conf.parent.parent.parent)}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["bash", "scripts/slurm_cluster.sh"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(conf)
    assert {p.name: p.read_text() for p in pid_files} == before
    assert all(_alive(int(pid)) for pid in before.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except FileNotFoundError:
        return False
