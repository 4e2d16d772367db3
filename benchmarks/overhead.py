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
import sys
import tempfile
from pathlib import Path

from benchmarks.suite import Result, _timed, least, rotated_runs

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


def overhead(quick: bool) -> Result:
    """CPU seconds per trial through ``sweep launch`` (storage, records, figures, notes, kept
    models) over a plain Optuna script (SQLite, ``KerasPruningCallback``, enqueued points)
    running the same six trials; the bare Keras loop beside both. 4 rounds (3 with --quick),
    each side summarised by its least CPU time; each round's ratio is printed beside it."""
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
        _timed([*launch, "--storage", first, "--subset", subset], work)
        trials = _trials(first)
        (work / "trials.json").write_text(json.dumps(trials))
        plain = [py, "-m", "benchmarks.plain", "--trials", "trials.json", "--subset", subset]
        sides = {
            "service": lambda: _timed([*launch, "--storage", fresh_db(), "--subset", subset], work),
            "optuna": lambda: _timed([*plain, "--optuna", fresh_db()], work),
            "bare": lambda: _timed(plain, work),
        }
        runs = rotated_runs(sides, rounds=3 if quick else 4)
    best = least(runs)
    # Each round's service/plain ratio too: the spread says how far one round can be trusted.
    each = [s.cpu / o.cpu for s, o in zip(runs["service"], runs["optuna"], strict=True)]
    n = len(trials)
    svc_cpu, opt_cpu, bare_cpu = (best[k].cpu for k in ("service", "optuna", "bare"))
    svc_wall, opt_wall, bare_wall = (best[k].wall for k in ("service", "optuna", "bare"))
    return Result(
        "overhead",
        svc_cpu / opt_cpu,
        1.0,
        details=f"CPU per trial: service {svc_cpu / n:.2f} s, plain Optuna {opt_cpu / n:.2f} s, "
        f"bare Keras {bare_cpu / n:.2f} s (service/bare {svc_cpu / bare_cpu:.3f}); wall: "
        f"{svc_wall:.1f} / {opt_wall:.1f} / {bare_wall:.1f} s; each round's CPU ratio "
        f"{', '.join(f'{r:.3f}' for r in each)}; {n} trials of 3 epochs on "
        f"{int(subset) * 4 // 5} images",
        data={
            "service_cpu_s": svc_cpu,
            "optuna_cpu_s": opt_cpu,
            "bare_cpu_s": bare_cpu,
            "service_wall_s": svc_wall,
            "optuna_wall_s": opt_wall,
            "bare_wall_s": bare_wall,
            "trials": n,
            "round_ratios": [round(r, 4) for r in each],
        },
    )


def _trials(url: str) -> list[dict[str, object]]:
    """The service's trials as the plain scripts take them: params, training seed, epochs."""

    import optuna

    from sweep import records

    study = optuna.load_study(study_name="overhead", storage=url)
    return [
        {"params": r.params.to_dict(), "seed": r.seed, "epochs": r.epochs_run}
        for r in records.read_all(study)
        if r.params is not None
    ]
