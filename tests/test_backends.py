"""The same studies on every Keras 3 backend: TensorFlow, JAX and PyTorch, each in a process
of its own (Keras takes its backend once per process), on the CPU."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, run_cli

BACKENDS = ("tensorflow", "jax", "torch")

# What a completed trial records, on every backend: the dashboard's columns.
COMPLETED_ATTRS = {
    "backend", "best_epoch", "best_val_accuracy", "delta_test_vs_baseline", "delta_vs_baseline",
    "epochs_run", "family", "history", "is_baseline", "n_params", "params", "point",
    "platform", "precision", "recall", "seed", "test_accuracy", "test_loss", "train_seconds",
    "val_accuracy", "worker",
}  # fmt: skip


def _probe(backend: str, work: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "backend_probe.py"), backend, str(work)],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_family_trains_prunes_and_diverges_alike_on(backend: str, tmp_path: Path) -> None:
    from sweep import models
    from sweep.config import Params

    got = _probe(backend, tmp_path)
    assert got["keras_backend"] == backend
    # JAX and PyTorch need no TensorFlow: the pipeline and the warp are Keras's own.
    assert got["tensorflow_imported"] == (backend == "tensorflow")

    families = got["families"]
    assert [t["family"] for t in families] == ["baseline", "dropout", "batchnorm", "twoconv"]
    for t in families:
        assert t["state"] == "COMPLETE" and t["backend"] == backend
        assert set(t["attrs"]) == COMPLETED_ATTRS
        # The same network on every backend: the parameter count Keras gives on TensorFlow.
        assert t["n_params"] == models.build(Params(family=t["family"])).count_params()
        assert 0 <= t["val_accuracy"] <= 1 and t["epochs_run"] == 2
        assert sorted(t["intermediate"]) == ["1", "2"]  # an epoch number per report

    baseline, diverged = got["diverges"]
    assert baseline["state"] == "COMPLETE"
    assert diverged["state"] == "PRUNED" and diverged["epochs_run"] == 1
    assert diverged["failure"].startswith("diverged: training loss became nan in epoch 1")

    # Out of memory is the trial's failure, not the worker's: the next trial trains.
    baseline, no_room, next_one = got["out_of_memory"]
    assert baseline["state"] == "COMPLETE" and next_one["state"] == "COMPLETE"
    assert no_room["family"] == "backend_probe:out_of_memory" and no_room["state"] == "PRUNED"
    assert no_room["failure"] == "out of memory at batch 32"  # "GPU memory" on a GPU
    assert next_one["family"] == "dropout" and next_one["epochs_run"] == 2
    assert got["out_of_memory_models_freed"] == [True]  # the failed trial's model is let go

    (pruned,) = got["pruned"]
    assert pruned["state"] == "PRUNED" and pruned["failure"] is None
    assert pruned["epochs_run"] == 1 and list(pruned["intermediate"]) == ["1"]


def _scores(db: Path, backend: str) -> tuple[float, float]:
    """The study's best validation accuracy, and its baseline's."""
    with sqlite3.connect(db) as conn:
        used = conn.execute(
            "SELECT DISTINCT value_json FROM trial_user_attributes WHERE key = 'backend'"
        ).fetchall()
        assert used == [(json.dumps(backend),)]  # every trial, every worker
        best = conn.execute(
            "SELECT MAX(CAST(value_json AS REAL)) FROM trial_user_attributes "
            "WHERE key = 'val_accuracy'"
        ).fetchone()[0]
        (baseline,) = conn.execute(
            "SELECT a.value_json FROM trial_user_attributes a JOIN trial_user_attributes b "
            "ON a.trial_id = b.trial_id WHERE b.key = 'is_baseline' AND b.value_json = 'true' "
            "AND a.key = 'val_accuracy'"
        ).fetchone()
    return best, json.loads(baseline)


@pytest.mark.slow
def test_the_quick_start_gives_results_in_the_same_range_on_every_backend(tmp_path: Path) -> None:
    """The quick start's data and trials, 3 epochs each, through ``sweep launch --backend``:
    every backend learns, and its best trial is within 20 points of TensorFlow's. (One run's
    accuracy after 3 epochs moves by up to 20 points with the seed on any backend, and which
    trials a study runs differs between backends: seen here, TensorFlow's best 0.53 to 0.58,
    JAX's 0.52 to 0.61, PyTorch's 0.43.)"""
    scores = {}
    for backend in BACKENDS:
        db = tmp_path / f"{backend}.db"
        workers = "2" if backend == "torch" else "1"  # the launcher hands its workers theirs
        done = run_cli(
            "sweep", "launch", "--study", "quickstart", "--backend", backend, "--quiet",
            "--max-epochs", "3", "--workers", workers, "--storage", f"sqlite:///{db}",
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        scores[backend] = _scores(db, backend)
    best_tf = scores["tensorflow"][0]
    for best, baseline in scores.values():
        assert baseline > 0.25 and best > 0.35, scores  # well above chance (10%)
        assert abs(best - best_tf) <= 0.2, scores


def test_an_unknown_backend_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    done = run_cli(
        "sweep", "launch", "--study", "quickstart", "--storage", f"sqlite:///{db}",
        cwd=tmp_path, env={"KERAS_BACKEND": "numpy"},
    )  # fmt: skip
    assert done.returncode == 2 and not db.exists()
    assert done.stderr.strip().splitlines()[-1] == (
        "error: $KERAS_BACKEND is 'numpy', which sweep does not train on; use one of "
        "tensorflow, jax, torch (--backend NAME), or unset it"
    )
    done = run_cli("sweep", "launch", "--study", "quickstart", "--backend", "mxnet", cwd=tmp_path)
    assert done.returncode == 2 and "invalid choice: 'mxnet'" in done.stderr


def test_the_backend_is_the_flag_the_launchers_the_files_then_keras_backend(monkeypatch) -> None:
    from sweep import devices

    monkeypatch.delenv("SWEEP_BACKEND", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert devices.backend(None, None) == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert devices.backend(None, None) == "torch"
    assert devices.backend(None, "jax") == "jax"  # the study file's
    monkeypatch.setenv("SWEEP_BACKEND", "tensorflow")  # a launcher's, for its workers
    assert devices.backend(None, "jax") == "tensorflow"
    assert devices.backend("jax", "torch") == "jax"  # --backend


@pytest.mark.slow
def test_mixed_precision_computes_in_bfloat16_and_keeps_the_softmax_in_float32() -> None:
    import keras

    from sweep import data
    from sweep.config import Params, loads_study
    from sweep.training import train

    spec = loads_study('precision = "mixed_bfloat16"\n', name="mixed", source="test")
    try:
        model, result = train(
            Params(epochs=1), data.load("synthetic", subset=100), spec=spec, seed=0
        )
        conv, *_, last = model.layers
        assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
        assert last.compute_dtype == "float32"
        assert 0 <= result.val_accuracy <= 1 and result.test_loss > 0
    finally:
        keras.config.set_dtype_policy("float32")  # the policy is global to the process


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_backend_that_is_not_installed_is_refused_naming_its_extra(backend: str) -> None:
    """In the interpreter this virtual environment was made from, which has no JAX and no
    PyTorch: a real environment without them, not a pretend one."""
    probe = (
        "import importlib.util, sys; "
        f"assert importlib.util.find_spec({backend!r}) is None, 'installed here after all'; "
        "from sweep import devices; from sweep.errors import UserError\n"
        f"try:\n    devices.backend({backend!r}, None)\n"
        "except UserError as exc:\n    print(exc)"
    )
    done = subprocess.run(
        [
            sys._base_executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + probe,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"the {backend} backend is not installed here: pip install -e '.[{backend}]' (from the "
        "repository), or pick another with --backend"
    )
