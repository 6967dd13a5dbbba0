"""The public API of `copycat.placement` is pinned, and the layer imports nothing but
the standard library, `copycat.errors` and itself (no membership, no I/O modules)."""

from __future__ import annotations

import ast
import pathlib

import copycat.placement

API = frozenset(
    {
        "DEFAULT_LOAD_FACTOR",
        "NodeInfo",
        "PlacementRule",
        "RackSpread",
        "Topology",
        "node_hash",
        "place",
        "place_groups",
        "score",
        "violations",
    }
)
ALLOWED_STDLIB = {
    "__future__",
    "collections",
    "dataclasses",
    "enum",
    "hashlib",
    "math",
    "types",
    "typing",
}


def test_all_is_pinned_and_resolves():
    assert set(copycat.placement.__all__) == API
    for name in API:
        obj = getattr(copycat.placement, name)
        module = getattr(obj, "__module__", None)
        if module is not None and callable(obj):
            assert module.startswith("copycat.placement"), name
            assert obj.__doc__, f"{name} has no docstring"


def test_layer_imports_only_errors_and_the_stdlib():
    root = pathlib.Path(copycat.placement.__file__).parent
    for path in root.glob("*.py"):
        source = path.read_text()
        assert source.startswith("# "), f"{path.name} lacks its header comment"
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.startswith("copycat"):
                    assert name == "copycat.errors" or name.startswith("copycat.placement"), (
                        path.name,
                        name,
                    )
                else:
                    assert name.split(".")[0] in ALLOWED_STDLIB, (path.name, name)
