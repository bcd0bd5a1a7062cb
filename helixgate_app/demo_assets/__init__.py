"""The demo's three-step CWL workflow (also used by the end-to-end tests)."""

from __future__ import annotations

from importlib import resources

FILES = ("workflow.cwl", "upper.cwl", "sort.cwl", "count.cwl")


def workflow_files(image: str) -> dict[str, str]:
    """The workflow and its tools with ``image`` as every step's DockerRequirement."""
    root = resources.files(__name__)
    return {name: root.joinpath(name).read_text().replace("@IMAGE@", image) for name in FILES}
