"""The README's troubleshooting table is the one generated from the API's documented
condition types and reasons, and every entry of that vocabulary is documented."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from mlcycle.api.troubleshooting import (
    BEGIN,
    END,
    VOCABULARIES,
    render_table,
    vocabulary,
    with_table,
    write_readme,
)
from mlcycle.api.v1alpha1 import ConditionType, Reason
from mlcycle.api.v1alpha1.conditions import Documented

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_matches_the_api() -> None:
    readme = README.read_text()
    assert with_table(readme) == readme, (
        "README.md's troubleshooting table is stale: run `make docs`"
    )


def test_the_table_is_replaced_between_its_markers_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\n| an old row |\n{END}\n\nafter\n")
    assert write_readme(readme)
    assert readme.read_text() == f"# title\n\n{render_table()}\n\nafter\n"
    assert not write_readme(readme)


def test_a_readme_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        with_table("# no table here\n")


def _every_word() -> list[tuple[str, Documented]]:
    return [(kind, word) for kind, module in VOCABULARIES for word in vocabulary(module)]


@pytest.mark.parametrize(("kind", "word"), _every_word(), ids=lambda value: str(value))
def test_every_entry_has_a_one_line_doc(kind: str, word: Documented) -> None:
    assert word.doc.strip() == word.doc, f"{kind} {word}"
    assert word.doc.endswith("."), f"{kind} {word}"
    assert "\n" not in word.doc
    # Kubernetes' own rule for reasons and condition types (metav1.Condition).
    assert word.isidentifier()
    assert word[0].isupper()


def test_each_word_is_defined_once_per_role() -> None:
    words = [(type(word), str(word)) for _, word in _every_word()]
    assert len(words) == len(set(words))


def test_the_table_lists_condition_types_before_reasons_per_kind() -> None:
    for _, module in VOCABULARIES:
        roles = [isinstance(word, ConditionType) for word in vocabulary(module)]
        assert roles == sorted(roles, reverse=True)


def test_words_are_plain_strings_that_keep_their_doc() -> None:
    word = Reason("OOMKilled", "A container ran out of memory.")
    assert word == "OOMKilled"
    assert {str(word): 1}[word] == 1
    for same in (copy.copy(word), copy.deepcopy(word), pickle.loads(pickle.dumps(word))):
        assert type(same) is Reason
        assert same == word
        assert same.doc == word.doc
