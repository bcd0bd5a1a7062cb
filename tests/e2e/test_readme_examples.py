"""The README's command examples, run as written against a live server.

Every ``helixgate`` line of the README's ``sh`` blocks runs in order, each block as the user of
its role; the substitutions are the ones the README documents ("These examples are tested")
and nothing else. A command that does not exit 0 fails the test with its output."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import boto3
import pytest
import requests

from tests.fixtures.docker_images import PushedImage
from tests.fixtures.live import HELIXGATE, ROOT, LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = ROOT / "README.md"
README_IMAGE = "127.0.0.1:5000/tools/bwa:0.7.17"
ROLE = re.compile(r"\(role `([a-z-]+)`\)")
USERS = {"tool-developer": "dev", "data-steward": "steward", "analyst": "alice"}


@dataclass
class Example:
    role: str | None  # None: the first block (the administrator's local commands)
    line: str  # the command as the README writes it (continuations joined, comment dropped)


def readme_examples(text: str) -> list[Example]:
    """Every ``helixgate`` command of the ``sh`` blocks (``a ; b`` split, ``export V=$(...)`` kept)."""
    out: list[Example] = []
    role: str | None = None
    in_block = False
    pending = ""
    for raw in text.splitlines():
        if raw.startswith("```"):
            in_block = raw.strip() == "```sh"
            continue
        if not in_block:
            found = ROLE.search(raw)
            if found:
                role = found.group(1)
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        line = re.sub(r"\s+#.*$", "", line)
        for part in (p.strip() for p in line.split(" ; ")):
            if part.startswith("helixgate ") or part.startswith("export "):
                out.append(Example(role, part))
    return out


@dataclass
class State:
    server: LiveServer
    work: Path
    image: str
    s3_uri: str
    tokens: dict[str, str] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)

    def substitute(self, line: str) -> str:
        host = self.server.url.split("://", 1)[1]
        line = re.sub(r"\[([^\[\]]*)\]", r"\1", line)  # optional parts run too
        line = line.replace("drs://host/", f"drs://{host}/").replace("trs://host/", f"trs://{host}/")
        line = line.replace("s3://bucket/key", self.s3_uri).replace(README_IMAGE, self.image)
        line = re.sub(r"--name N\b", "--name reads.fastq.gz", line)
        line = re.sub(r"--sha256 HEX\b", f"--sha256 {hashlib.sha256(self.reads).hexdigest()}", line)
        line = re.sub(r"--download DIR\b", f"--download {self.work / 'downloaded'}", line)
        line = re.sub(r"-o FILE\b", f"-o {self.work / 'verified.bin'}", line)
        for name in ("dataset", "object", "run", "task"):
            if f"<{name}>" in line:
                assert name in self.found, f"{line}: no {name} created by the commands before"
                line = line.replace(f"<{name}>", self.found[name])
        assert not re.search(r"<[a-z]+>", line), f"unknown placeholder in {line}"
        return line

    @property
    def reads(self) -> bytes:
        return (self.work / "reads.fastq.gz").read_bytes()


def _workflow(image: str) -> dict[str, str]:
    return {
        "workflow.cwl": """cwlVersion: v1.2
class: Workflow
inputs:
  reads: File
outputs:
  counts: {type: File, outputSource: align/out}
steps:
  align: {run: align.cwl, in: {reads: reads}, out: [out]}
""",
        "align.cwl": f"""cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
baseCommand: [wc, -l]
inputs:
  reads: {{type: File, inputBinding: {{position: 1}}}}
outputs:
  out: {{type: stdout}}
stdout: counts.txt
""",
    }


def readme_wdl(text: str) -> list[str]:
    """The README's ``wdl`` blocks, in order (the WDL workflow and the task file it imports)."""
    return [m.group(1) for m in re.finditer(r"^```wdl\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def _wdl_workflow(image: str) -> dict[str, str]:
    workflow, align = readme_wdl(README.read_text())
    assert 'import "align.wdl"' in workflow and README_IMAGE in align
    return {"workflow.wdl": workflow, "align.wdl": align.replace(README_IMAGE, image)}


def _run(state: State, example: Example) -> None:
    line = state.substitute(example.line)
    env = {**state.server.env}
    if example.role is not None:
        env["HELIXGATE_TOKEN"] = state.tokens[example.role]
    elif "admin" in state.tokens:
        env["HELIXGATE_TOKEN"] = state.tokens["admin"]
    if "inputs.json" in line:
        host = state.server.url.split("://", 1)[1]
        doc = {"reads": {"class": "File", "location": f"drs://{host}/{state.found['object']}"}}
        (state.work / "inputs.json").write_text(json.dumps(doc))
    export = re.fullmatch(r"export ([A-Z_]+)=\$\((helixgate .*)\)", line)
    argv = shlex.split(export.group(2) if export else line)
    assert argv[0] == "helixgate", line
    r = subprocess.run([HELIXGATE, *argv[1:]], env=env, capture_output=True, text=True, timeout=600, cwd=state.work)
    assert r.returncode == 0, f"README example failed: {example.line}\n  ran: {line}\n{r.stdout}\n{r.stderr}"
    if export:
        assert export.group(1) == "HELIXGATE_TOKEN"
        state.tokens["admin"] = r.stdout.strip()
    _remember(state, argv, r.stdout + "\n" + r.stderr)


def _remember(state: State, argv: list[str], output: str) -> None:
    """Ids the later examples refer to, from what the command printed."""
    words = argv[1:3]
    if words == ["data", "dataset"]:
        state.found["dataset"] = re.search(r"created dataset (\S+)", output).group(1)  # type: ignore[union-attr]
    elif words == ["data", "upload"]:
        state.found["object"] = re.search(r"drs://[^/\s]+/(\S+)", output).group(1)  # type: ignore[union-attr]
    elif words == ["tool", "create"]:
        assert "created tool org-example.bwa " in output, output  # the README's comment: the tool id
    elif words == ["run", "submit"]:
        state.found["run"] = re.search(r"submitted run (\S+);", output).group(1)  # type: ignore[union-attr]
        tasks = requests.get(
            f"{state.server.url}/ga4gh/wes/v1/runs/{state.found['run']}/tasks",
            headers={"Authorization": f"Bearer {state.tokens['analyst']}"},
            timeout=30,
        ).json()["task_logs"]
        state.found["task"] = tasks[0]["id"]


def test_parser_reads_every_block() -> None:
    examples = readme_examples(README.read_text())
    lines = [e.line for e in examples]
    assert "helixgate token issue --user admin" in lines
    assert any(line.startswith("helixgate tool publish org-example.bwa 1.0.0 --image ") for line in lines)
    assert "helixgate run status <run>" in lines and "helixgate run wait <run> [--timeout 600]" in lines
    assert {e.role for e in examples} == {None, "tool-developer", "data-steward", "analyst"}
    assert any(line.startswith("helixgate run submit wf/workflow.wdl ") for line in lines)
    assert len(readme_wdl(README.read_text())) == 2


def test_readme_command_examples_run_as_written(
    live_server_factory: Callable[..., LiveServer], pushed_busybox: PushedImage, aws_env: str, tmp_path: Path
) -> None:
    bucket = f"hg-readme-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="incoming/sample.vcf", Body=b"##fileformat=VCFv4.2\n")
    server = live_server_factory(
        extra_env={
            "HELIXGATE_STORAGE_BACKEND": "s3",
            "HELIXGATE_S3_BUCKET": bucket,
            "HELIXGATE_S3_ENDPOINT_URL": aws_env,
        }
    )
    work = tmp_path / "work"
    (work / "wf").mkdir(parents=True)
    image = f"{pushed_busybox.repository}:{pushed_busybox.tag}"
    for name, content in {**_workflow(image), **_wdl_workflow(image)}.items():
        (work / "wf" / name).write_text(content)
    (work / "reads.fastq.gz").write_bytes(b"@r1\nACGT\n+\nIIII\n@r2\nTTGA\n+\nIIII\n")
    state = State(server, work, image, f"s3://{bucket}/incoming/sample.vcf")
    examples = [e for e in readme_examples(README.read_text()) if not e.line.startswith("helixgate serve")]
    for example in examples:
        if example.role is not None and example.role not in state.tokens:
            user = USERS[example.role]
            if example.role == "analyst":  # registered by the README's own `users add alice`
                state.tokens[example.role] = server.cli("token", "issue", "--user", user, check=True).stdout.strip()
            else:
                state.tokens[example.role] = server.user(user, example.role)
        _run(state, example)
    assert {"dataset", "object", "run", "task"} <= state.found.keys()
    assert len(examples) >= 20  # every block was read (the parser test checks which)
    assert (work / "verified.bin").read_bytes() == state.reads
    # the last run is the WDL one from TRS: its one output counts the 8 lines (CWL names it counts.txt)
    downloaded = [p for p in (work / "downloaded").rglob("*") if p.is_file()]
    assert len(downloaded) == 1 and downloaded[0].read_text().split()[0] == "8"
