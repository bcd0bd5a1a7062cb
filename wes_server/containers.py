"""Hardened, short-lived task containers driven through the Docker Engine API (ARCHITECTURE §5).

Rules this module enforces:

* A task container is created from an image **id** (``sha256:<64 hex>``) that the
  verification gate already checked, never from a tag, and never with
  ``containers.run()`` (which pulls a missing image). After creation the engine's
  ``Image`` of the container must equal that id, or the container is removed and an
  ``IntegrityError`` is raised.
* ``ensure_image`` pulls only by manifest digest and then checks the local image id.
* Every container is hardened: no network unless allowed, read-only root filesystem,
  size-limited tmpfs ``/tmp``, all capabilities dropped, ``no-new-privileges``, a non-root
  user, pids/memory(+swap)/CPU limits, read-only inputs, a single writable output
  directory, labels carrying run and task ids, a wall-clock limit and removal in
  ``finally``. The Docker socket (or any directory holding it) is never mounted.
* CPU is limited with a CFS period/quota (equivalent to ``NanoCpus``) because only that form
  can be lifted on a running container: a killed task with hundreds of processes in a
  throttled cgroup otherwise takes minutes to exit and the engine gives up removing it.
* No fixed sleeps: output is read from an attach stream opened before start (the stream
  ends when the task exits), the exit code comes from ``wait``; the engine stores no logs
  (log driver ``none``), so a chatty task cannot fill the engine's disk, and the captured
  stdout/stderr are capped at ``log_cap_bytes`` each.

Image ids pin the image config and its layers on the classic image store, which is what
this engine uses (on the containerd image store the id is the manifest digest instead).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import docker
import docker.errors
import requests
from docker.types import LogConfig, Mount

from helixgate.errors import BadRequest, Conflict, Forbidden, IntegrityError, NotFound, UpstreamError
from helixgate.images import parse_reference, pinned_reference
from helixgate.integrity import digests_equal

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MANAGED_LABEL = "helixgate.managed"
RUN_LABEL = "helixgate.run_id"
TASK_LABEL = "helixgate.task_id"
SCOPE_LABEL = "helixgate.scope"
PROCESS_LABEL = "helixgate.process"  # host:pid of the worker process that started the container
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
DEFAULT_USER = "65534:65534"

_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/#+-]{0,255}$")
_SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_USER = re.compile(r"^([0-9]{1,10}):([0-9]{1,10})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Container paths a task may not shadow with a bind mount.
_RESERVED_TARGETS = ("/proc", "/sys", "/dev", "/tmp", "/etc")  # noqa: S108 - container paths
# Read size for the attach stream: large reads keep a chatty task from being throttled by Python.
_READ_CHUNK = 256 * 1024
# How long to wait for a killed container to stop before giving up (the engine, not the task, is stuck).
_KILL_GRACE = 30.0
# CFS period for the CPU limit: period+quota (not NanoCpus) so the quota can be lifted on a running container.
_CPU_PERIOD_US = 100_000
# After the output stream closes, the engine may need a moment to record the exit.
_EXIT_GRACE = 0.5
# Cancelled run ids remembered per runner (a worker's lifetime), oldest forgotten first.
_CANCELLED_MEMORY = 10_000


class TaskCancelled(Conflict):
    """The task's container was killed or removed from outside: its run was cancelled or reconciled."""

    kind = "task_cancelled"


@dataclass(frozen=True, kw_only=True)
class TaskContainerSpec:
    """One task to run. Host paths must be absolute; ``image_id`` must already be verified."""

    run_id: str
    task_id: str
    image_id: str
    command: Sequence[str]
    output_dir: str
    stdout_path: str
    stderr_path: str
    inputs: Sequence[tuple[str, str]] = ()
    workdir: str = "/work"
    # Values may hold secrets: kept out of the repr and out of every message.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    cpus: float = 1.0
    memory_bytes: int = 512 * MiB
    pids_limit: int = 256
    time_limit: float = 3600.0
    network: bool = False
    user: str = DEFAULT_USER
    log_cap_bytes: int = 1 * MiB
    tmpfs_bytes: int = 64 * MiB


@dataclass(frozen=True)
class TaskContainerResult:
    """How a task ended. ``exit_code`` is 137 after a time-out kill or an OOM kill.

    ``error`` is set when the engine could not start the process (exit code 126/127/128 from the
    engine, e.g. executable not found): a failed task, not a platform fault.
    """

    exit_code: int
    timed_out: bool
    oom_killed: bool
    stdout_truncated: bool
    stderr_truncated: bool
    container_id: str
    started_at: datetime
    finished_at: datetime
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed and not self.error


@dataclass(frozen=True)
class LocalImage:
    """An image as the local engine knows it."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: str
    size: int
    architecture: str
    os: str

    def manifest_digest(self, repository: str) -> str | None:
        """The registry manifest digest recorded for ``repository`` (after a push or pull), if any."""
        for entry in self.repo_digests:
            name, _, digest = entry.partition("@")
            if name == repository and digest:
                return digest
        return None


@dataclass(frozen=True)
class PinnedRef:
    """``repository`` is None for a local-only image pinned by its id."""

    repository: str | None
    digest: str

    def __str__(self) -> str:
        return pinned_reference(self.repository, self.digest)


def parse_pinned_ref(ref: str) -> PinnedRef:
    """Parse ``name[:tag]@sha256:<hex>`` or a bare ``sha256:<hex>``; refuse anything resolved by tag."""
    refused = BadRequest(
        f"image reference must be pinned by digest (name@sha256:<64 hex> or sha256:<64 hex>): {ref[:200]!r}"
    )
    if not isinstance(ref, str) or ref != ref.strip():
        raise refused
    try:
        parsed = parse_reference(ref)  # the platform's one reference grammar
    except BadRequest:
        raise refused from None
    if parsed.digest is None:
        raise refused
    return PinnedRef(parsed.name or None, parsed.digest)


def check_spec(spec: TaskContainerSpec) -> tuple[int, int]:
    """Validate ``spec`` before anything touches the engine; return the task's (uid, gid)."""
    for what, value in (("run_id", spec.run_id), ("task_id", spec.task_id)):
        if not _ID.match(value):
            raise BadRequest(f"invalid {what} {value[:80]!r}")
    if not _IMAGE_ID.match(spec.image_id):
        raise BadRequest(
            f"task image must be a verified image id sha256:<64 hex>, not a name or tag: {spec.image_id[:200]!r}"
        )
    if isinstance(spec.command, str) or not spec.command:
        raise BadRequest("command must be a non-empty list of arguments")
    if any(not isinstance(a, str) or "\0" in a for a in spec.command):
        raise BadRequest("command arguments must be strings without NUL bytes")
    for name, value in spec.env.items():
        if not _ENV_NAME.match(name):
            raise BadRequest(f"invalid environment variable name {name[:80]!r}")
        if not isinstance(value, str) or "\0" in value:
            raise BadRequest(f"environment variable {name} must be a string without NUL bytes")
    workdir = _container_path("workdir", spec.workdir)
    uid, gid = _parse_user(spec.user)

    _check_host_dir("output_dir", spec.output_dir)
    refuse_docker_socket(spec.output_dir)
    targets = {workdir}
    for host, target in spec.inputs:
        if not os.path.isabs(host) or not os.path.exists(host):
            raise BadRequest(f"input {host[:200]!r} must be an existing absolute host path")
        refuse_docker_socket(host)
        target = _container_path("input mount", target)
        if target in targets:
            raise BadRequest(f"input mount {target!r} collides with the work directory or another input")
        targets.add(target)
    for what, path in (("stdout_path", spec.stdout_path), ("stderr_path", spec.stderr_path)):
        if not os.path.isabs(path) or not os.path.isdir(os.path.dirname(path)):
            raise BadRequest(f"{what} must be an absolute path in an existing directory: {path[:200]!r}")
    if os.path.realpath(spec.stdout_path) == os.path.realpath(spec.stderr_path):
        raise BadRequest("stdout_path and stderr_path must differ")

    if not (math.isfinite(spec.cpus) and spec.cpus >= 0.01):
        raise BadRequest(f"cpus must be at least 0.01, got {spec.cpus}")
    if spec.memory_bytes < 6 * MiB:
        raise BadRequest(f"memory_bytes must be at least 6 MiB (the engine's minimum), got {spec.memory_bytes}")
    if spec.pids_limit < 1:
        raise BadRequest(f"pids_limit must be positive, got {spec.pids_limit}")
    if not (math.isfinite(spec.time_limit) and spec.time_limit > 0):
        raise BadRequest(f"time_limit must be a positive number of seconds, got {spec.time_limit}")
    if spec.log_cap_bytes < 0:
        raise BadRequest(f"log_cap_bytes must not be negative, got {spec.log_cap_bytes}")
    if spec.tmpfs_bytes < 64 * 1024:
        raise BadRequest(f"tmpfs_bytes must be at least 64 KiB, got {spec.tmpfs_bytes}")
    return uid, gid


def refuse_docker_socket(host_path: str) -> None:
    """Raise Forbidden if mounting ``host_path`` would expose a Docker socket (or any socket) to a task."""
    real = os.path.realpath(host_path)
    try:
        if stat.S_ISSOCK(os.stat(real).st_mode):
            raise Forbidden(f"refusing to mount the socket {host_path[:200]!r} into a task container")
    except FileNotFoundError:
        pass
    for sock in _docker_socket_paths():
        # A directory above the socket (/run, /var, /) exposes it just as well as the socket itself.
        if real == sock or sock.startswith(real.rstrip("/") + "/"):
            raise Forbidden(
                f"refusing to mount {host_path[:200]!r} into a task container: it exposes the Docker socket"
            )


def _docker_socket_paths() -> set[str]:
    paths = set(DOCKER_SOCKETS)
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.add(host[len("unix://"):])
    return {os.path.realpath(p) for p in paths} | paths


def _container_path(what: str, path: str) -> str:
    if not path.startswith("/") or os.path.normpath(path) != path or path == "/":
        raise BadRequest(f"{what} must be a normalized absolute container path other than '/': {path[:200]!r}")
    for reserved in _RESERVED_TARGETS:
        if path == reserved or path.startswith(reserved + "/"):
            raise BadRequest(f"{what} {path!r} may not shadow {reserved}")
    return path


def _check_host_dir(what: str, path: str) -> None:
    if not os.path.isabs(path) or not os.path.isdir(path):
        raise BadRequest(f"{what} must be an existing absolute host directory: {path[:200]!r}")


def _parse_user(user: str) -> tuple[int, int]:
    m = _USER.match(user)
    if not m:
        raise BadRequest(f"user must be numeric uid:gid, got {user[:40]!r}")
    uid, gid = int(m.group(1)), int(m.group(2))
    if uid == 0 or gid == 0:
        raise Forbidden("task containers never run as root (uid 0 or gid 0)")
    return uid, gid


def parse_engine_time(value: str | None) -> datetime | None:
    """Parse the engine's RFC 3339 nanosecond timestamps; None for the zero time ("0001-01-01...")."""
    if not value or value.startswith("0001-01-01"):
        return None
    m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$", value)
    if not m:
        return None
    base, frac, tz = m.groups()
    micro = (frac or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{base}.{micro}{'+00:00' if tz == 'Z' else tz}")


class CappedSink:
    """Writes at most ``cap`` bytes to ``fileobj``; further bytes are counted and dropped."""

    def __init__(self, fileobj: IO[bytes], cap: int) -> None:
        self._f = fileobj
        self._cap = cap
        self.written = 0
        self.seen = 0

    @property
    def truncated(self) -> bool:
        return self.seen > self.written

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        self.seen += n
        room = self._cap - self.written
        if room > 0:
            chunk = data[:room] if n > room else data
            self._f.write(chunk)
            self.written += len(chunk)


class FrameDemuxer:
    """Splits the engine's multiplexed attach stream (8-byte headers: stream id, 0, 0, 0, big-endian size).

    Not ``docker.utils.socket.frames_iter``: its reads block in ``poll()`` without a timeout,
    so a silent task would outlive its time limit; ``_pump`` reads with the task's deadline.
    """

    def __init__(self, stdout: CappedSink, stderr: CappedSink) -> None:
        self._sinks = {1: stdout, 2: stderr}
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._remaining == 0:
                take = view[pos:pos + 8 - len(self._header)]
                self._header += take
                pos += len(take)
                if len(self._header) < 8:
                    return
                self._stream = self._header[0]
                self._remaining = int.from_bytes(self._header[4:8], "big")
                self._header.clear()
                continue
            n = min(self._remaining, end - pos)
            sink = self._sinks.get(self._stream)
            if sink is not None:
                sink.write(view[pos:pos + n])
            pos += n
            self._remaining -= n


def resolve_local_image(ref: str, *, client: docker.DockerClient | None = None) -> LocalImage:
    """Look ``ref`` (id, name:tag or name@digest) up on the local engine; NotFound if absent. Never pulls."""
    client = client or docker.from_env()
    try:
        attrs = client.api.inspect_image(ref)
    except docker.errors.ImageNotFound as exc:
        raise NotFound(f"image {ref[:200]!r} is not present on the local engine") from exc
    except docker.errors.APIError as exc:
        raise UpstreamError(f"docker engine could not inspect image {ref[:200]!r}: {_explain(exc)}") from exc
    return _local_image(attrs)


def _local_image(attrs: Mapping[str, Any]) -> LocalImage:
    return LocalImage(
        id=str(attrs["Id"]),
        repo_tags=tuple(attrs.get("RepoTags") or ()),
        repo_digests=tuple(attrs.get("RepoDigests") or ()),
        created=str(attrs.get("Created", "")),
        size=int(attrs.get("Size") or 0),
        architecture=str(attrs.get("Architecture", "")),
        os=str(attrs.get("Os", "")),
    )


class ContainerRunner:
    """Runs verified task images in hardened containers.

    ``scope`` is stamped on every container as ``helixgate.scope`` and limits ``kill_run`` and
    ``remove_orphans`` to this deployment's containers, so two deployments (or test sessions)
    sharing one engine never remove each other's tasks.
    """

    def __init__(self, client: docker.DockerClient | None = None, *, scope: str = "default") -> None:
        if not _SCOPE.match(scope):
            raise BadRequest(f"invalid container scope {scope[:80]!r}")
        self._client = client or docker.from_env()
        self.scope = scope
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    # -- images -------------------------------------------------------------------------

    def ensure_image(self, pinned_ref: str, expected_image_id: str) -> str:
        """Make the verified image ``expected_image_id`` present locally; return its id.

        Pulls ``name@sha256:<manifest digest>`` only when the id is missing, never by tag, and
        refuses (IntegrityError) when what arrived has another id.
        """
        if not _IMAGE_ID.match(expected_image_id):
            raise BadRequest(f"expected image id must be sha256:<64 hex>, got {expected_image_id[:200]!r}")
        pinned = parse_pinned_ref(pinned_ref)
        if pinned.repository is None and not digests_equal(pinned.digest, expected_image_id):
            raise IntegrityError(
                f"local image reference {pinned.digest} is not the verified image id {expected_image_id}",
                subject=pinned_ref,
                expected=expected_image_id,
                actual=pinned.digest,
            )
        local = self._local_image_id(expected_image_id)
        if local is not None:
            return self._check_image_id(pinned_ref, expected_image_id, local)
        if pinned.repository is None:
            raise NotFound(f"image {expected_image_id} is not present on this worker and has no registry reference")
        self._pull_by_digest(pinned.repository, pinned.digest)
        pulled = self._local_image_id(f"{pinned.repository}@{pinned.digest}")
        if pulled is None:
            raise UpstreamError(f"pull of {pinned} reported success but the image is not present")
        return self._check_image_id(pinned_ref, expected_image_id, pulled)

    def _local_image_id(self, ref: str) -> str | None:
        try:
            return str(self._client.api.inspect_image(ref)["Id"])
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise UpstreamError(f"docker engine could not inspect image {ref[:200]}: {_explain(exc)}") from exc

    @staticmethod
    def _check_image_id(subject: str, expected: str, actual: str) -> str:
        if not digests_equal(expected, actual):
            raise IntegrityError(
                f"image {subject[:200]} has id {actual}, expected the verified id {expected}",
                subject=subject,
                expected=expected,
                actual=actual,
            )
        return actual

    def _pull_by_digest(self, repository: str, digest: str) -> None:
        what = f"{repository}@{digest}"
        try:
            # A digest in the tag parameter makes the engine pull exactly that manifest.
            stream: Iterable[dict[str, Any]] = self._client.api.pull(repository, tag=digest, stream=True, decode=True)
            for item in stream:
                if item.get("error") or item.get("errorDetail"):
                    detail = item.get("errorDetail") or {}
                    reason = str(detail.get("message") or item.get("error"))[:300]
                    raise UpstreamError(f"pull of {what} failed: {reason}")
        except docker.errors.APIError as exc:
            raise UpstreamError(f"pull of {what} failed: {_explain(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(f"pull of {what} failed: docker engine unreachable ({type(exc).__name__})") from exc
        log.info("pulled image %s", what)

    # -- running --------------------------------------------------------------------------

    def run(self, spec: TaskContainerSpec) -> TaskContainerResult:
        """Run one task to completion (or its time limit); the container is always removed."""
        uid, gid = check_spec(spec)
        _prepare_output_dir(spec.output_dir, uid, gid)
        api = self._client.api
        container_id = ""
        try:
            container = self._create(spec)
            container_id = str(container.id)
            actual = str(container.attrs.get("Image", ""))
            if not digests_equal(spec.image_id, actual):
                raise IntegrityError(
                    f"task container for {spec.task_id} was created from {actual or 'an unknown image'}, "
                    f"not the verified image {spec.image_id}",
                    subject=f"container image of task {spec.task_id}",
                    expected=spec.image_id,
                    actual=actual,
                )
            # kill_run may have listed the run's containers just before this one existed.
            self._raise_if_cancelled(spec)
            with _open_new(spec.stdout_path) as out_f, _open_new(spec.stderr_path) as err_f:
                out, err = CappedSink(out_f, spec.log_cap_bytes), CappedSink(err_f, spec.log_cap_bytes)
                start_error, timed_out = self._start_and_follow(spec, container_id, out, err)
            if timed_out:
                self._kill(container_id)
            self._raise_if_cancelled(spec)
            state = self._final_state(spec, container_id)
            exit_code = int(state.get("ExitCode", -1))
            if start_error and exit_code == 0:
                raise UpstreamError(
                    f"docker engine could not start the container of task {spec.task_id}: {start_error}"
                )
            now = datetime.now(UTC)
            started = parse_engine_time(state.get("StartedAt")) or now
            # The engine may stamp StartedAt after a very short task already finished.
            finished = max(parse_engine_time(state.get("FinishedAt")) or now, started)
            result = TaskContainerResult(
                exit_code=exit_code,
                timed_out=timed_out,
                oom_killed=bool(state.get("OOMKilled")),
                stdout_truncated=out.truncated,
                stderr_truncated=err.truncated,
                container_id=container_id,
                started_at=started,
                finished_at=finished,
                error=start_error,
            )
            log.info(
                "task container finished run=%s task=%s container=%s exit=%s timed_out=%s oom=%s",
                spec.run_id, spec.task_id, container_id[:12], exit_code, timed_out, result.oom_killed,
            )
            return result
        except docker.errors.APIError as exc:
            raise UpstreamError(f"docker engine failed while running task {spec.task_id}: {_explain(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(
                f"lost the docker engine while running task {spec.task_id} ({type(exc).__name__})"
            ) from exc
        finally:
            if container_id:
                self._remove(api, container_id)

    def _create(self, spec: TaskContainerSpec) -> Any:
        env = {"HOME": spec.workdir, "TMPDIR": "/tmp", **spec.env}  # noqa: S108 - the container's own tmpfs
        mounts = [Mount(target=spec.workdir, source=os.path.realpath(spec.output_dir), type="bind", read_only=False)]
        mounts += [Mount(target=t, source=os.path.realpath(h), type="bind", read_only=True) for h, t in spec.inputs]
        try:
            return self._client.containers.create(
                image=spec.image_id,
                command=list(spec.command),
                user=spec.user,
                working_dir=spec.workdir,
                environment=[f"{k}={v}" for k, v in env.items()],
                labels=self._labels(spec.run_id, spec.task_id),
                hostname="task",
                network_mode="bridge" if spec.network else "none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={spec.tmpfs_bytes},mode=1777"},  # noqa: S108
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=spec.pids_limit,
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,
                cpu_period=_CPU_PERIOD_US,
                cpu_quota=max(1000, int(spec.cpus * _CPU_PERIOD_US)),
                ipc_mode="private",
                shm_size=spec.tmpfs_bytes,
                mounts=mounts,
                log_config=LogConfig(type="none"),
                stdin_open=False,
                tty=False,
            )
        except docker.errors.ImageNotFound as exc:
            raise NotFound(f"image {spec.image_id} is not present on this worker (task containers never pull)") from exc
        except docker.errors.APIError as exc:
            what = f"the container of task {spec.task_id}: {_explain(exc)}"
            if exc.status_code == 400:
                raise BadRequest(f"docker engine refused {what}") from exc
            raise UpstreamError(f"docker engine could not create {what}") from exc

    def _labels(self, run_id: str, task_id: str) -> dict[str, str]:
        return {
            MANAGED_LABEL: "true",
            SCOPE_LABEL: self.scope,
            RUN_LABEL: run_id,
            TASK_LABEL: task_id,
            PROCESS_LABEL: process_identity(),
        }

    def _start_and_follow(
        self, spec: TaskContainerSpec, container_id: str, out: CappedSink, err: CappedSink
    ) -> tuple[str, bool]:
        """Attach, start, copy output until the task exits or the deadline; return (start error, timed out)."""
        api = self._client.api
        # Attaching before start is the only way not to miss early output without engine-side logs.
        try:
            raw = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 0})
        except docker.errors.NotFound as exc:
            raise self._gone(spec) from exc
        except docker.errors.APIError as exc:
            raise UpstreamError(f"docker engine could not attach to task {spec.task_id}: {_explain(exc)}") from exc
        try:
            try:
                api.start(container_id)
            except docker.errors.NotFound as exc:
                raise self._gone(spec) from exc
            except docker.errors.APIError as exc:
                return _explain(exc), False
            deadline = time.monotonic() + spec.time_limit
            if not _pump(raw, FrameDemuxer(out, err), deadline):
                return "", True
            return "", not self._wait(spec, container_id, deadline)
        finally:
            _close_attach(raw)

    def _wait(self, spec: TaskContainerSpec, container_id: str, deadline: float) -> bool:
        """True once the container stopped; False if it still runs at the deadline."""
        timeout = max(deadline - time.monotonic(), _EXIT_GRACE)
        try:
            self._client.api.wait(container_id, timeout=timeout, condition="not-running")
            return True
        except docker.errors.NotFound as exc:
            raise self._gone(spec) from exc
        except requests.exceptions.RequestException as exc:
            if time.monotonic() >= deadline:
                return False
            raise UpstreamError(f"lost the docker engine while task {spec.task_id} ran ({type(exc).__name__})") from exc

    def _kill(self, container_id: str) -> None:
        api = self._client.api
        # SIGKILLed processes in a throttled cgroup need CPU time to exit (40 spinning processes at
        # 0.1 CPU: ~2.5 s; hundreds: minutes, and the engine then gives up removing the container).
        # The quota is lifted just before the kill (the engine's kill blocks until the exit), which
        # hands the task a few milliseconds of unthrottled CPU and makes the exit take ~0.1 s.
        self._lift_cpu_quota(container_id)
        try:
            api.kill(container_id)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: it exited on its own meanwhile
                raise UpstreamError(
                    f"docker engine could not kill container {container_id[:12]}: {_explain(exc)}"
                ) from exc
        if not self._stopped_within(container_id, _KILL_GRACE):
            raise UpstreamError(f"container {container_id[:12]} did not stop within {_KILL_GRACE:.0f} s of SIGKILL")

    def _stopped_within(self, container_id: str, timeout: float) -> bool:
        try:
            self._client.api.wait(container_id, timeout=timeout, condition="not-running")
        except docker.errors.NotFound:
            return True
        except requests.exceptions.RequestException:
            return False
        return True

    def _lift_cpu_quota(self, container_id: str) -> None:
        try:
            self._client.api.update_container(container_id, cpu_quota=-1)
        except docker.errors.APIError as exc:  # gone or stopped meanwhile: nothing to lift
            log.debug("could not lift the CPU quota of container %s: %s", container_id[:12], _explain(exc))

    def _final_state(self, spec: TaskContainerSpec, container_id: str) -> Mapping[str, Any]:
        try:
            state: Mapping[str, Any] = self._client.api.inspect_container(container_id)["State"]
        except docker.errors.NotFound as exc:
            raise self._gone(spec) from exc
        return state

    def _gone(self, spec: TaskContainerSpec) -> TaskCancelled:
        return TaskCancelled(f"the container of task {spec.task_id} (run {spec.run_id}) was removed while it ran")

    def _raise_if_cancelled(self, spec: TaskContainerSpec) -> None:
        with self._lock:
            cancelled = spec.run_id in self._cancelled
        if cancelled:
            raise TaskCancelled(f"run {spec.run_id} was cancelled; task {spec.task_id} did not complete")

    @staticmethod
    def _remove(api: Any, container_id: str) -> bool:
        """Force-remove; True when the container is gone or going (someone else may have removed it first)."""
        try:
            api.remove_container(container_id, force=True, v=True)
            return True
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress (run()'s finally, kill_run or the reconciler)
                return True
            # Never mask the task's own outcome; the reconciler removes leftovers by label.
            log.warning("could not remove container %s: %s", container_id[:12], _explain(exc))
            return False

    # -- cancel and reconcile ---------------------------------------------------------------

    def kill_run(self, run_id: str) -> int:
        """Kill and remove every container of ``run_id`` in this scope; return how many were removed."""
        if not _ID.match(run_id):
            raise BadRequest(f"invalid run_id {run_id[:80]!r}")
        # Remember first, so a run() of this run in this process refuses to start or report success.
        with self._lock:
            self._cancelled[run_id] = None
            self._cancelled.move_to_end(run_id)
            while len(self._cancelled) > _CANCELLED_MEMORY:
                self._cancelled.popitem(last=False)
        removed = 0
        for c in self._managed(f"{RUN_LABEL}={run_id}"):
            if self._kill_and_remove(c):
                removed += 1
        if removed:
            log.info("removed %d container(s) of run %s", removed, run_id)
        return removed

    def remove_orphans(self, owners: Callable[[set[str]], Mapping[str, str | None]]) -> list[str]:
        """Remove this scope's containers that their run's owner says are orphans; return their ids.

        ``owners`` gets the run ids found on this scope's containers and answers, per run it
        knows: None when every container of the run may go (the reconciler: the deployment's
        database says the run ended, was re-queued or lost its lease), or the ``host:pid`` of
        the worker process that owns the run now — then only containers another process started
        go (a lost earlier attempt). A run it does not answer for is not ours: its containers
        stay, as do containers without a run label. Containers are listed before the question,
        so a container started afterwards is never judged on an older answer.
        """
        listed = self._managed()
        found = {str(run_id) for c in listed if (run_id := (c.get("Labels") or {}).get(RUN_LABEL))}
        verdicts = owners(found) if found else {}
        removed: list[str] = []
        for c in listed:
            labels = c.get("Labels") or {}
            run_id = labels.get(RUN_LABEL)
            if not isinstance(run_id, str) or run_id not in verdicts:
                continue
            owner = verdicts[run_id]
            started_by = labels.get(PROCESS_LABEL)
            if owner is not None and (started_by is None or started_by == owner):
                continue  # the live owner's container (or one we cannot attribute): leave it
            if self._kill_and_remove(c):
                removed.append(str(c["Id"]))
        if removed:
            log.warning("removed %d orphaned task container(s)", len(removed))
        return removed

    def _kill_and_remove(self, listed: Mapping[str, Any]) -> bool:
        container_id = str(listed["Id"])
        if listed.get("State") == "running":
            # The engine's forced removal gives up if the processes do not exit promptly (see _kill).
            self._lift_cpu_quota(container_id)
        return self._remove(self._client.api, container_id)

    def _managed(self, *extra_labels: str) -> list[dict[str, Any]]:
        filters = {"label": [f"{MANAGED_LABEL}=true", f"{SCOPE_LABEL}={self.scope}", *extra_labels]}
        try:
            containers: list[dict[str, Any]] = self._client.api.containers(all=True, filters=filters)
        except docker.errors.APIError as exc:
            raise UpstreamError(f"docker engine could not list task containers: {_explain(exc)}") from exc
        return containers


def process_identity() -> str:
    """``host:pid`` of this process: the prefix of its workers' ids (``wes_server.worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pump(raw: Any, demux: FrameDemuxer, deadline: float) -> bool:
    """Copy the attach stream into ``demux`` until EOF (True) or ``deadline`` (False)."""
    sock = getattr(raw, "_sock", raw)
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    recv_into = getattr(sock, "recv_into", None)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if recv_into is not None:
                n = recv_into(buf)
            else:  # e.g. a paramiko channel (ssh:// engines)
                data = sock.recv(_READ_CHUNK)
                n = len(data)
                buf[:n] = data
        except TimeoutError:
            return False
        except InterruptedError:
            continue
        except OSError:
            # A broken stream says nothing about the task: ``wait`` decides.
            return True
        if n == 0:
            return True
        demux.feed(view[:n])


def _close_attach(raw: Any) -> None:
    # Closing the HTTP response releases the hijacked connection (and the socket under ``raw``).
    response = getattr(raw, "_response", None)
    with contextlib.suppress(OSError, ValueError):
        if response is not None:
            response.close()
        raw.close()


def _open_new(path: str) -> IO[bytes]:
    """Open a capture file for writing, never through a symbolic link planted at its name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    return os.fdopen(fd, "wb")


def _prepare_output_dir(path: str, uid: int, gid: int) -> None:
    st = os.stat(path)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
        return
    # A non-root worker cannot give the directory away, so it opens it to the task's uid instead;
    # the worker's staging directory above it must not be reachable by other local users.
    os.chmod(path, 0o777)  # noqa: S103 - see above


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)[:300]


__all__ = [
    "ContainerRunner",
    "LocalImage",
    "PinnedRef",
    "TaskCancelled",
    "TaskContainerResult",
    "TaskContainerSpec",
    "check_spec",
    "parse_pinned_ref",
    "refuse_docker_socket",
    "resolve_local_image",
]
