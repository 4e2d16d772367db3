"""What a trial costs beyond its training: the same fixed trials through the service, through
the plain Optuna script a user would otherwise write, and through a bare Keras loop.

The trials: three families × batch 32 and 64, 3 epochs each, no pruning, on synthetic data
(480 training images with --quick, else 2,000). Each side is a fresh process timed whole (the
imports and the data included), on a fresh SQLite file where it has one; the three run in
turn, in a rotating order, and each is summarised by its least CPU time (user + system, of the
process and every process it started) and its least wall time.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.suite import Result, _env

__all__ = ["overhead"]

STUDY = """
description = "benchmark: six fixed trials"
dataset = "synthetic"

[space]
family = ["baseline", "twoconv", "batchnorm"]
batch_size = [32, 64]
epochs = 3

[sampler]
name = "grid"

[baseline]
epochs = 3
"""


Timing = tuple[float, float]  # CPU seconds, wall seconds


def _run(argv: list[str], cwd: Path) -> Timing:
    """(CPU seconds, wall seconds) of a command and everything it started; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def _rotated(
    sides: dict[str, Callable[[], tuple[float, float]]], rounds: int
) -> dict[str, tuple[float, float]]:
    """Each side's least CPU and least wall time over ``rounds``, run in a rotating order."""
    seen: dict[str, list[Timing]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order if r % 2 == 0 else order[::-1]:
            seen[name].append(sides[name]())
    return {name: (min(c for c, _ in runs), min(w for _, w in runs)) for name, runs in seen.items()}


def overhead(quick: bool) -> Result:
    """CPU seconds per trial through ``sweep launch`` (storage, records, figures, notes, kept
    models) over a plain Optuna script (SQLite, ``KerasPruningCallback``, enqueued points)
    running the same six trials; the bare Keras loop beside both. 3 rounds (2 with --quick)."""
    py = sys.executable
    subset = "600" if quick else "2500"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "overhead.toml").write_text(STUDY)
        counter = iter(range(1_000_000))

        def fresh_db() -> str:
            return f"sqlite:///{work / f'run{next(counter)}.db'}"

        launch = [py, "-m", "sweep", "launch", "--study", "overhead.toml", "--quiet"]
        first = fresh_db()
        _run([*launch, "--storage", first, "--subset", subset], work)
        trials = _trials(first)
        (work / "trials.json").write_text(json.dumps(trials))
        plain = [py, "-m", "benchmarks.plain", "--trials", "trials.json", "--subset", subset]
        sides = {
            "service": lambda: _run([*launch, "--storage", fresh_db(), "--subset", subset], work),
            "optuna": lambda: _run([*plain, "--optuna", fresh_db()], work),
            "bare": lambda: _run(plain, work),
        }
        best = _rotated(sides, rounds=2 if quick else 3)
    n = len(trials)
    (svc_cpu, svc_wall), (opt_cpu, opt_wall), (bare_cpu, bare_wall) = (
        best["service"], best["optuna"], best["bare"]
    )  # fmt: skip
    return Result(
        "overhead",
        svc_cpu / opt_cpu,
        1.0,
        details=f"CPU per trial: service {svc_cpu / n:.2f} s, plain Optuna {opt_cpu / n:.2f} s, "
        f"bare Keras {bare_cpu / n:.2f} s (service/bare {svc_cpu / bare_cpu:.3f}); wall: "
        f"{svc_wall:.1f} / {opt_wall:.1f} / {bare_wall:.1f} s; {n} trials of 3 epochs on "
        f"{int(subset) * 4 // 5} images",
        data={
            "service_cpu_s": svc_cpu,
            "optuna_cpu_s": opt_cpu,
            "bare_cpu_s": bare_cpu,
            "service_wall_s": svc_wall,
            "optuna_wall_s": opt_wall,
            "bare_wall_s": bare_wall,
            "trials": n,
        },
    )


def _trials(url: str) -> list[dict[str, object]]:
    """The service's trials as the plain scripts take them: params, training seed, epochs."""
    from dataclasses import asdict

    import optuna

    from sweep import records

    study = optuna.load_study(study_name="overhead", storage=url)
    return [
        {"params": asdict(r.params), "seed": r.seed, "epochs": r.epochs_run}
        for r in records.read_all(study)
        if r.params is not None
    ]
