"""The docs site (mkdocs.yml over docs/): the generated configuration reference is
current, `help(copycat.Config)` shows every field's docstring, docs/errors.md covers
every exception in its place in the tree, and the README runs the CI's command."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import pydoc
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import copycat
import copycat.errors
from copycat import _config

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FIELD_NAMES = [f.name for f in dataclasses.fields(copycat.Config)]
STEP = " \u203a "  # between a class and its parent on docs/errors.md


def load_generator() -> ModuleType:
    """tools/gen_config_docs.py, imported from its path (tools/ is not a package)."""
    path = ROOT / "tools" / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def first_sentence(text: str) -> str:
    """The docstring's first sentence, with its line breaks as single spaces."""
    flat = " ".join(text.split())
    return re.split(r"(?<=[.:;])\s", flat, maxsplit=1)[0]


# -- the configuration reference ------------------------------------------------------------


def test_config_reference_is_up_to_date() -> None:
    expected = load_generator().render()
    current = (DOCS / "config.md").read_text(encoding="utf-8")
    diff = "".join(
        list(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "docs/config.md",
                "generated",
            )
        )[:40]
    )
    assert current == expected, (
        "docs/config.md is out of date with copycat.Config: run "
        f"`python tools/gen_config_docs.py`\n{diff}"
    )


def test_config_reference_has_a_section_per_field() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for name in FIELD_NAMES:
        assert f"\n### `{name}`\n" in text, f"{name} has no section in docs/config.md"
        assert f"`COPYCAT_{name.upper()}`" in text


def test_config_reference_names_the_flag_of_every_flagged_field() -> None:
    from copycat.cli._node_cmd import _FLAG_FIELDS

    docs = {d.name: d for d in load_generator().field_docs()}
    for dest, name in _FLAG_FIELDS.items():
        assert dest.replace("_", "-") in docs[name].flag, f"{name}: flag --{dest} missing"


# -- help(copycat.Config) -----------------------------------------------------------------


def test_help_shows_every_fields_doc() -> None:
    rendered = pydoc.render_doc(copycat.Config, renderer=pydoc.plaintext)
    # pydoc indents a class's docstring behind " |  "; compare the words alone.
    flat = " ".join(re.sub(r"^\s*\|", "", line) for line in rendered.splitlines())
    flat = " ".join(flat.split())
    docs = {d.name: d.doc for d in load_generator().field_docs()}
    for name in FIELD_NAMES:
        assert docs[name], f"{name} has no docstring"
        sentence = first_sentence(docs[name])
        assert f"{name}: " in flat, f"help(Config) does not name {name}"
        assert sentence in flat, f"help(Config) lacks the doc of {name}: {sentence!r}"


def test_help_keeps_the_class_docstring_first_and_shows_defaults() -> None:
    doc = copycat.Config.__doc__ or ""
    assert doc.startswith("Settings of one CopyCat node.")
    fields_at = doc.index("\nFields\n------\n")
    assert "Config.from_env()" in doc[:fields_at]
    assert "\nhostname: str = '127.0.0.1'\n" in doc
    assert "\nnode_id: int | None = None\n" in doc


def test_without_the_source_the_docstring_stays_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inspect

    def unavailable(obj: object) -> str:
        raise OSError("could not get source code")

    monkeypatch.setattr(inspect, "getsource", unavailable)

    @dataclasses.dataclass
    class Plain:
        """Only this."""

    assert _config._with_field_docs(Plain) == "Only this."  # type: ignore[arg-type]


# -- docs/errors.md -----------------------------------------------------------------------


def errors_page() -> str:
    return (DOCS / "errors.md").read_text(encoding="utf-8")


def error_classes() -> dict[str, type[BaseException]]:
    return {name: getattr(copycat.errors, name) for name in copycat.errors.__all__}


def lineage(cls: type[BaseException]) -> str:
    """The class's place on docs/errors.md: its CopyCat ancestors from the base down,
    then its other bases, as in `CopyCatError` > `ConfChangeError` (also `ValueError`)."""
    chain = [cls]
    while chain[-1] is not copycat.errors.CopyCatError:
        chain.append(
            next(b for b in chain[-1].__bases__ if issubclass(b, copycat.errors.CopyCatError))
        )
    text = STEP.join(f"`{c.__name__}`" for c in reversed(chain))
    others = [
        b.__name__
        for b in cls.__bases__
        if not issubclass(b, copycat.errors.CopyCatError) and b is not Exception
    ]
    return text + (f" (also {', '.join(f'`{o}`' for o in others)})" if others else "")


def test_errors_page_has_a_heading_for_every_exception() -> None:
    headings = set(re.findall(r"^#+ `(\w+)`$", errors_page(), re.M))
    missing = set(copycat.errors.__all__) - headings
    assert not missing, f"docs/errors.md lacks a heading for {sorted(missing)}"
    assert headings <= set(copycat.errors.__all__), "docs/errors.md names unknown classes"


@pytest.mark.parametrize("name", copycat.errors.__all__)
def test_errors_page_places_each_exception_in_the_tree(name: str) -> None:
    page = errors_page()
    after = page.split(f"\n### `{name}`\n", 1)[1].lstrip("\n")
    first_line = after.split("\n", 1)[0]
    expected = lineage(error_classes()[name])
    assert first_line.startswith(expected + "."), (
        f"docs/errors.md places {name} as {first_line!r}; the class is {expected}"
    )
    body = after.split("\n### ", 1)[0]
    assert "**Means**" in body, f"{name}: say what it means"
    assert "**Do**" in body, f"{name}: say what to do"


def test_errors_page_draws_the_tree_of_the_module_docstring() -> None:
    doc = copycat.errors.__doc__ or ""
    tree = [line[4:] for line in doc.splitlines() if line.startswith("    ")]
    page = errors_page().split("\n## The tree\n", 1)[1]
    block = page.split("```\n", 2)[1]
    assert block.splitlines() == tree, "copy the tree from copycat/errors.py to docs/errors.md"


# -- the test command ---------------------------------------------------------------------


def test_readme_runs_the_ci_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run the tests\n", 1)[1]
    command = next(line.strip() for line in section.splitlines() if line.startswith("    "))
    assert command == ci, "README.md's test command and .ci/run must be the same line"
    assert "mkdocs build --strict" in ci
