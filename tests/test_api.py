"""The Python API: ``import sweep`` is light, and docs/python-api.md's session runs as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

DOC = REPO / "docs" / "python-api.md"


def _python(code: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SWEEP_STORAGE"} | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_import_sweep_loads_no_tensorflow_keras_or_optuna(tmp_path: Path) -> None:
    code = (
        "import sys, sweep; print(sorted(m for m in ('tensorflow', 'keras', 'optuna', 'jax',"
        " 'torch') if m in sys.modules)); print(sweep.__all__)"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    loaded, names = done.stdout.splitlines()
    assert loaded == "[]"
    for name in ("run", "results", "report", "verify", "export", "studies", "Results"):
        assert f"'{name}'" in names


def test_every_public_function_has_a_typed_docstring() -> None:
    import inspect

    import sweep

    for name in sweep.__all__:
        obj = getattr(sweep, name)
        assert inspect.getdoc(obj), name
        if inspect.isfunction(obj):
            hints = obj.__annotations__
            assert "return" in hints, name


@pytest.mark.slow
def test_the_python_api_session_in_the_docs_runs_as_written(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    done = _python("\n".join(blocks), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "baseline" in out and "filters" in out  # the table, the own hyperparameter a column
    assert re.search(r"^4 trials$", out, re.M), out
    about = json.loads((tmp_path / "best.json").read_text())
    assert about["class_names"][:2] == ["plane", "car"]
    assert about["input_shape"] == [32, 32, 3]
    # The arrays reached the study's artifact folder once, by content hash.
    cached = list((tmp_path / "mine-artifacts" / "datasets").glob("*.npz"))
    assert len(cached) == 1 and about["dataset"] == f"arrays:{cached[0].stem}"
    assert "Skipping variable loading" not in done.stderr
