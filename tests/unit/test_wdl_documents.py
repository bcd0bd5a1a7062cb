"""helixgate.wdl_documents: the restricted WDL loader and the input check (hostile imports and
File inputs refused with a message naming the problem; real miniwdl, no mocks)."""

from __future__ import annotations

import asyncio

import pytest

from helixgate.errors import BadRequest
from helixgate.wdl_documents import (
    WdlDocumentError,
    check_inputs,
    import_name,
    load_wdl,
    target_of,
    task_images,
    wdl_imports,
    wdl_version,
)

IMAGE = "127.0.0.1:5000/helixgate-test/busybox@sha256:" + "a" * 64

MAIN = b"""version 1.0
import "lib/tasks.wdl" as t

struct Sample {
  String id
  File reads
}

workflow wf {
  input {
    Array[File] xs
    String greeting = "hi"
    File? extra
    Sample? sample
    Map[String, File]? named
  }
  scatter (x in xs) {
    call t.count { input: f = x }
  }
  output { Array[Int] n = count.n }
}
"""

LIB = (
    b"""version 1.0
import "util.wdl" as u
task count {
  input { File f }
  command <<< wc -l < ~{f} >>>
  runtime { docker: \""""
    + IMAGE.encode()
    + b"""\" }
  output { Int n = read_int(stdout()) }
}
"""
)

UTIL = b"""version 1.0
task noop {
  command <<< true >>>
}
"""


def files(**extra: bytes) -> dict[str, bytes]:
    out = {"main.wdl": MAIN, "lib/tasks.wdl": LIB, "lib/util.wdl": UTIL}
    out.update(extra)
    return out


def single(source: str, **more: bytes) -> dict[str, bytes]:
    return {"main.wdl": source.encode(), **more}


def refusal(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(WdlDocumentError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, BadRequest) and info.value.status == 400
    return info.value.message


# --- loading ---------------------------------------------------------------------------------


def test_loads_a_document_and_its_imports_relative_to_the_importer() -> None:
    doc = load_wdl(files(), "main.wdl")
    assert wdl_version(doc) == "1.0"
    assert doc.workflow is not None and doc.workflow.name == "wf"
    # lib/tasks.wdl imports "util.wdl": resolved beside the importer, as lib/util.wdl
    assert [imp.doc.pos.abspath.rsplit("/", 2)[-2:] for imp in doc.imports[0].doc.imports] == [["lib", "util.wdl"]]


def test_wdl_1_1_loads_and_reports_its_version() -> None:
    doc = load_wdl(single('version 1.1\nworkflow w { output { Int x = 1 } }'), "main.wdl")
    assert wdl_version(doc) == "1.1"


def test_load_inside_a_running_event_loop() -> None:
    async def inside() -> str:
        return wdl_version(load_wdl(files(), "main.wdl"))

    assert asyncio.run(inside()) == "1.0"


def test_documents_claim_a_virtual_root_never_a_host_directory() -> None:
    doc = load_wdl(files(), "main.wdl", root="/run/abc")
    assert doc.pos.abspath == "/run/abc/main.wdl"
    assert doc.imports[0].doc.pos.abspath == "/run/abc/lib/tasks.wdl"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/etc/passwd", "absolute path"),
        ("/etc/hosts.wdl", "absolute path"),
        ("~/x.wdl", "absolute path"),
        ("file:///etc/x.wdl", "is a URL"),
        ("https://example.org/x.wdl", "is a URL"),
        ("http://127.0.0.1:5000/x.wdl", "is a URL"),
        ("s3://bucket/x.wdl", "is a URL"),
        ("drs://host/abc", "is a URL"),
        ("../x.wdl", "'..' is not allowed"),
        ("sub/../../x.wdl", "'..' is not allowed"),
        ("lib//tasks.wdl", "empty or '.' segment"),
        ("lib\\\\tasks.wdl", "backslash"),
        ("other.wdl", "not among the workflow's files"),
        ("tasks.wdl", "not among the workflow's files"),
    ],
)
def test_hostile_imports_are_refused_with_the_reason(uri: str, expected: str) -> None:
    src = f'version 1.0\nimport "{uri}" as x\nworkflow w {{}}\n'
    message = refusal(load_wdl, single(src, **{"lib/tasks.wdl": LIB, "lib/util.wdl": UTIL}), "main.wdl")
    assert expected in message
    assert "main.wdl" in message


def test_a_host_file_that_exists_is_still_not_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    host = tmp_path / "secret.wdl"
    host.write_text("version 1.0\ntask leak { command <<< true >>> }\n")
    message = refusal(load_wdl, single(f'version 1.0\nimport "{host}" as s\nworkflow w {{}}\n'), "main.wdl")
    assert "absolute path" in message
    # relative to the process's working directory is not a fallback either
    message = refusal(load_wdl, single('version 1.0\nimport "setup.cfg" as s\nworkflow w {}\n'), "main.wdl")
    assert "not among the workflow's files" in message


def test_nested_import_refusal_names_the_importing_file() -> None:
    lib = b'version 1.0\nimport "../../etc/x.wdl" as e\ntask t { command <<< true >>> }\n'
    message = refusal(load_wdl, files(**{"lib/tasks.wdl": lib}), "main.wdl")
    assert "imported by lib/tasks.wdl" in message and "'..'" in message


def test_the_main_file_must_be_among_the_files_and_relative() -> None:
    assert "not among" in refusal(load_wdl, files(), "missing.wdl")
    assert "absolute path" in refusal(load_wdl, {"/etc/x.wdl": MAIN}, "/etc/x.wdl")


def test_circular_imports_are_refused_not_looped() -> None:
    message = refusal(
        load_wdl,
        {"main.wdl": b'version 1.0\nimport "a.wdl"\nworkflow w {}', "a.wdl": b'version 1.0\nimport "main.wdl"\n'},
        "main.wdl",
    )
    assert "import" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("workflow w {}", "declares version 'draft-2'"),
        ("version development\nworkflow w {}", "declares version 'development'"),
        ("version 1.2\nworkflow w {}", "declares version '1.2'"),
    ],
)
def test_unsupported_versions_are_refused(source: str, expected: str) -> None:
    message = refusal(load_wdl, single(source), "main.wdl")
    assert expected in message and "1.0, 1.1" in message


def test_an_import_of_another_version_is_refused() -> None:
    message = refusal(
        load_wdl,
        {"main.wdl": b'version 1.0\nimport "old.wdl" as o\nworkflow w {}', "old.wdl": b"task t { command { true } }\n"},
        "main.wdl",
    )
    assert "old.wdl" in message and "draft-2" in message


def test_syntax_and_type_errors_name_file_line_and_column() -> None:
    message = refusal(load_wdl, single("version 1.0\nworkflow w {\n  Int x = 1 +\n}\n"), "main.wdl")
    assert "main.wdl:" in message
    message = refusal(load_wdl, single('version 1.0\nworkflow w {\n  Int x = y\n}\n'), "main.wdl")
    assert "main.wdl:3:" in message and "y" in message
    message = refusal(load_wdl, {"main.wdl": b"version 1.0\n\xff\xfe"}, "main.wdl")
    assert "not UTF-8" in message


def test_import_name_rule() -> None:
    assert import_name("x.wdl", "a/b/main.wdl") == "a/b/x.wdl"
    assert import_name("./x.wdl", None) == "x.wdl"
    for bad in ("", "  ", "/x", "a/../x", "ftp://h/x", "C:\\x.wdl", "a\x00b"):
        with pytest.raises(WdlDocumentError):
            import_name(bad, "main.wdl")


def test_wdl_imports_parses_without_loading() -> None:
    assert wdl_imports(MAIN, "main.wdl") == ["lib/tasks.wdl"]
    assert wdl_imports(LIB, "lib/tasks.wdl") == ["lib/util.wdl"]
    assert "absolute path" in refusal(wdl_imports, b'version 1.0\nimport "/etc/x.wdl"\n', "main.wdl")
    assert "invalid WDL" in refusal(wdl_imports, b"version 1.0\nworkflow {", "main.wdl")


def test_task_images_reads_runtime_docker_and_container() -> None:
    doc = load_wdl(files(), "main.wdl")
    images = {t.task: t for t in task_images(doc)}
    assert images["count"].image == IMAGE and images["count"].key == "docker" and images["count"].literal
    assert images["noop"].image is None and images["noop"].key is None
    doc = load_wdl(
        single(
            'version 1.1\ntask a { input { String img } command <<< true >>> runtime { container: img } }\n'
            'task b { command <<< true >>> runtime { container: ["' + IMAGE + '"] } }\n'
        ),
        "main.wdl",
    )
    images = {t.task: t for t in task_images(doc)}
    assert images["a"].key == "container" and not images["a"].literal and images["a"].image is None
    assert images["b"].image == IMAGE and images["b"].literal


# --- inputs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def doc():  # type: ignore[no-untyped-def]
    return load_wdl(files(), "main.wdl")


def test_valid_inputs_pass_with_or_without_the_workflow_prefix(doc) -> None:  # type: ignore[no-untyped-def]
    check_inputs(doc, {"wf.xs": ["drs://drs.example.org/abc", "data/reads.txt"]}, attachments={"data/reads.txt"})
    check_inputs(
        doc,
        {
            "xs": [],
            "greeting": "hello",
            "sample": {"id": "s1", "reads": "drs://drs.example.org/r1"},
            "named": {"a": "./data/reads.txt"},
            "#comment": "ignored",
        },
        attachments={"data/reads.txt"},
    )


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({}, "missing required inputs"),
        ({"xs": [], "ys": 1}, "'ys' is not an input of wf"),
        ({"xs": [], "wf.count.f": "drs://h/x"}, "is not an input of wf"),
        ({"xs": "drs://h/x"}, "couldn't construct 'Array[File]'"),
        ({"xs": [1]}, "couldn't construct 'File' from 1"),
        ({"xs": [], "greeting": 3}, "couldn't construct 'String?' from 3 (in greeting)"),
        ({"xs": [], "count.runtime.docker": "evil:latest"}, "runtime settings cannot be set"),
        ({"xs": [], "_runtime": {}}, "runtime settings cannot be set"),
    ],
)
def test_wrong_inputs_are_refused_naming_the_input(doc, inputs, expected) -> None:  # type: ignore[no-untyped-def]
    assert expected in refusal(check_inputs, doc, inputs)


@pytest.mark.parametrize(
    "value",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "../secret.txt",
        "data/other.txt",
        "https://example.org/x.txt",
        "s3://bucket/key",
        " drs://h/x",
    ],
)
def test_file_inputs_naming_anything_but_drs_or_attachments_are_refused(doc, value: str) -> None:  # type: ignore[no-untyped-def]
    for inputs in (
        {"xs": [value]},
        {"xs": [], "extra": value},
        {"xs": [], "sample": {"id": "s", "reads": value}},
        {"xs": [], "named": {"k": value}},
    ):
        message = refusal(check_inputs, doc, inputs, attachments={"data/reads.txt"})
        assert "must be a drs:// object or one of the run's attached files" in message or "whitespace" in message


def test_host_path_refusal_says_host_paths_are_never_read(doc) -> None:  # type: ignore[no-untyped-def]
    assert "host paths are never read" in refusal(check_inputs, doc, {"xs": ["/etc/passwd"]})


def test_a_file_default_naming_a_host_path_is_refused() -> None:
    hostile = load_wdl(single('version 1.0\nworkflow w { input { File f = "/etc/shadow" } }\n'), "main.wdl")
    assert "(its default)" in refusal(check_inputs, hostile, {})
    check_inputs(hostile, {"f": "drs://h/x"})  # an explicit value replaces the default


def test_directory_is_not_a_type_of_the_supported_versions() -> None:
    # WDL 1.0/1.1 have no Directory: such a document is refused at load, so no Directory input
    # ever reaches check_inputs (which would still accept only drs:// for one)
    message = refusal(load_wdl, single("version 1.1\nworkflow w { input { Directory d } }\n"), "main.wdl")
    assert "main.wdl:2:" in message and "Directory" in message


def test_a_document_with_only_one_task_targets_that_task() -> None:
    d = load_wdl(single("version 1.0\ntask only { input { File f } command <<< cat ~{f} >>> }\n"), "main.wdl")
    assert target_of(d).name == "only"
    check_inputs(d, {"only.f": "drs://h/x"})
    assert "runtime settings" in refusal(check_inputs, d, {"f": "drs://h/x", "only.runtime.docker": "x"})
    two_tasks = "version 1.0\ntask a { command <<< true >>> }\ntask b { command <<< true >>> }\n"
    two = load_wdl(single(two_tasks), "main.wdl")
    assert "has no workflow" in refusal(check_inputs, two, {})


def test_replace_files_follows_the_declared_types(doc) -> None:  # type: ignore[no-untyped-def]
    from helixgate.wdl_documents import replace_files

    seen: list[tuple[str, str]] = []

    def to_drs(name: str, value: str) -> str:
        seen.append((name, value))
        return "drs://h/" + value.replace("/", "_")

    out = replace_files(
        doc,
        {
            "wf.xs": ["a.txt", "b/c.txt"],
            "greeting": "not/a/file.txt",
            "sample": {"id": "s.txt", "reads": "r.fq"},
            "named": {"k": "m.txt"},
            "unknown": "u.txt",
        },
        to_drs,
    )
    assert out == {
        "wf.xs": ["drs://h/a.txt", "drs://h/b_c.txt"],
        "greeting": "not/a/file.txt",
        "sample": {"id": "s.txt", "reads": "drs://h/r.fq"},
        "named": {"k": "drs://h/m.txt"},
        "unknown": "u.txt",
    }
    assert seen == [("wf.xs[0]", "a.txt"), ("wf.xs[1]", "b/c.txt"), ("sample.reads", "r.fq"), ("named[k]", "m.txt")]


def test_declared_version_parses_without_imports() -> None:
    from helixgate.wdl_documents import declared_version

    assert declared_version(MAIN, "main.wdl") == "1.0"
    assert declared_version(b"version 1.1\nworkflow w {}\n", "x.wdl") == "1.1"
    assert declared_version(b"workflow w {}\n", "x.wdl") == "draft-2"
    assert "not UTF-8" in refusal(declared_version, b"\xff", "x.wdl")


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01",
        b"version 1.0\ntask t { command <<< " + b"~{" * 3000 + b" >>> }",
        b"version 1.0\nworkflow w { Int x = " + b"(" * 5000 + b"1" + b")" * 5000 + b" + }",
        b"version 1.0\nimport",
        b"",
    ],
)
def test_garbage_is_a_document_error_never_another_exception(content: bytes) -> None:
    assert refusal(load_wdl, {"main.wdl": content}, "main.wdl")
