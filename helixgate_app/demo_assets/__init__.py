"""The demo's three-step workflow, in CWL and in WDL (also used by the end-to-end tests)."""

from __future__ import annotations

from importlib import resources

FILES = ("workflow.cwl", "upper.cwl", "sort.cwl", "count.cwl")
WDL_FILES = ("workflow.wdl", "tasks.wdl")
LANGUAGES = ("cwl", "wdl")
PRIMARY = {"cwl": "workflow.cwl", "wdl": "workflow.wdl"}
WORKFLOW_TYPE = {"cwl": "CWL", "wdl": "WDL"}
WORKFLOW_TYPE_VERSION = {"cwl": "v1.2", "wdl": "1.0"}


def workflow_files(image: str, language: str = "cwl") -> dict[str, str]:
    """The workflow and its tools in ``language`` (cwl or wdl) with ``image`` as every step's
    container image (CWL DockerRequirement, WDL runtime.docker)."""
    names = {"cwl": FILES, "wdl": WDL_FILES}[language]
    root = resources.files(__name__)
    return {name: root.joinpath(name).read_text().replace("@IMAGE@", image) for name in names}


def workflow_inputs(text_uri: str, language: str = "cwl") -> dict[str, object]:
    """The workflow's one input, the text file ``text_uri`` (drs://), as each language spells it."""
    if language == "wdl":
        return {"textkit.text": text_uri}
    return {"text": {"class": "File", "location": text_uri}}
