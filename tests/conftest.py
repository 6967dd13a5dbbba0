"""Suite-wide options: `--long` turns on the long randomized runs (more seeds)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long randomized tests (thousands of simulator seeds)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: opt in with --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
