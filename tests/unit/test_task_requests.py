"""The language-neutral task request: what each engine makes of a task (cwltool's job,
miniwdl's TaskContainer) and what the worker accepts from the untrusted channel."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import WDL.runtime

from wes_server import wdl_engine
from wes_server.engine import _task_request
from wes_server.gate import TaskInput
from wes_server.tasks import EngineFailed, TaskRequest, parse_task_request


def _ex(tmp_path: Path) -> Any:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    return SimpleNamespace(workdir=tmp_path)


def _wire(tmp_path: Path, **over: Any) -> dict[str, Any]:
    task = tmp_path / "jobs" / "wdl" / "call-a"
    msg: dict[str, Any] = {
        "name": "call-a",
        "image": "127.0.0.1:5000/lab/tool@sha256:" + "aa" * 32,
        "command": ["/bin/sh", "-c", "cat in.txt"],
        "environment": {"A": "1"},
        "inputs": [{"kind": "File", "path": str(tmp_path / "inputs" / "x" / "in.txt"), "target": "/w/in.txt"}],
        "generated": [{"path": "_miniwdl_inputs/0/lines.txt", "content": "a\nb\n"}],
        "outdir": str(task / "work"),
        "workdir": "/mnt/miniwdl_task_container/work",
        "stdout": str(task / "stdout.txt"),
        "stderr": str(task / "stderr.txt"),
        "cores": 2,
        "ram_mib": 512,
        "success_codes": "*",
    }
    msg.update(over)
    return msg


# ---------------------------------------------------------------- the worker's side
def test_a_wdl_request_becomes_a_task_request(tmp_path: Path) -> None:
    req = parse_task_request(_ex(tmp_path), _wire(tmp_path))
    assert isinstance(req, TaskRequest)
    assert req.inputs == (TaskInput("File", str(tmp_path / "inputs" / "x" / "in.txt"), "/w/in.txt"),)
    assert req.generated[0].path == "_miniwdl_inputs/0/lines.txt" and req.generated[0].content == b"a\nb\n"
    assert req.success_codes is None  # "*": any exit code
    assert (req.cores, req.ram_mib, req.network, req.unsupported) == (2.0, 512.0, False, None)
    assert req.stdout == str(tmp_path / "jobs" / "wdl" / "call-a" / "stdout.txt")


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"inputs": [{"kind": "File", "path": "/etc/passwd", "target": "/w/p"}]},
            "input /etc/passwd is outside the run",
        ),
        ({"inputs": [{"kind": "Socket", "path": "/x", "target": "/w/p"}]}, "input kind"),
        ({"inputs": [{"kind": "File", "path": "IN", "target": "/w/../etc/p"}]}, "is not a normalized container path"),
        ({"outdir": "ATTACH"}, "is outside the run job area"),
        ({"stdout": "OTHER_TASK"}, "is outside the task's directory"),
        ({"command": []}, "command must be a non-empty list of strings"),
        ({"command": ["sh", 1]}, "command must be a non-empty list of strings"),
        ({"environment": {"A": 1}}, "environment must map strings to strings"),
        ({"success_codes": ["0"]}, "success_codes must be a list of integers"),
        ({"workdir": "relative"}, "not a normalized absolute path"),
    ],
)
def test_malformed_or_escaping_requests_are_refused(tmp_path: Path, over: dict[str, Any], message: str) -> None:
    names = {
        "IN": str(tmp_path / "inputs" / "in.txt"),
        "ATTACH": str(tmp_path / "attachments"),
        "OTHER_TASK": str(tmp_path / "jobs" / "wdl" / "call-b" / "stdout.txt"),
    }

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    with pytest.raises(EngineFailed) as info:
        parse_task_request(_ex(tmp_path), _wire(tmp_path, **fill(over)))
    assert message in info.value.message


def test_a_stream_beside_an_output_directory_in_the_job_root_is_refused(tmp_path: Path) -> None:
    """CWL's output directories sit in the job root: their streams must stay inside them."""
    ex = _ex(tmp_path)
    outdir = str(tmp_path / "jobs" / "outabc")
    ok = parse_task_request(ex, _wire(tmp_path, outdir=outdir, stdout=outdir + "/out.txt", stderr=None))
    assert ok.stdout == outdir + "/out.txt"
    with pytest.raises(EngineFailed):
        parse_task_request(
            ex, _wire(tmp_path, outdir=outdir, stdout=str(tmp_path / "jobs" / "outxyz" / "a.txt"), stderr=None)
        )


# ---------------------------------------------------------------- cwltool's side
def _cwl_job(tmp_path: Path, **over: Any) -> Any:
    src = tmp_path / "inputs" / "x" / "in.txt"
    ent = SimpleNamespace(
        resolved=str(tmp_path / "elsewhere.txt"), target="/var/lib/cwl/stg1/in.txt", type="File", staged=True
    )
    literal = SimpleNamespace(resolved="lit", target="/x", type="CreateFile", staged=True)
    job = SimpleNamespace(
        name="sort",
        get_requirement=lambda feature: ({"dockerPull": "img:1"}, True),
        pathmapper=SimpleNamespace(items_exclude_children=lambda: [(src.as_uri(), ent), ("_:lit", literal)]),
        generatemapper=SimpleNamespace(
            items=lambda: [
                (
                    "f",
                    SimpleNamespace(
                        resolved="hello", target="/var/spool/cwl/conf/a.txt", type="CreateFile", staged=True
                    ),
                )
            ]
        ),
        builder=SimpleNamespace(resources={"cores": 1, "ram": 256}, outdir="/var/spool/cwl"),
        command_line=["sort", "/var/lib/cwl/stg1/in.txt"],
        environment={"HOME": "/var/spool/cwl"},
        outdir=str(tmp_path / "jobs" / "out1"),
        stdin=None,
        stdout="sorted.txt",
        stderr=None,
        timelimit=None,
        networkaccess=False,
        successCodes=[3],
        temporaryFailCodes=[],
    )
    for k, v in over.items():
        setattr(job, k, v)
    return job


def test_a_cwl_job_becomes_the_same_request(tmp_path: Path) -> None:
    wire = _task_request(_cwl_job(tmp_path))
    # the input is read where it was declared, never where cwltool followed a link
    assert wire["inputs"] == [
        {"kind": "File", "path": str(tmp_path / "inputs" / "x" / "in.txt"), "target": "/var/lib/cwl/stg1/in.txt"}
    ]
    assert wire["generated"] == [{"path": "conf/a.txt", "content": "hello"}]
    assert wire["success_codes"] == [0, 3] and wire["unsupported"] is None
    assert wire["stdout"] == str(tmp_path / "jobs" / "out1" / "sorted.txt") and wire["stderr"] is None
    req = parse_task_request(_ex(tmp_path), wire)
    assert req.workdir == "/var/spool/cwl" and req.command == ("sort", "/var/lib/cwl/stg1/in.txt")


def test_cwl_features_the_executor_refuses_are_marked_unsupported(tmp_path: Path) -> None:
    assert "stdin" in str(_task_request(_cwl_job(tmp_path, stdin="/x"))["unsupported"])
    staged = SimpleNamespace(resolved="/r", target="/var/spool/cwl/in.txt", type="File", staged=True)
    job = _cwl_job(tmp_path, generatemapper=SimpleNamespace(items=lambda: [("f", staged)]))
    assert "InitialWorkDir staging" in str(_task_request(job)["unsupported"])


# ---------------------------------------------------------------- miniwdl's side
class _Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture()
def wdl_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, _Channel]:
    channel = _Channel()
    monkeypatch.setitem(wdl_engine._STATE, "channel", channel)
    monkeypatch.setitem(wdl_engine._STATE, "workdir", tmp_path)
    monkeypatch.setitem(wdl_engine._STATE, "limits", {"cpu": 2, "mem_bytes": 1 << 30})
    return tmp_path, channel


def _container(run: Path) -> wdl_engine.GatedTaskContainer:
    cfg = wdl_engine._config(run, 2)
    host_dir = run / "jobs" / "wdl" / "call-b"
    host_dir.mkdir(parents=True)
    return wdl_engine.GatedTaskContainer(cfg, "call-b", str(host_dir))


def test_a_wdl_task_becomes_a_request(wdl_run: tuple[Path, _Channel]) -> None:
    run, _ = wdl_run
    produced = run / "jobs" / "wdl" / "call-a" / "work" / "upper.txt"
    produced.parent.mkdir(parents=True)
    produced.write_text("A\n")
    link = run / "jobs" / "wdl" / "call-a" / "out" / "out" / "upper.txt"
    link.parent.mkdir(parents=True)
    link.symlink_to(produced)  # how miniwdl hands an output to the next call
    c = _container(run)
    lines = Path(c.host_dir) / "write_" / "lines.txt"
    lines.parent.mkdir()
    lines.write_text("x\ny\n")
    c.add_paths([str(link), str(lines)])
    c.runtime_values.update({"docker": "img@sha256:" + "aa" * 32, "cpu": 2, "memory_reservation": 512 << 20})
    wire = c.task_request("cat upper.txt")
    cwork = "/mnt/miniwdl_task_container/work"
    assert wire["inputs"] == [{"kind": "File", "path": str(produced), "target": c.input_path_map[str(link)]}]
    assert wire["generated"] == [{"path": os.path.relpath(c.input_path_map[str(lines)], cwork), "content": "x\ny\n"}]
    assert wire["command"] == ["/bin/sh", "-c", wdl_engine.SHELL, "wdl-task", "cat upper.txt"]
    assert wire["workdir"] == cwork
    assert (wire["cores"], wire["ram_mib"], wire["success_codes"]) == (2, 512, [0])
    assert wire["outdir"] == c.host_work_dir() and wire["stdout"] == c.host_stdout_txt()
    req = parse_task_request(_ex(run), wire)  # the worker accepts what the engine sends
    assert req.inputs[0].origin == str(produced)


def test_a_wdl_file_outside_the_run_is_refused_before_the_task(
    wdl_run: tuple[Path, _Channel], tmp_path_factory: Any
) -> None:
    run, channel = wdl_run
    outside = tmp_path_factory.mktemp("host") / "secret.txt"
    outside.write_text("s")
    c = _container(run)
    with pytest.raises(wdl_engine.GateRefused):
        c.add_paths([str(outside)])
    assert channel.sent and channel.sent[0]["op"] == "refused" and channel.sent[0]["reference"] == str(outside)
    assert c.input_path_map == {}


def test_unsupported_wdl_runtime_is_marked(wdl_run: tuple[Path, _Channel]) -> None:
    c = _container(wdl_run[0])
    c.runtime_values.update({"inlineDockerfile": "FROM x", "returnCodes": "*"})
    wire = c.task_request("true")
    assert "inlineDockerfile" in str(wire["unsupported"]) and wire["success_codes"] == "*"


def test_the_engine_configuration_uses_only_helixgate_plugins(tmp_path: Path) -> None:
    cfg = wdl_engine._config(tmp_path, 2)
    assert cfg["scheduler"]["container_backend"] == "helixgate"
    names = {name for name, _ in WDL.runtime.config.load_plugins(cfg, "file_download")}
    assert {"drs", "http", "https", "ftp", "s3", "gs"} <= names
    loaded = dict(WDL.runtime.config.load_plugins(cfg, "file_download"))
    assert loaded["drs"] is wdl_engine.drs_download and loaded["https"] is wdl_engine.refused_download
    backends = dict(WDL.runtime.config.load_plugins(cfg, "container_backend"))
    assert set(backends) == {"helixgate"}


def test_the_wdl_engine_imports_only_miniwdl_the_loader_and_the_channel() -> None:
    """It runs untrusted WDL: nothing of the worker (gate, docker, ports, database) is imported."""
    import ast
    import sys

    tree = ast.parse(Path(wdl_engine.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    allowed = {"WDL", "helixgate.wdl_documents", "wes_server.channel", "wes_server.wdl_engine", "__future__"}
    foreign = {m for m in modules if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "WDL"}
    assert foreign <= allowed, foreign - allowed


def test_outputs_are_recorded_but_input_mount_points_are_not(tmp_path: Path) -> None:
    from wes_server.gate import ChecksumRegistry
    from wes_server.tasks import _record_outputs

    outdir = tmp_path / "jobs" / "wdl" / "call-a" / "work"
    (outdir / "_miniwdl_inputs" / "0").mkdir(parents=True)
    (outdir / "_miniwdl_inputs" / "0" / "in.txt").write_bytes(b"")  # the engine's mount point
    (outdir / "out.txt").write_bytes(b"result\n")
    stdout = outdir.parent / "stdout.txt"
    stdout.write_bytes(b"3\n")
    (outdir / "link.txt").symlink_to(stdout)  # a task may not point outputs at other files
    req = parse_task_request(
        _ex(tmp_path),
        _wire(
            tmp_path,
            outdir=str(outdir),
            stdout=str(stdout),
            stderr=None,
            inputs=[
                {
                    "kind": "File",
                    "path": str(tmp_path / "inputs" / "in.txt"),
                    "target": "/mnt/miniwdl_task_container/work/_miniwdl_inputs/0/in.txt",
                }
            ],
        ),
    )
    ex = SimpleNamespace(registry=ChecksumRegistry())
    produced = _record_outputs(ex, req, "001-call-a")  # type: ignore[arg-type]
    assert sorted(p["path"] for p in produced) == sorted([str(outdir / "out.txt"), str(stdout)])
    rec = ex.registry.get(str(stdout))
    assert rec is not None and rec.task_id == "001-call-a"
    assert not (outdir / "link.txt").exists()


def test_an_output_directory_swapped_for_a_link_out_of_the_run_is_refused(
    tmp_path: Path, tmp_path_factory: Any
) -> None:
    elsewhere = tmp_path_factory.mktemp("host-etc")
    task = tmp_path / "jobs" / "wdl" / "call-a"
    task.mkdir(parents=True)
    (task / "work").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(EngineFailed) as info:
        parse_task_request(_ex(tmp_path), _wire(tmp_path))
    assert "is outside the run job area" in info.value.message
    (task / "work").unlink()
    (task / "work").mkdir()
    task.rename(tmp_path / "moved")
    task.symlink_to(elsewhere, target_is_directory=True)  # the task's directory itself
    with pytest.raises(EngineFailed):
        parse_task_request(_ex(tmp_path), _wire(tmp_path))
