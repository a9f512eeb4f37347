"""The README's troubleshooting table, generated from the documented condition types and
reasons of `mlcycle.api.v1alpha1`.

`mlcycle docs --readme README.md` rewrites the table between its two markers; a unit test
regenerates it in memory and fails when README.md is stale, as it does for `crds/`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Final

from mlcycle.api.v1alpha1 import conditions, inferenceservice, modelversion, trainingjob
from mlcycle.api.v1alpha1.conditions import ConditionType, Documented

BEGIN: Final = (
    "<!-- BEGIN generated troubleshooting table (mlcycle.api.troubleshooting; `make docs`)"
    " - do not edit -->"
)
END: Final = "<!-- END generated troubleshooting table -->"

VOCABULARIES: Final[tuple[tuple[str, ModuleType], ...]] = (
    ("shared", conditions),
    ("TrainingJob", trainingjob),
    ("ModelVersion", modelversion),
    ("InferenceService", inferenceservice),
)
"""Where the entries are defined, and the kind column they get, in the table's order."""


def vocabulary(module: ModuleType) -> list[Documented]:
    """The condition types, then the reasons, a module defines, each in definition order."""
    words = [value for value in vars(module).values() if isinstance(value, Documented)]
    return sorted(words, key=lambda word: not isinstance(word, ConditionType))


def _row(kind: str, word: Documented) -> str:
    role = "condition" if isinstance(word, ConditionType) else "reason"
    doc = word.doc.replace("|", "\\|")
    return f"| {kind} | `{word}` ({role}) | {doc} |"


def render_table() -> str:
    """The table in Markdown, between (and including) its markers."""
    lines = [
        BEGIN,
        "| kind | condition type or reason | what it means, what to do |",
        "|---|---|---|",
    ]
    for kind, module in VOCABULARIES:
        lines.extend(_row(kind, word) for word in vocabulary(module))
    lines.append(END)
    return "\n".join(lines)


def with_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by the current table."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no troubleshooting table markers ({BEGIN!r} … {END!r})")
    return readme[:start] + render_table() + readme[end + len(END) :]


def write_readme(path: Path) -> bool:
    """Rewrite the table in the README at `path`; whether anything changed."""
    current = path.read_text()
    updated = with_table(current)
    if updated != current:
        path.write_text(updated)
    return updated != current
