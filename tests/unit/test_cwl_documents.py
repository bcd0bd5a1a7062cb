"""The CLI finds a workflow's documents in the parsed YAML, not with a pattern over its text."""

from __future__ import annotations

import pytest

from helixgate.cwl_documents import document_references
from helixgate.errors import BadRequest

WORKFLOW = b"""
cwlVersion: v1.2
class: Workflow
# run: commented-out.cwl is not a reference
doc: "a string that says run: not-a-file.cwl"
requirements:
  SchemaDefRequirement:
    types:
      - $import: types/records.yml
inputs: {}
outputs: {}
steps:
  upper:
    run: tools/upper.cwl
    in: {}
    out: []
  "sort": {run: 'sort.cwl#main', in: {}, out: []}
  inline:
    run:
      class: CommandLineTool
      baseCommand: [echo]
      arguments:
        - {$include: scripts/args.txt}
      inputs: []
      outputs: []
    in: {}
    out: []
  remote:
    run: https://example.org/tool.cwl
    in: {}
    out: []
  packed:
    run: "#other"
    in: {}
    out: []
  again:
    run: tools/upper.cwl
    in: {}
    out: []
"""


def test_references_come_from_the_document_structure() -> None:
    assert sorted(document_references(WORKFLOW, "wf.cwl")) == sorted(
        ["types/records.yml", "tools/upper.cwl", "sort.cwl", "scripts/args.txt"]
    )


def test_json_documents_and_mixins() -> None:
    doc = b'{"class": "Workflow", "steps": [{"id": "a", "run": {"$mixin": "base.cwl", "id": "x"}}]}'
    assert document_references(doc, "wf.json") == ["base.cwl"]


def test_a_document_that_is_not_yaml_is_refused_by_name() -> None:
    with pytest.raises(BadRequest, match="wf.cwl is not a CWL document"):
        document_references(b"steps: [unclosed", "wf.cwl")
