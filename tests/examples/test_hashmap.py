"""examples/hashmap.py and examples/hashmap_sync.py run as their users run them, and
print what the README-style walkthrough promises: writes visible locally once they
return, deletes, and the map coming back from its snapshot after a restart."""

from __future__ import annotations

import pytest

from ._run import EXAMPLES, run_script

EXPECTED_COMMON = [
    "put hello=world -> get('hello') = 'world'",
    "put cat=copy -> get('cat') = 'copy'",
    "put k0..k5; the map holds 8 keys",
    "restarting the node on the same data dir",
    "reloaded from snapshot: True",
    "after restart the map holds 8 keys: ['cat', 'hello', 'k0', 'k1', 'k2', 'k3', 'k4', 'k5']",
    "done",
]


def _check(script: str, expected: list[str]) -> list[str]:
    result = run_script(script)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for line in expected:
        assert line in lines, f"{line!r} missing from:\n{result.stdout}\n{result.stderr}"
    # In order, as the walkthrough tells it.
    positions = [lines.index(line) for line in expected]
    assert positions == sorted(positions), result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return lines


def test_hashmap_asyncio() -> None:
    _check(
        "hashmap.py",
        [
            *EXPECTED_COMMON[:2],
            "delete lang -> get('lang') = None",
            *EXPECTED_COMMON[2:5],
            "after restart: hello='world' lang=None",
            EXPECTED_COMMON[5],
            "put restarted=yes -> get('restarted') = 'yes'",
            "done",
        ],
    )


def test_hashmap_sync_facade() -> None:
    _check(
        "hashmap_sync.py",
        [
            *EXPECTED_COMMON[:2],
            "delete lang -> get('lang') = ''",
            *EXPECTED_COMMON[2:5],
            "after restart (caught up: True): hello='world'",
            *EXPECTED_COMMON[5:],
        ],
    )


@pytest.mark.parametrize("script", ["hashmap.py", "hashmap_sync.py", "kv_server.py"])
def test_examples_are_typed_modules(script: str) -> None:
    """Every example starts with the future import the style guide requires and has a
    docstring telling how to run it."""
    source = (EXAMPLES / script).read_text()
    assert source.startswith('"""'), script
    assert "from __future__ import annotations" in source
    assert f"python examples/{script}" in source
