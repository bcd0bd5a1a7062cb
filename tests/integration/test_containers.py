"""The hardened task-container runner against the real Docker engine and registry.

Run with ``-p tests.fixtures.docker_images`` until that module is registered in tests/conftest.py.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from helixgate.errors import BadRequest, Forbidden, HelixGateError, IntegrityError, NotFound, UpstreamError
from helixgate.images import build_busybox_image, push_image
from tests.fixtures.docker_images import TEST_LABEL, PushedImage
from wes_server.containers import (
    MANAGED_LABEL,
    PROCESS_LABEL,
    RUN_LABEL,
    SCOPE_LABEL,
    TASK_LABEL,
    ContainerRunner,
    TaskCancelled,
    TaskContainerResult,
    TaskContainerSpec,
    resolve_local_image,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024

SpecFactory = Callable[..., TaskContainerSpec]


@pytest.fixture()
def task_dir(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    return tmp_path


@pytest.fixture()
def make_spec(busybox_image: str, task_dir: Path) -> SpecFactory:
    def make(command: list[str], **overrides: Any) -> TaskContainerSpec:
        fields: dict[str, Any] = {
            "run_id": "run-" + uuid.uuid4().hex[:10],
            "task_id": "step1",
            "image_id": busybox_image,
            "command": command,
            "output_dir": str(task_dir / "out"),
            "stdout_path": str(task_dir / "stdout.txt"),
            "stderr_path": str(task_dir / "stderr.txt"),
            "memory_bytes": 64 * MiB,
            "time_limit": 60.0,
        }
        fields.update(overrides)
        return TaskContainerSpec(**fields)

    return make


def run_task(runner: ContainerRunner, spec: TaskContainerSpec, client: docker.DockerClient) -> TaskContainerResult:
    result = runner.run(spec)
    assert containers_of_run(client, spec.run_id) == [], "the task container outlived run()"
    return result


def containers_of_run(client: docker.DockerClient, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    return found


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def stdout_of(spec: TaskContainerSpec) -> str:
    return Path(spec.stdout_path).read_text()


def stderr_of(spec: TaskContainerSpec) -> str:
    return Path(spec.stderr_path).read_text()


# -- the task's view -------------------------------------------------------------------------


def test_task_writes_output_and_exits_zero(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient, task_dir: Path
) -> None:
    spec = make_spec(sh("echo hello > result.txt && echo to-stdout && echo to-stderr >&2"))
    result = run_task(container_runner, spec, docker_client)

    assert (result.exit_code, result.timed_out, result.oom_killed, result.error) == (0, False, False, "")
    assert result.succeeded
    assert (task_dir / "out" / "result.txt").read_text() == "hello\n"
    assert (task_dir / "out" / "result.txt").stat().st_uid == 65534
    assert stdout_of(spec) == "to-stdout\n"
    assert stderr_of(spec) == "to-stderr\n"
    assert not result.stdout_truncated and not result.stderr_truncated
    assert result.started_at <= result.finished_at


def test_exit_code_is_reported(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    result = run_task(container_runner, make_spec(sh("exit 42")), docker_client)
    assert result.exit_code == 42 and not result.succeeded


def test_missing_executable_is_a_failed_task_not_a_crash(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    result = run_task(container_runner, make_spec(["/no/such/tool"]), docker_client)
    assert result.exit_code == 127
    assert "no such file or directory" in result.error.lower() or "not found" in result.error.lower()
    assert not result.succeeded


def test_no_network_by_default(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    # 172.17.0.1 is the docker0 bridge: routable from any container that has a network.
    # (nc, not wget: Debian 12's busybox-static wget segfaults on start, even on the host.)
    probe = "cat /proc/net/dev; ip route; nc -w 3 172.17.0.1 5000 </dev/null; echo nc=$?"
    spec = make_spec(sh(probe))
    result = run_task(container_runner, spec, docker_client)

    assert result.exit_code == 0
    out = stdout_of(spec)
    interfaces = {line.split(":")[0].strip() for line in out.splitlines() if ":" in line and "|" not in line}
    assert interfaces == {"lo"}
    assert "default via" not in out
    assert "nc=1" in out
    assert "network is unreachable" in stderr_of(spec).lower()

    # The same probe with network allowed gets a route and an answer from the host (refused, not unreachable).
    spec = make_spec(sh(probe), network=True)
    assert run_task(container_runner, spec, docker_client).exit_code == 0
    assert "default via 172.17.0.1" in stdout_of(spec)
    assert "network is unreachable" not in stderr_of(spec).lower()


def test_root_filesystem_is_read_only_and_tmp_is_a_small_tmpfs(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    script = (
        "touch /etc/evil; echo root=$?; touch /tmp/ok; echo tmp=$?; "
        "dd if=/dev/zero of=/tmp/big bs=1048576 count=8 2>/dev/null; echo big=$?"
    )
    spec = make_spec(sh(script), tmpfs_bytes=4 * MiB)
    result = run_task(container_runner, spec, docker_client)

    assert result.exit_code == 0
    out = stdout_of(spec)
    assert "root=1" in out and "tmp=0" in out
    assert "big=0" not in out  # 8 MiB does not fit a 4 MiB /tmp
    assert "Read-only file system" in stderr_of(spec)


def test_runs_as_nobody_by_default_and_as_the_given_uid(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient, task_dir: Path
) -> None:
    spec = make_spec(["id", "-u"])
    assert run_task(container_runner, spec, docker_client).exit_code == 0
    assert stdout_of(spec).strip() == "65534"

    spec = make_spec(sh("id -u; id -g; touch out.txt"), user="4321:4321")
    assert run_task(container_runner, spec, docker_client).exit_code == 0
    assert stdout_of(spec).split() == ["4321", "4321"]
    assert (task_dir / "out" / "out.txt").stat().st_uid == 4321


def test_capabilities_are_dropped_and_privileges_cannot_grow(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spec = make_spec(["grep", "-E", "^(CapEff|CapPrm|CapBnd|NoNewPrivs)", "/proc/self/status"])
    assert run_task(container_runner, spec, docker_client).exit_code == 0
    status = dict(line.split(":\t") for line in stdout_of(spec).splitlines())
    assert status == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000",
                      "CapBnd": "0000000000000000", "NoNewPrivs": "1"}


def test_inputs_are_read_only_and_env_is_passed(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient, task_dir: Path
) -> None:
    (task_dir / "in" / "data.txt").write_text("ACGT\n")
    spec = make_spec(
        sh("cat /inputs/data.txt; echo \"$GREETING\"; echo x > /inputs/data.txt; echo write=$?"),
        inputs=[(str(task_dir / "in"), "/inputs")],
        env={"GREETING": "hi there"},
    )
    assert run_task(container_runner, spec, docker_client).exit_code == 0
    assert stdout_of(spec).splitlines() == ["ACGT", "hi there", "write=1"]
    assert (task_dir / "in" / "data.txt").read_text() == "ACGT\n"


def test_docker_socket_is_never_mounted(container_runner: ContainerRunner, make_spec: SpecFactory) -> None:
    for host in ("/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run", "/"):
        with pytest.raises(Forbidden):
            container_runner.run(make_spec(["true"], inputs=[(host, "/mnt/x")]))


def test_parallel_tasks_keep_their_outputs_apart(
    container_runner: ContainerRunner, busybox_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, str, str, bytes]:
        d = tmp_path / f"task{i}"
        (d / "out").mkdir(parents=True)
        spec = TaskContainerSpec(
            run_id=f"run-par-{uuid.uuid4().hex[:8]}", task_id=f"t{i}", image_id=busybox_image,
            command=sh(f"echo out{i}; echo err{i} >&2; dd if=/dev/zero bs=65536 count={i + 1} 2>/dev/null > blob"),
            output_dir=str(d / "out"), stdout_path=str(d / "so"), stderr_path=str(d / "se"), memory_bytes=32 * MiB,
        )
        result = run_task(container_runner, spec, docker_client)
        return result.exit_code, stdout_of(spec), stderr_of(spec), (d / "out" / "blob").read_bytes()

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(8)))
    for i, (code, out, err, blob) in enumerate(outcomes):
        assert (code, out, err, len(blob)) == (0, f"out{i}\n", f"err{i}\n", (i + 1) * 65536)


# -- limits -------------------------------------------------------------------------------------


def test_fork_bomb_is_contained_by_pids_limit(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    # Every bomb process forks forever; the main shell (builtins only, no forks) watches the pids
    # cgroup until the kernel has refused a fork, then exits, which kills the whole pid namespace.
    bomb = (
        "f(){ while :; do f & done; }; read m < /sys/fs/cgroup/pids/pids.max; f & e=0; "
        'while [ "$e" -eq 0 ]; do read _ e < /sys/fs/cgroup/pids/pids.events; done; '
        'read n < /sys/fs/cgroup/pids/pids.current; echo "$e $n $m"'
    )
    spec = make_spec(sh(bomb), pids_limit=32, cpus=0.5, time_limit=60)
    result = run_task(container_runner, spec, docker_client)

    refused, current, limit = (int(v) for v in stdout_of(spec).split())
    assert limit == 32
    assert refused > 0 and current <= limit
    assert "can't fork" in stderr_of(spec)
    assert result.exit_code == 0 and not result.timed_out
    assert docker_client.ping()
    follow_up = make_spec(["true"])
    assert run_task(container_runner, follow_up, docker_client).exit_code == 0


def test_memory_hog_is_oom_killed_and_reported(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    # tail buffers a "line" of /dev/zero forever: memory grows until the cgroup limit.
    result = run_task(container_runner, make_spec(["tail", "/dev/zero"], memory_bytes=16 * MiB), docker_client)
    assert result.oom_killed
    assert result.exit_code == 137
    assert not result.timed_out and not result.succeeded


def test_time_limit_kills_the_task(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spec = make_spec(sh("echo started; sleep 30"), time_limit=1.5)
    t0 = time.monotonic()
    result = run_task(container_runner, spec, docker_client)
    elapsed = time.monotonic() - t0

    assert result.timed_out and not result.succeeded
    assert result.exit_code == 137
    assert stdout_of(spec) == "started\n"
    assert elapsed < 15, f"a 1.5 s limit took {elapsed:.1f} s to enforce"
    assert (result.finished_at - result.started_at).total_seconds() < 15


def test_time_limit_kills_a_throttled_multi_process_task(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    spinners = "i=0; while [ $i -lt 40 ]; do (while :; do :; done) & i=$((i+1)); done; echo spinning; wait"
    spec = make_spec(sh(spinners), cpus=0.1, pids_limit=64, time_limit=2.0)
    t0 = time.monotonic()
    result = run_task(container_runner, spec, docker_client)
    assert result.timed_out and result.exit_code == 137
    # (whether "spinning" got printed before the limit depends on the host's load: not asserted)
    assert stdout_of(spec) in ("", "spinning\n")
    assert time.monotonic() - t0 < 20


def test_stdout_is_capped_and_marked_truncated(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient
) -> None:
    # 16 MiB of output against a 1000-byte cap: the task is never blocked and the file stays small.
    spec = make_spec(sh("dd if=/dev/zero bs=1048576 count=16; echo small >&2"), log_cap_bytes=1000)
    result = run_task(container_runner, spec, docker_client)

    assert result.exit_code == 0
    assert result.stdout_truncated and not result.stderr_truncated
    assert Path(spec.stdout_path).read_bytes() == b"\0" * 1000
    assert stderr_of(spec).endswith("small\n")


# -- labels, cancel, reconcile -----------------------------------------------------------------


def test_labels_and_hardening_during_run_and_kill_run_removes_everything(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient, task_dir: Path
) -> None:
    spec = make_spec(["sleep", "30"], task_id="align/sample-1", inputs=[(str(task_dir / "in"), "/inputs")],
                     cpus=0.5, memory_bytes=48 * MiB, pids_limit=40)
    outcome: dict[str, BaseException | TaskContainerResult] = {}

    def target() -> None:
        try:
            outcome["result"] = container_runner.run(spec)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 20
    running: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not running:
        running = docker_client.api.containers(filters={"label": f"{RUN_LABEL}={spec.run_id}", "status": "running"})
        if not running:
            time.sleep(0.05)  # test-side polling only; the runner itself never sleeps
    assert len(running) == 1
    labels = running[0]["Labels"]
    assert labels[MANAGED_LABEL] == "true"
    assert labels[RUN_LABEL] == spec.run_id
    assert labels[TASK_LABEL] == "align/sample-1"
    assert labels[SCOPE_LABEL] == container_runner.scope

    host = docker_client.api.inspect_container(running[0]["Id"])["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert (host["PidsLimit"], host["Memory"], host["MemorySwap"]) == (40, 48 * MiB, 48 * MiB)
    assert (host["CpuPeriod"], host["CpuQuota"]) == (100_000, 50_000)
    assert host["LogConfig"]["Type"] == "none"
    assert set(host["Tmpfs"]) == {"/tmp"}
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert mounts["/inputs"]["ReadOnly"] is True and not mounts["/work"].get("ReadOnly", False)
    assert all("docker.sock" not in m["Source"] for m in host["Mounts"])

    assert container_runner.kill_run(spec.run_id) == 1
    thread.join(20)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), TaskCancelled)
    assert containers_of_run(docker_client, spec.run_id) == []
    assert container_runner.kill_run(spec.run_id) == 0
    # A task of the cancelled run that this worker tries to start afterwards is refused.
    late = make_spec(sh("touch late.txt"), run_id=spec.run_id)
    with pytest.raises(TaskCancelled):
        container_runner.run(late)
    assert containers_of_run(docker_client, spec.run_id) == []
    assert not (Path(late.output_dir) / "late.txt").exists()


def test_remove_orphans_removes_only_containers_of_dead_runs(
    container_runner: ContainerRunner,
    busybox_image: str,
    docker_client: docker.DockerClient,
    test_session_id: str,
) -> None:
    def leftover(run_id: str, scope: str, process: str | None = None) -> str:
        labels = {MANAGED_LABEL: "true", SCOPE_LABEL: scope, RUN_LABEL: run_id, TASK_LABEL: "t",
                  TEST_LABEL: test_session_id}
        if process is not None:
            labels[PROCESS_LABEL] = process
        return str(docker_client.api.create_container(busybox_image, ["true"], labels=labels)["Id"])

    scope = container_runner.scope
    dead_run, live_run, unknown_run, foreign_run = (f"run-{k}-{uuid.uuid4().hex[:6]}" for k in "dluf")
    dead = leftover(dead_run, scope, "host-a:1")
    live = leftover(live_run, scope, "host-b:2")  # started by the process holding the lease
    lost_attempt = leftover(live_run, scope, "host-a:1")  # an earlier attempt's, by another process
    unattributed = leftover(live_run, scope)  # no process label: cannot tell, so it stays
    unknown = leftover(unknown_run, scope, "host-c:3")
    foreign = leftover(foreign_run, scope + "-other", "host-a:1")
    asked: list[set[str]] = []

    def owners(found: set[str]) -> dict[str, str | None]:  # what the deployment's database would answer
        asked.append(found)
        return {dead_run: None, live_run: "host-b:2", foreign_run: None}

    removed = container_runner.remove_orphans(owners)

    assert sorted(removed) == sorted([dead, lost_attempt])
    assert {dead_run, live_run, unknown_run} <= asked[0] and foreign_run not in asked[0], "only this scope is judged"
    labelled = docker_client.api.containers(all=True, filters={"label": f"{TEST_LABEL}={test_session_id}"})
    remaining = {c["Id"] for c in labelled}
    assert not {dead, lost_attempt} & remaining
    assert {live, unattributed, unknown, foreign} <= remaining, "live, unknown and other scopes' containers stay"
    for cid in (live, unattributed, unknown, foreign):
        docker_client.api.remove_container(cid, force=True)


# -- image identity ----------------------------------------------------------------------------


def test_task_image_must_be_an_id_and_a_missing_id_is_never_pulled(
    container_runner: ContainerRunner, make_spec: SpecFactory, pushed_busybox: PushedImage,
    docker_client: docker.DockerClient,
) -> None:
    with pytest.raises(BadRequest):
        container_runner.run(make_spec(["true"], image_id=f"{pushed_busybox.repository}:{pushed_busybox.tag}"))
    with pytest.raises(BadRequest):
        container_runner.run(make_spec(["true"], image_id=pushed_busybox.pinned_ref))

    absent = "sha256:" + uuid.uuid4().hex * 2
    spec = make_spec(["true"], image_id=absent)
    with pytest.raises(NotFound) as info:
        container_runner.run(spec)
    assert absent in info.value.message
    assert containers_of_run(docker_client, spec.run_id) == []
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.api.inspect_image(absent)


class _SwappingContainers:
    """Creates every container from another image than requested: a compromised or buggy engine path."""

    def __init__(self, real: Any, other_image: str) -> None:
        self._real = real
        self._other = other_image

    def create(self, **kwargs: Any) -> Any:
        return self._real.create(**{**kwargs, "image": self._other})


class _SwappingClient:
    def __init__(self, real: docker.DockerClient, other_image: str) -> None:
        self.api = real.api
        self.containers = _SwappingContainers(real.containers, other_image)


def test_container_from_another_image_is_removed_and_refused(
    make_spec: SpecFactory, docker_client: docker.DockerClient, busybox_image: str,
    container_runner: ContainerRunner, test_session_id: str,
) -> None:
    other = build_busybox_image(
        docker_client, "helixgate-test/other", f"s-{test_session_id}", {"marker": b"other"},
        labels={TEST_LABEL: test_session_id},
    )
    runner = ContainerRunner(_SwappingClient(docker_client, other), scope=container_runner.scope)  # type: ignore[arg-type]
    spec = make_spec(sh("echo should-never-run > ran.txt"))

    with pytest.raises(IntegrityError) as info:
        runner.run(spec)

    assert info.value.expected == busybox_image
    assert info.value.actual == other
    assert containers_of_run(docker_client, spec.run_id) == []
    assert not (Path(spec.output_dir) / "ran.txt").exists()


@pytest.fixture()
def pull_probe(
    docker_client: docker.DockerClient, registry_host: str, test_session_id: str
) -> PushedImage:
    """A separately tagged image pushed to the registry, so removing it locally spares the fixtures."""
    tag = f"s-{test_session_id}-{uuid.uuid4().hex[:6]}"
    image_id = build_busybox_image(
        docker_client, "helixgate-test/pull-probe", tag, {"probe.txt": tag.encode()},
        labels={TEST_LABEL: test_session_id},
    )
    digest = push_image(docker_client, image_id, registry_host, "helixgate-test/pull-probe", tag)
    return PushedImage(image_id, f"{registry_host}/helixgate-test/pull-probe", tag, digest)


def test_ensure_image_pulls_by_digest_after_the_local_image_is_gone(
    container_runner: ContainerRunner, docker_client: docker.DockerClient, pull_probe: PushedImage,
    make_spec: SpecFactory,
) -> None:
    docker_client.api.remove_image(pull_probe.image_id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.api.inspect_image(pull_probe.image_id)

    assert container_runner.ensure_image(pull_probe.pinned_ref, pull_probe.image_id) == pull_probe.image_id

    local = resolve_local_image(pull_probe.image_id, client=docker_client)
    assert local.id == pull_probe.image_id
    assert local.manifest_digest(pull_probe.repository) == pull_probe.digest
    assert local.repo_tags == ()  # pulled by digest: no tag was created
    spec = make_spec(["cat", "/probe.txt"], image_id=pull_probe.image_id)
    assert container_runner.run(spec).exit_code == 0
    assert stdout_of(spec) == pull_probe.tag
    # Present now: a second call is answered locally.
    assert container_runner.ensure_image(pull_probe.pinned_ref, pull_probe.image_id) == pull_probe.image_id


def test_ensure_image_refuses_an_image_with_another_id(
    container_runner: ContainerRunner, docker_client: docker.DockerClient, pull_probe: PushedImage
) -> None:
    docker_client.api.remove_image(pull_probe.image_id, force=True)
    claimed = "sha256:" + uuid.uuid4().hex * 2

    with pytest.raises(IntegrityError) as info:
        container_runner.ensure_image(pull_probe.pinned_ref, claimed)

    assert info.value.expected == claimed
    assert info.value.actual == pull_probe.image_id
    assert claimed in info.value.message and pull_probe.image_id in info.value.message


def test_ensure_image_never_pulls_by_tag_and_reports_pull_failures(
    container_runner: ContainerRunner, pushed_busybox: PushedImage, busybox_image: str, registry_host: str
) -> None:
    with pytest.raises(BadRequest):
        container_runner.ensure_image(f"{pushed_busybox.repository}:{pushed_busybox.tag}", busybox_image)

    missing_manifest, absent_id = "sha256:" + "0" * 64, "sha256:" + "1" * 64
    with pytest.raises(UpstreamError) as info:
        container_runner.ensure_image(f"{registry_host}/helixgate-test/busybox@{missing_manifest}", absent_id)
    assert missing_manifest in info.value.message

    with pytest.raises(UpstreamError):
        container_runner.ensure_image(f"127.0.0.1:9/helixgate-test/busybox@{missing_manifest}", absent_id)


def test_ensure_image_local_only_images(container_runner: ContainerRunner, busybox_image: str) -> None:
    assert container_runner.ensure_image(busybox_image, busybox_image) == busybox_image
    absent = "sha256:" + "2" * 64
    with pytest.raises(NotFound):
        container_runner.ensure_image(absent, absent)
    with pytest.raises(IntegrityError):
        container_runner.ensure_image(busybox_image, absent)


def test_resolve_local_image(docker_client: docker.DockerClient, pushed_busybox: PushedImage) -> None:
    by_tag = resolve_local_image(f"{pushed_busybox.repository}:{pushed_busybox.tag}", client=docker_client)
    assert by_tag.id == pushed_busybox.image_id
    assert by_tag.manifest_digest(pushed_busybox.repository) == pushed_busybox.digest
    assert by_tag.os == "linux" and by_tag.size > 0
    with pytest.raises(NotFound):
        resolve_local_image("helixgate-test/never-built:nope", client=docker_client)


def test_errors_are_helixgate_errors(container_runner: ContainerRunner, make_spec: SpecFactory) -> None:
    with pytest.raises(HelixGateError):
        container_runner.run(make_spec(["true"], user="0:0"))


# -- cost -----------------------------------------------------------------------------------------


def test_overhead_of_run_versus_the_bare_sdk_sequence(
    container_runner: ContainerRunner, make_spec: SpecFactory, docker_client: docker.DockerClient,
    busybox_image: str, test_session_id: str,
) -> None:
    """Prints the medians; timings are reported, never asserted (bench/ owns comparisons)."""
    api = docker_client.api
    bare_hc = api.create_host_config(network_mode="none")

    def bare() -> float:
        t0 = time.perf_counter()
        cid = api.create_container(busybox_image, ["true"], host_config=bare_hc,
                                   labels={TEST_LABEL: test_session_id})["Id"]
        api.start(cid)
        api.wait(cid)
        api.remove_container(cid, force=True)
        return time.perf_counter() - t0

    def hardened() -> float:
        spec = make_spec(["true"])
        t0 = time.perf_counter()
        result = container_runner.run(spec)
        elapsed = time.perf_counter() - t0
        assert result.exit_code == 0
        return elapsed

    bare_times: list[float] = []
    run_times: list[float] = []
    for _ in range(8):  # interleaved so machine noise hits both alike
        bare_times.append(bare())
        run_times.append(hardened())
    b, r = statistics.median(bare_times), statistics.median(run_times)
    print(f"\ncontainer start-to-removed for `true`: bare SDK {b * 1000:.0f} ms, ContainerRunner.run {r * 1000:.0f} ms "
          f"(ratio {r / b:.2f})")
    assert all(t > 0 for t in bare_times + run_times)
