"""A small typed client of Slurm's command line: submit, query, cancel.

The slurm task backend (issue 19) is to be built on this: it only knows Slurm through
``sbatch``, ``scontrol``, ``scancel`` and ``sacct``, run without a shell, with ``SLURM_CONF``
naming the cluster. Parsing is in plain functions (scontrol's on lines Slurm 22.05 printed;
sacct's on its documented --parsable2 shape, since the test cluster keeps no accounting); the
client adds the processes. Everything a job's state reports comes back as Slurm said it, plus a
sentence for the analyst (``JobStatus.explain()``).

Where state comes from: ``scontrol show job`` knows a job while slurmctld holds it (pending,
running, and finished for MinJobAge); after that only accounting (``sacct``, which needs
slurmdbd) does. ``SlurmCli.status`` asks scontrol first and sacct second.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from helixgate.errors import BadRequest, NotFound, UpstreamError

# Slurm's base job states (squeue(1), sacct(1) "JOB STATE CODES").
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
ACTIVE_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING", "SPECIAL_EXIT"}
)
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)

# Job names reach sbatch as one argv item; keep them printable and short (Slurm's limit is larger).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")
_SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Reason", "NodeList", "Start", "End", "Timelimit")


class SlurmError(UpstreamError):
    """A Slurm command failed (its own message, without the environment)."""


@dataclass(frozen=True)
class JobRequest:
    """One batch job. ``script`` is the whole batch script (it starts with ``#!``)."""

    name: str
    script: str
    cpus: int
    mem_mb: int
    time_limit_s: int
    workdir: Path
    stdout: Path
    stderr: Path | None = None
    partition: str | None = None
    nodelist: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise BadRequest(f"Slurm job name {self.name!r} is not allowed (letters, digits, ._:+- only)")
        if self.cpus < 1 or self.mem_mb < 1 or self.time_limit_s < 1:
            raise BadRequest(
                f"a Slurm job needs at least 1 CPU, 1 MB and 1 s (got {self.cpus}, {self.mem_mb}, {self.time_limit_s})"
            )
        if not self.script.startswith("#!"):
            raise BadRequest("a Slurm batch script must start with #!")

    def sbatch_args(self) -> list[str]:
        """sbatch's options; the script itself goes on its standard input."""
        args = [
            "--parsable",
            # A lost node ends the job NODE_FAIL instead of Slurm silently starting it again
            # (JobRequeue's default): whether a task is retried is HelixGate's policy.
            "--no-requeue",
            f"--job-name={self.name}",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={self.cpus}",
            f"--mem={self.mem_mb}M",
            # Slurm counts time limits in whole minutes: round up, never grant less than asked.
            f"--time={math.ceil(self.time_limit_s / 60)}",
            f"--chdir={self.workdir}",
            f"--output={self.stdout}",
        ]
        if self.stderr is not None:
            args.append(f"--error={self.stderr}")
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.nodelist:
            args.append(f"--nodelist={self.nodelist}")
        return args


@dataclass(frozen=True)
class JobStatus:
    """A job as Slurm reports it. ``exit_code``/``signal`` come from Slurm's ``ExitCode=code:signal``."""

    job_id: str
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    nodes: str | None = None
    name: str | None = None
    time_limit: str | None = None
    source: str = "scontrol"
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0

    def explain(self) -> str:
        """One sentence for the analyst: what Slurm did and why, in Slurm's words."""
        where = f" on {self.nodes}" if self.nodes else ""
        reason = f" (reason: {self.reason})" if self.reason else ""
        code = _describe_exit(self.exit_code, self.signal)
        if self.state == "TIMEOUT":
            limit = f" of {self.time_limit}" if self.time_limit else ""
            return f"Slurm job {self.job_id} was killed{where}: it reached its time limit{limit}"
        if self.state == "OUT_OF_MEMORY":
            return f"Slurm job {self.job_id} was killed{where}: it exceeded its memory limit"
        if self.state == "NODE_FAIL":
            return f"Slurm job {self.job_id} ended: its node failed{where}{reason}"
        if self.state == "PREEMPTED":
            return f"Slurm job {self.job_id} was preempted{where}"
        if self.state == "BOOT_FAIL":
            return f"Slurm job {self.job_id} ended: its node could not boot{where}"
        if self.state == "DEADLINE":
            return f"Slurm job {self.job_id} ended: it missed its deadline"
        if self.state == "CANCELLED":
            return f"Slurm job {self.job_id} was cancelled{where}{code}"
        if self.state == "FAILED":
            return f"Slurm job {self.job_id} failed{where}{code}{reason}"
        if self.state == "COMPLETED":
            return f"Slurm job {self.job_id} completed{where}{code}"
        if self.pending:
            return f"Slurm job {self.job_id} is waiting{reason}"
        return f"Slurm job {self.job_id} is {self.state}{where}{reason}"


def _describe_exit(exit_code: int | None, signal: int | None) -> str:
    if signal:
        return f" (killed by signal {signal})"
    if exit_code is not None:
        return f" (exit code {exit_code})"
    return ""


def parse_sbatch_parsable(output: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    line = output.strip().splitlines()[-1] if output.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch answered {line!r}, not a job id")
    return job_id


def parse_exit_code(value: str | None) -> tuple[int | None, int | None]:
    """Slurm's ``code:signal`` (e.g. ``0:9`` killed by SIGKILL, ``3:0`` exited 3)."""
    if not value or ":" not in value:
        return None, None
    code, sig = value.split(":", 1)
    try:
        return int(code), int(sig)
    except ValueError:
        return None, None


def parse_scontrol_record(line: str) -> dict[str, str]:
    """One line of ``scontrol show job -o``: ``Key=Value`` pairs, where a value may hold spaces
    (a path, a comment) and runs until the next ``Key=``."""
    keys = list(_SCONTROL_KEY.finditer(line))
    fields: dict[str, str] = {}
    for i, match in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(line)
        fields[match.group(1)] = line[match.end() : end].strip()
    return fields


def _none_if_null(value: str | None) -> str | None:
    return None if value in (None, "", "None", "(null)") else value


def _base_state(value: str) -> str:
    # sacct prints "CANCELLED by 0"; scontrol may add flags after a '+' (e.g. "RUNNING+...").
    return value.split()[0].split("+")[0].upper() if value.strip() else "UNKNOWN"


def status_from_scontrol(line: str) -> JobStatus:
    fields = parse_scontrol_record(line)
    if "JobId" not in fields or "JobState" not in fields:
        raise SlurmError("scontrol show job answered without JobId/JobState")
    code, sig = parse_exit_code(fields.get("ExitCode"))
    return JobStatus(
        job_id=fields["JobId"],
        state=_base_state(fields["JobState"]),
        reason=_none_if_null(fields.get("Reason")),
        exit_code=code,
        signal=sig,
        nodes=_none_if_null(fields.get("NodeList")),
        name=_none_if_null(fields.get("JobName")),
        time_limit=_none_if_null(fields.get("TimeLimit")),
        source="scontrol",
        raw=fields,
    )


def sacct_args(job_id: str) -> list[str]:
    """The sacct call whose output :func:`parse_sacct` reads (allocation lines only, '|'-separated)."""
    return [
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--jobs={job_id}",
        f"--format={','.join(_SACCT_FIELDS)}",
    ]


def parse_sacct(output: str) -> list[JobStatus]:
    """``sacct --noheader --parsable2 --format=JobID,JobName,State,ExitCode,Reason,NodeList,Start,End,Timelimit``."""
    statuses = []
    for line in output.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != len(_SACCT_FIELDS):
            raise SlurmError(f"sacct line has {len(values)} fields, expected {len(_SACCT_FIELDS)}: {line!r}")
        fields = dict(zip(_SACCT_FIELDS, values, strict=True))
        code, sig = parse_exit_code(fields["ExitCode"])
        statuses.append(
            JobStatus(
                job_id=fields["JobID"],
                state=_base_state(fields["State"]),
                reason=_none_if_null(fields["Reason"]),
                exit_code=code,
                signal=sig,
                nodes=_none_if_null(fields["NodeList"]) if fields["NodeList"] != "None assigned" else None,
                name=_none_if_null(fields["JobName"]),
                time_limit=_none_if_null(fields["Timelimit"]),
                source="sacct",
                raw=fields,
            )
        )
    return statuses


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class SlurmCli:
    """Slurm through its commands. ``conf`` is the slurm.conf to use (SLURM_CONF); ``None``
    leaves Slurm to find its own (a site's /etc/slurm or configless setup)."""

    def __init__(
        self,
        conf: str | None = None,
        *,
        bin_dir: str | None = None,
        timeout_s: float = 60.0,
        run: Runner = subprocess.run,
    ) -> None:
        self._env = dict(os.environ)
        if conf is not None:
            self._env["SLURM_CONF"] = conf
        self._bin_dir = bin_dir
        self._timeout_s = timeout_s
        self._run = run

    def _cmd(self, args: Sequence[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        if self._bin_dir:
            argv[0] = str(Path(self._bin_dir) / argv[0])
        try:
            return self._run(
                argv, input=stdin, env=self._env, capture_output=True, text=True, timeout=self._timeout_s, check=False
            )
        except FileNotFoundError as exc:
            raise SlurmError(f"{argv[0]} is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise SlurmError(f"{args[0]} did not answer within {self._timeout_s:g} s") from exc

    @staticmethod
    def _failure(args: Sequence[str], done: subprocess.CompletedProcess[str]) -> SlurmError:
        message = (done.stderr or done.stdout or "").strip().splitlines()
        return SlurmError(f"{args[0]} failed (exit {done.returncode}): {message[-1] if message else 'no message'}")

    def submit(self, request: JobRequest) -> str:
        """Submit; return Slurm's job id."""
        args = ["sbatch", *request.sbatch_args()]
        done = self._cmd(args, stdin=request.script)
        if done.returncode != 0:
            raise self._failure(args, done)
        return parse_sbatch_parsable(done.stdout)

    def status(self, job_id: str) -> JobStatus:
        """The job's state, from slurmctld, else from accounting; NotFound if neither knows it."""
        _check_job_id(job_id)
        args = ["scontrol", "show", "job", "-o", job_id]
        done = self._cmd(args)
        if done.returncode == 0 and done.stdout.strip():
            return status_from_scontrol(done.stdout.strip().splitlines()[0])
        if "Invalid job id" not in (done.stderr + done.stdout):
            raise self._failure(args, done)
        for status in self.accounting(job_id):
            if status.job_id == job_id:
                return status
        raise NotFound(f"Slurm knows no job {job_id}")

    def accounting(self, job_id: str) -> list[JobStatus]:
        """The job's accounting records (``sacct``); empty where accounting is disabled."""
        _check_job_id(job_id)
        args = sacct_args(job_id)
        done = self._cmd(args)
        if done.returncode != 0:
            if "accounting storage is disabled" in (done.stderr + done.stdout).lower():
                return []
            raise self._failure(args, done)
        return parse_sacct(done.stdout)

    def cancel(self, job_id: str) -> None:
        """scancel; cancelling a job that already ended is not an error."""
        _check_job_id(job_id)
        args = ["scancel", job_id]
        done = self._cmd(args)
        text = done.stderr + done.stdout
        if done.returncode != 0 and "already completing or completed" not in text and "Invalid job id" not in text:
            raise self._failure(args, done)


def _check_job_id(job_id: str) -> None:
    # Job ids reach Slurm's commands as argv items; only plain ids (and array/het forms) pass.
    if not re.fullmatch(r"[0-9]+(?:[_+][0-9]+)?", job_id):
        raise BadRequest(f"{job_id!r} is not a Slurm job id")
