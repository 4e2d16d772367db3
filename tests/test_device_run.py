"""The prepared device run (``benchmarks/device.py``): its wheels cover what a worker needs on
the GPU machine, and its tiny mode runs every step on the CPU with none of the packages that
machine lacks, so the run cannot rot between the issues that are lent one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from helpers import REPO

from benchmarks import device

# Not on the GPU machine and not carried: importing one there fails, so it fails here too.
ABSENT_THERE = ("tensorflow", "optuna_integration", "psycopg")


def test_the_carried_wheels_cover_what_sweep_needs_there() -> None:
    # Every requirement of sweep and of each carried package, on Python 3.12 / Linux x86-64,
    # is carried, already on that machine, or one a worker never imports.
    assert device.missing_requirements() == []
    assert not set(device.CARRIED) & set(device.DEVICE_HAS)  # one version of each


@pytest.mark.slow
def test_the_wheels_are_the_versions_tested_here_and_fit_a_call(tmp_path: Path) -> None:
    got = device.wheels(tmp_path / "whl")
    versions = {}
    for wheel in got:
        with zipfile.ZipFile(wheel) as zf:
            (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            head = zf.read(meta).decode().splitlines()[:3]
            fields = dict(line.split(": ", 1) for line in head if ": " in line)
        versions[device._name(fields["Name"])] = fields["Version"]
        # Pure Python, or built for the machine's CPython 3.12 on x86-64.
        built = "cp312" in wheel.name and "x86_64" in wheel.name
        assert wheel.name.endswith("-none-any.whl") or built
    assert set(versions) == {device._name(n) for n in device.CARRIED} | {"sweep"}
    assert all(versions[device._name(n)] == metadata.version(n) for n in device.CARRIED)
    assert sum(w.stat().st_size for w in got) < device.CARRY_LIMIT / 2  # the repository too


@pytest.mark.slow
def test_the_tiny_device_run_runs_every_step_without_tensorflow(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    for name in ABSENT_THERE:
        (hide / name).mkdir(parents=True)
        (hide / name / "__init__.py").write_text(f"raise ImportError('no {name} there')\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.device", "run", "--tiny", "--out", str(out)],
        cwd=REPO, env={**env, "PYTHONPATH": f"{hide}{os.pathsep}{REPO}"},
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = json.loads((out / "device.json").read_text())
    printed = (out / "device.log").read_text()
    assert printed.splitlines() == done.stdout.splitlines()  # the log is what it printed
    assert got["mode"] == "tiny" and got["device"] == "CPU"
    assert (got["data"]["train"], got["data"]["test"]) == (400, 100)

    for backend in ("jax", "torch"):
        epoch = got["epochs"][backend]
        assert epoch["epoch_s"] > 0 and epoch["images_per_s"] > 0
        assert epoch["gpu_util_mean"] is None  # no nvidia-smi here

    packing = got["gpu_packing"]
    assert set(packing["per_k"]) == {"1", "2"} and packing["best_k"] in (1, 2)
    assert all(k["epochs_in_window"] > 0 for k in packing["per_k"].values())

    grid = got["grid"]
    assert grid["k"] == packing["best_k"] and grid["epochs_done"] > 0
    assert grid["finished"] or grid["projected_s"] > grid["wall_s"]

    precision = got["precision"]
    for side in ("float32", "mixed_bfloat16"):
        # The baseline and the other grid point, trained (no trial failed for a missing package).
        assert len(precision[side]["val_accuracy"]) == 2
        assert None not in precision[side]["val_accuracy"]
    assert precision["speedup"] > 0

    # On the CPU nothing runs out of memory: every trial of the study trains, in order.
    (oom,) = got["out_of_memory"].values()
    assert oom["exit_code"] == 0
    assert [(batch, state) for batch, state, _ in oom["trials"]] == [
        (64, "COMPLETE"), (320, "COMPLETE"), (128, "COMPLETE")
    ]  # fmt: skip
