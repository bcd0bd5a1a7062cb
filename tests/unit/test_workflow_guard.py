"""The restricted CWL loader, the confined engine file system and the expression sandbox
(real cwltool, node and bubblewrap; no services)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cwltool.errors import WorkflowException

from helixgate.errors import BadRequest, ConfigurationError
from wes_server import jsbox
from wes_server.workflow_guard import (
    Refusals,
    RunFsAccess,
    check_input_references,
    check_workflow_documents,
    load_restricted,
    map_input_references,
)

SETTINGS = SimpleNamespace(expression_time_limit=3, expression_memory_mib=96)
TOOL = """cwlVersion: v1.2
class: CommandLineTool
baseCommand: [echo]
arguments:
  - $include: {ref}
inputs: []
outputs: []
"""


@pytest.fixture()
def secret(tmp_path: Path) -> tuple[Path, str]:
    marker = "HG-UNIT-SECRET-" + uuid.uuid4().hex
    path = tmp_path / "secret.txt"
    path.write_text(marker)
    return path, marker


# --------------------------------------------------------------------------- workflow_params
@pytest.mark.parametrize(
    "ref",
    [
        "/etc/passwd",
        "../secret.txt",
        "a/../../secret.txt",
        "file:///etc/passwd",
        "file:///home/me/other.txt",
        "http://127.0.0.1/x",
        "https://example.org/x",
        "s3://bucket/key",
        "ftp://host/x",
    ],
)
def test_input_references_outside_the_run_are_refused(ref: str) -> None:
    for params in (
        {"f": {"class": "File", "location": ref}},
        {"f": {"class": "File", "path": ref}},
        {"d": {"class": "Directory", "location": ref}},
        {"f": {"class": "File", "location": "wf.cwl", "secondaryFiles": [{"class": "File", "location": ref}]}},
        {"rec": {"list": [{"class": "File", "location": ref}]}},
    ):
        with pytest.raises(BadRequest) as info:
            check_input_references(params, {"wf.cwl"})
        assert ref in info.value.message and "refused" in info.value.message


def test_input_references_inside_the_run_are_accepted() -> None:
    check_input_references(
        {
            "a": {"class": "File", "location": "data/x.txt"},
            "b": {"class": "File", "location": "drs://h:1/abc"},
            "c": {"class": "File", "location": "file:///client/home/data/x.txt"},  # wes-client: attached file
            "d": {"class": "File", "contents": "literal"},
            "e": "/just/a/string",
        },
        {"data/x.txt", "x.txt"},
    )


def test_attached_references_point_at_the_runs_copy_at_execution(tmp_path: Path) -> None:
    att = tmp_path / "attachments"
    (att / "data").mkdir(parents=True)
    (att / "data" / "x.txt").write_text("x")
    (att / "y.txt").write_text("y")
    params: dict[str, Any] = {
        "a": {"class": "File", "path": "data/x.txt"},
        "b": {"class": "File", "location": "file:///home/client/y.txt"},  # wes-client: attached as y.txt
    }
    refusals = Refusals()
    map_input_references(params, att, refusals)
    assert not refusals
    assert params["a"] == {"class": "File", "location": (att / "data" / "x.txt").as_uri()}
    assert params["b"]["location"] == (att / "y.txt").as_uri()
    map_input_references({"c": {"class": "File", "location": "/etc/passwd"}}, att, refusals)
    assert refusals and "/etc/passwd" in refusals.message()


# --------------------------------------------------------------------------- the loader
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "file-uri"])
def test_include_outside_the_run_is_refused_by_the_loader(tmp_path: Path, secret: tuple[Path, str], kind: str) -> None:
    path, marker = secret
    root = tmp_path / "run" / "attachments"
    root.mkdir(parents=True)
    ref = {"absolute": str(path), "dotdot": "../../secret.txt", "file-uri": path.as_uri()}[kind]
    (root / "t.cwl").write_text(TOOL.format(ref=ref))
    with pytest.raises(BadRequest) as info:
        load_restricted(root / "t.cwl", root, Refusals())
    assert str(path) in info.value.message and marker not in info.value.message
    with pytest.raises(BadRequest):
        check_workflow_documents([("t.cwl", (root / "t.cwl").read_bytes())], "t.cwl", SETTINGS)


def test_include_inside_the_run_loads(tmp_path: Path) -> None:
    root = tmp_path / "attachments"
    (root / "parts").mkdir(parents=True)
    (root / "parts" / "word.txt").write_text("hello")
    (root / "t.cwl").write_text(TOOL.format(ref="parts/word.txt"))
    tool = load_restricted(root / "t.cwl", root, Refusals())
    assert tool.tool["arguments"] == ["hello"]


def test_file_defaults_outside_the_run_are_refused(tmp_path: Path, secret: tuple[Path, str]) -> None:
    path, _ = secret
    root = tmp_path / "attachments"
    root.mkdir()
    doc = (
        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: [cat]\n"
        f"inputs:\n  f: {{type: File, loadContents: true, default: {{class: File, location: {path}}}}}\noutputs: []\n"
    )
    with pytest.raises(BadRequest) as info:
        check_workflow_documents([("t.cwl", doc.encode())], "t.cwl", SETTINGS)
    assert str(path) in info.value.message


# --------------------------------------------------------------------------- the engine's file system
def test_engine_file_system_is_the_run_and_reads_only_verified_files(tmp_path: Path, secret: tuple[Path, str]) -> None:
    path, marker = secret
    run = tmp_path / "run"
    run.mkdir()
    good = run / "good.txt"
    good.write_text("good")
    known = {str(good): hashlib.sha256(b"good").hexdigest()}
    unverified = run / "unverified.txt"
    unverified.write_text("?")
    (run / "link.txt").symlink_to(path)
    refusals = Refusals()
    fs = RunFsAccess(str(run), roots=(run,), checksum_of=lambda p: known.get(os.path.realpath(p)), refusals=refusals)
    with fs.open(good.as_uri(), "rb") as fh:
        assert fh.read() == b"good"
    for ref in (str(path), path.as_uri(), "../secret.txt", "link.txt", str(unverified)):
        with pytest.raises(WorkflowException) as info:
            fs.open(ref, "rb")
        assert marker not in str(info.value)
    for call in (fs.exists, fs.isfile, fs.size, fs.listdir):
        with pytest.raises(WorkflowException):
            call(str(tmp_path))
    with pytest.raises(WorkflowException):
        fs.glob(str(tmp_path) + "/*")
    good.write_text("evil")  # changed after it was recorded
    with pytest.raises(WorkflowException) as info:
        fs.open(str(good), "rb")
    assert "changed" in str(info.value)
    assert refusals


# --------------------------------------------------------------------------- expressions
ESCAPE = '(function(){var p = globalThis.constructor.constructor("return process")(); %s})()'


@pytest.fixture(scope="module")
def engine() -> jsbox.SandboxedNodeEngine:
    return jsbox.SandboxedNodeEngine(time_limit=3, heap_mib=96)


def test_expression_escape_reaches_no_host_file_env_or_process(
    engine: jsbox.SandboxedNodeEngine, secret: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = secret
    monkeypatch.setenv("HG_UNIT_ENV_SECRET", marker)
    assert (
        engine.eval(ESCAPE % "return typeof p.getBuiltinModule('fs').readFileSync;") == "function"
    )  # the escape works
    env = engine.eval(ESCAPE % "return p.env;")
    assert isinstance(env, dict) and marker not in str(env) and set(env) <= {"PWD"}
    for body in (
        f"return p.getBuiltinModule('fs').readFileSync({str(path)!r}, 'utf8');",
        "return p.getBuiltinModule('fs').readFileSync('/etc/passwd', 'utf8');",
        "return p.getBuiltinModule('child_process')"
        ".execFileSync('/usr/bin/node', ['-e', 'console.log(1)']).toString();",
    ):
        with pytest.raises(Exception) as info:
            engine.eval(ESCAPE % body)
        assert marker not in str(info.value) and "root:x:0" not in str(info.value)
    listing = engine.eval(ESCAPE % "return p.getBuiltinModule('fs').readdirSync('/');")
    assert isinstance(listing, list) and "etc" not in listing and "home" not in listing and "root" not in listing
    assert engine.eval(ESCAPE % "return p.getuid();") == jsbox.NOBODY


def test_runaway_expressions_are_stopped_with_a_clear_error(engine: jsbox.SandboxedNodeEngine) -> None:
    with pytest.raises(Exception) as info:
        engine.eval("(function(){ while (true) {} })()")
    assert "time limit" in str(info.value)
    with pytest.raises(Exception) as info:
        engine.eval("(function(){ var a = []; while (true) { a.push(new Array(1e6).fill(1)); } })()")
    assert "memory limit" in str(info.value)
    assert engine.eval("1 + 1") == 2  # a fresh sandbox serves the next expression


def test_worker_start_fails_clearly_without_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsbox, "_installed", None)
    monkeypatch.setattr(jsbox.shutil, "which", lambda name: None if name == "bwrap" else "/usr/bin/" + name)
    with pytest.raises(ConfigurationError) as info:
        jsbox.install(SETTINGS)
    assert "bwrap" in info.value.message
