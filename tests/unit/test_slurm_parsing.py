"""wes_server.slurm: parsing Slurm's answers and building its calls (no cluster needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from helixgate.errors import BadRequest, NotFound
from wes_server.slurm import (
    JobRequest,
    JobStatus,
    SlurmCli,
    SlurmError,
    parse_exit_code,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_record,
    sacct_args,
    status_from_scontrol,
)

# Lines printed by Slurm 22.05's `scontrol show job -o` (the cluster of scripts/services.sh),
# with a space added to WorkDir/StdOut to prove values may hold spaces.
TIMEOUT_LINE = (
    "JobId=6 JobName=helixgate-test UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901754 Nice=0 "
    "Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 "
    "BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:03 TimeLimit=00:01:00 TimeMin=N/A "
    "SubmitTime=2026-11-29T16:14:48 StartTime=2026-11-29T16:14:50 EndTime=2026-11-29T16:15:53 "
    "Partition=helixgate AllocNode:Sid=localhost:7013 ReqNodeList=(null) ExcNodeList=(null) NodeList=hgnode1 "
    "BatchHost=hgnode1 NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "TRES=cpu=1,mem=16M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* "
    "Command=/tmp/t/job0.sh WorkDir=/tmp/my runs/t StdErr=/tmp/my runs/t/out-6.txt StdIn=/dev/null "
    "StdOut=/tmp/my runs/t/out-6.txt Power= "
)
MEMORY_KILLED_LINE = (
    "JobId=7 JobName=helixgate-test UserId=root(0) GroupId=root(0) JobState=FAILED Reason=JobLaunchFailure "
    "Dependency=(null) ExitCode=0:9 RunTime=00:00:02 TimeLimit=00:10:00 NodeList=hgnode1 BatchHost=hgnode1"
)
PENDING_LINE = (
    "JobId=12 JobName=run-1.step-2 JobState=PENDING Reason=Resources Dependency=(null) ExitCode=0:0 "
    "TimeLimit=00:05:00 NodeList=(null)"
)


def request(**overrides: Any) -> JobRequest:
    fields: dict[str, Any] = {
        "name": "run-abc.step1",
        "script": "#!/bin/sh\necho hi\n",
        "cpus": 2,
        "mem_mb": 512,
        "time_limit_s": 90,
        "workdir": Path("/tmp/w"),
        "stdout": Path("/tmp/w/out.txt"),
    }
    fields.update(overrides)
    return JobRequest(**fields)


def test_scontrol_record_keeps_values_with_spaces_and_odd_keys() -> None:
    fields = parse_scontrol_record(TIMEOUT_LINE)
    assert fields["WorkDir"] == "/tmp/my runs/t"
    assert fields["StdOut"] == "/tmp/my runs/t/out-6.txt"
    assert fields["AllocNode:Sid"] == "localhost:7013"
    assert fields["CPUs/Task"] == "1"
    assert fields["TRES"] == "cpu=1,mem=16M,node=1,billing=1"
    assert fields["Power"] == ""


def test_status_of_a_timed_out_job() -> None:
    status = status_from_scontrol(TIMEOUT_LINE)
    assert (status.job_id, status.state, status.reason) == ("6", "TIMEOUT", "TimeLimit")
    assert (status.exit_code, status.signal, status.nodes, status.time_limit) == (0, 15, "hgnode1", "00:01:00")
    assert status.finished and not status.succeeded and not status.pending
    assert status.explain() == "Slurm job 6 was killed on hgnode1: it reached its time limit of 00:01:00"


def test_status_of_a_job_killed_for_memory_without_cgroups() -> None:
    status = status_from_scontrol(MEMORY_KILLED_LINE)
    assert (status.state, status.exit_code, status.signal) == ("FAILED", 0, 9)
    assert status.explain() == "Slurm job 7 failed on hgnode1 (killed by signal 9) (reason: JobLaunchFailure)"


def test_status_of_a_pending_job_gives_slurms_reason() -> None:
    status = status_from_scontrol(PENDING_LINE)
    assert status.pending and not status.finished
    assert status.nodes is None
    assert status.explain() == "Slurm job 12 is waiting (reason: Resources)"


def test_scontrol_answer_without_a_state_is_an_error() -> None:
    with pytest.raises(SlurmError):
        status_from_scontrol("JobId=3 JobName=x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0:0", (0, 0)), ("3:0", (3, 0)), ("0:9", (0, 9)), ("", (None, None)), ("x:y", (None, None))],
)
def test_exit_codes(value: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(value) == expected


def test_sacct_records() -> None:
    # the shape sacct_args() asks for: --parsable2, fields JobID,JobName,State,ExitCode,Reason,NodeList,...
    out = (
        "41|run-1.step-1|OUT_OF_MEMORY|0:125|None|hgnode2|2026-11-29T10:00:00|2026-11-29T10:00:05|00:10:00\n"
        "42|run-1.step-2|CANCELLED by 0|0:15|None|hgnode1|2026-11-29T10:00:01|2026-11-29T10:00:09|00:10:00\n"
        "43|run-1.step-3|PENDING|0:0|Priority|None assigned|Unknown|Unknown|00:10:00\n"
        "44|run-1.step-4|NODE_FAIL|0:0|None|hgnode1|2026-11-29T10:00:01|2026-11-29T10:03:00|00:10:00\n"
    )
    oom, cancelled, pending, node_fail = parse_sacct(out)
    assert (oom.job_id, oom.state, oom.source, oom.nodes) == ("41", "OUT_OF_MEMORY", "sacct", "hgnode2")
    assert oom.explain() == "Slurm job 41 was killed on hgnode2: it exceeded its memory limit"
    assert (cancelled.state, cancelled.signal) == ("CANCELLED", 15)
    assert (pending.state, pending.reason, pending.nodes) == ("PENDING", "Priority", None)
    assert node_fail.explain() == "Slurm job 44 ended: its node failed on hgnode1"


def test_sacct_line_with_the_wrong_shape_is_refused() -> None:
    with pytest.raises(SlurmError, match="expected 9"):
        parse_sacct("41|x|COMPLETED\n")


def test_sbatch_parsable() -> None:
    assert parse_sbatch_parsable("17\n") == "17"
    assert parse_sbatch_parsable("17;helixgate\n") == "17"
    with pytest.raises(SlurmError):
        parse_sbatch_parsable("sbatch: error: Batch job submission failed\n")


def test_job_request_arguments() -> None:
    args = request(stderr=Path("/tmp/w/err.txt"), partition="p", nodelist="hgnode2").sbatch_args()
    assert args == [
        "--parsable",
        "--no-requeue",
        "--job-name=run-abc.step1",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=2",
        "--mem=512M",
        "--time=2",  # 90 s rounds up to Slurm's 2 minutes
        "--chdir=/tmp/w",
        "--output=/tmp/w/out.txt",
        "--error=/tmp/w/err.txt",
        "--partition=p",
        "--nodelist=hgnode2",
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "bad name"},
        {"name": "--wrap=rm"},
        {"cpus": 0},
        {"mem_mb": 0},
        {"time_limit_s": 0},
        {"script": "echo no shebang"},
    ],
)
def test_job_request_refuses_bad_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        request(**overrides)


class FakeSlurm:
    """Answers Slurm's commands from a table (argv[0] -> CompletedProcess), records the calls."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        code, out, err = self.answers[Path(argv[0]).name]
        return subprocess.CompletedProcess(argv, code, out, err)


def test_submit_sends_the_script_on_stdin_with_slurm_conf() -> None:
    fake = FakeSlurm({"sbatch": (0, "23\n", "")})
    cli = SlurmCli("/srv/slurm.conf", bin_dir="/opt/slurm/bin", run=fake)
    assert cli.submit(request()) == "23"
    argv, kwargs = fake.calls[0]
    assert argv[0] == "/opt/slurm/bin/sbatch"
    assert kwargs["input"] == "#!/bin/sh\necho hi\n"
    assert kwargs["env"]["SLURM_CONF"] == "/srv/slurm.conf"


def test_submit_failure_carries_slurms_message() -> None:
    fake = FakeSlurm(
        {"sbatch": (1, "", "sbatch: error: Batch job submission failed: Requested node config unavailable\n")}
    )
    with pytest.raises(SlurmError, match="Requested node config unavailable"):
        SlurmCli(run=fake).submit(request())


def test_status_falls_back_to_accounting_then_not_found() -> None:
    fake = FakeSlurm(
        {
            "scontrol": (1, "", "slurm_load_jobs error: Invalid job id specified\n"),
            "sacct": (0, "9|n|COMPLETED|0:0|None|hgnode1|a|b|00:01:00\n", ""),
        }
    )
    status = SlurmCli(run=fake).status("9")
    assert (status.state, status.source) == ("COMPLETED", "sacct")
    assert fake.calls[1][0] == sacct_args("9")

    fake.answers["sacct"] = (1, "", "Slurm accounting storage is disabled\n")
    with pytest.raises(NotFound, match="no job 9"):
        SlurmCli(run=fake).status("9")


def test_job_ids_are_checked_before_any_command() -> None:
    fake = FakeSlurm({})
    for bad in ("", "1;rm", "-h", "12 13"):
        with pytest.raises(BadRequest):
            SlurmCli(run=fake).cancel(bad)
    assert fake.calls == []


def test_cancel_of_an_ended_job_is_not_an_error() -> None:
    fake = FakeSlurm(
        {"scancel": (1, "", "scancel: error: Kill job error on job id 5: Job/step already completing or completed\n")}
    )
    SlurmCli(run=fake).cancel("5")
    fake.answers["scancel"] = (1, "", "scancel: error: Unable to contact slurm controller\n")
    with pytest.raises(SlurmError, match="Unable to contact"):
        SlurmCli(run=fake).cancel("5")


def test_explain_covers_each_end() -> None:
    assert JobStatus("1", "COMPLETED", exit_code=0, signal=0, nodes="n1").explain() == (
        "Slurm job 1 completed on n1 (exit code 0)"
    )
    assert JobStatus("1", "CANCELLED", exit_code=0, signal=15).explain() == (
        "Slurm job 1 was cancelled (killed by signal 15)"
    )
    assert JobStatus("1", "PREEMPTED", nodes="n2").explain() == "Slurm job 1 was preempted on n2"
