"""ruff (lint and format) and mypy run with the tests, so they cannot drift."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "sweep", "tests"],
        ["ruff", "format", "--check", "sweep", "tests"],
        pytest.param(["mypy"], marks=pytest.mark.slow),  # the slowest of the three: CI runs it
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
