"""The benchmarks. Each returns a :class:`Result`: a ratio, its floor, and what was measured.

Timed pairs are interleaved (A, B, B, A, ...) and each side is summarised by its fastest
run: on a shared machine noise only ever adds time, so the minimum is the steadiest estimate
of what a thing costs, and interleaving puts a slow spell on both sides.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    name: str
    ratio: float | None  # None: skipped
    floor: float | None  # None: measured, with no floor to meet
    higher_is_better: bool = False
    details: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.floor is None:
            return None
        return self.ratio >= self.floor if self.higher_is_better else self.ratio <= self.floor

    def line(self) -> str:
        if self.ratio is None:
            return f"{self.name}: skipped ({self.details})"
        if self.floor is None:
            return f"{self.name}: ratio {self.ratio:.3f} (no floor) {self.details}"
        sign = ">=" if self.higher_is_better else "<="
        verdict = "" if self.met else " MISSED"
        floor = f"(floor {sign} {self.floor}){verdict}"
        return f"{self.name}: ratio {self.ratio:.3f} {floor} {self.details}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "SWEEP_ARTIFACTS")}
    return {**env, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


@dataclass(frozen=True)
class Timing:
    """A command's wall seconds and the CPU seconds (user + system) it and its children
    used."""

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall:.2f} s (CPU {self.cpu:.2f} s)"


def _timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Timing:
    """Wall and CPU time of a command, its child processes included; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(seconds, cpu)


def rotated(sides: dict[str, Callable[[], Timing]], rounds: int) -> dict[str, Timing]:
    """Each side timed ``rounds`` times, in an order that rotates every round (A B C, B C A,
    C A B; with two sides A B, B A), so each goes first, and a slow spell hits them all;
    each is summarised by its least wall time and its least CPU time."""
    return least(rotated_runs(sides, rounds))


def least(runs: dict[str, list[Timing]]) -> dict[str, Timing]:
    """Each side's least wall time and least CPU time."""
    return {
        name: Timing(min(t.wall for t in ts), min(t.cpu for t in ts)) for name, ts in runs.items()
    }


def rotated_runs(sides: dict[str, Callable[[], Timing]], rounds: int) -> dict[str, list[Timing]]:
    """:func:`rotated`'s timings, every round's, in order."""
    seen: dict[str, list[Timing]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seen[name].append(sides[name]())
    return seen


def _interleaved(
    a: Callable[[], Timing], b: Callable[[], Timing], rounds: int
) -> tuple[Timing, Timing]:
    """:func:`rotated` for two sides: A B, B A, ..."""
    best = rotated({"a": a, "b": b}, rounds)
    return best["a"], best["b"]


# --------------------------------------------------------------------------- startup


def startup(quick: bool) -> Result:
    """Wall time of ``python -m sweep.launch --help`` vs ``python -c "import tensorflow"``,
    each a fresh process, the fastest of 3 interleaved pairs with --quick, else 7; CPU time
    beside it. The CLI, its checks and its errors must not wait for TensorFlow."""
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        launch, tf = _interleaved(
            lambda: _timed([py, "-m", "sweep.launch", "--help"], Path(tmp)),
            lambda: _timed([py, "-c", "import tensorflow"], Path(tmp)),
            rounds=3 if quick else 7,
        )
    return Result(
        "startup",
        launch.wall / tf.wall,
        0.25,
        details=f"launch --help {launch.wall:.2f} s, import tensorflow {tf.wall:.2f} s "
        f"(CPU {launch.cpu:.2f} s vs {tf.cpu:.2f} s)",
        data={
            "launch_help_s": launch.wall,
            "import_tensorflow_s": tf.wall,
            "launch_help_cpu_s": launch.cpu,
            "import_tensorflow_cpu_s": tf.cpu,
        },
    )


# --------------------------------------------------------------------------- augmentation


def augment(quick: bool) -> Result:
    """One Exp 4 training epoch with the reports' augmentation (rotation 15 degrees, shifts
    0.1, horizontal flip) through the service's input pipeline (uint8 held once, cast, scaled
    and warped per batch in parallel tf.data calls) vs the same epoch without augmentation:
    the batchnorm family, batch 64, one model each, the same synthetic images (4,000 with
    --quick, else 10,000); the fastest of 3 (else 5) interleaved epochs after a first, traced
    one, wall and CPU time (this process's, every thread's)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from sweep import data, models
    from sweep.config import Augmentation, Params

    n = 4000 if quick else 10000
    x, y, _, _ = data.synthetic(n, 10, seed=0)
    params = Params(family="batchnorm", batch_size=64, learning_rate=1e-3, epochs=1)
    ours = data.augmenter(Augmentation(rotation=15, shift=0.1, zoom=0.0, flip=True), 1.0)
    feeds: dict[str, Callable[[], Any]] = {
        "none": lambda: data.train_dataset(x, y, batch_size=64, seed=0),
        "service": lambda: data.train_dataset(x, y, batch_size=64, seed=0, augment=ours),
    }
    model = {}
    for name, feed in feeds.items():  # one model each, traced by a first epoch
        keras.utils.set_random_seed(0)
        model[name] = models.build(params)
        model[name].fit(feed(), epochs=1, verbose=0)
    times: dict[str, list[Timing]] = {name: [] for name in feeds}
    for r in range(3 if quick else 5):
        for name in feeds if r % 2 == 0 else reversed(feeds):
            start, cpu = time.perf_counter(), time.process_time()
            model[name].fit(feeds[name](), epochs=1, verbose=0)
            times[name].append(Timing(time.perf_counter() - start, time.process_time() - cpu))
    aug = Timing(min(t.wall for t in times["service"]), min(t.cpu for t in times["service"]))
    plain = Timing(min(t.wall for t in times["none"]), min(t.cpu for t in times["none"]))
    return Result(
        "augment",
        aug.wall / plain.wall,
        1.5,
        details=f"augmented {aug}, plain {plain} per epoch of {n} images",
        data={
            "service": aug.wall,
            "none": plain.wall,
            "service_cpu": aug.cpu,
            "none_cpu": plain.cpu,
            "images": n,
        },
    )


# --------------------------------------------------------------------------- workers

_WORKERS_STUDY = """
description = "benchmark: identical-cost trials"
dataset = "synthetic"
n_trials = {n}
keep_models = 1

[space]
family = "baseline"
learning_rate = {{ low = 3e-4, high = 3e-3, log = true }}
batch_size = 64
epochs = {epochs}

[sampler]
name = "random"
"""


@contextlib.contextmanager
def _launcher(
    n: int, epochs: int, flag: list[str], extra: list[str], env: dict[str, str] | None = None
) -> Iterator[Callable[[int], Timing]]:
    """A timer of ``sweep.launch`` on the identical-cost study of ``n`` trials: called with
    ``k``, it runs the study with ``flag k`` on a fresh SQLite file and returns the seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "w.toml").write_text(_WORKERS_STUDY.format(n=n, epochs=epochs))
        runs = iter(range(1_000_000))

        def run(k: int) -> Timing:
            db = work / f"w{next(runs)}.db"
            argv = [sys.executable, "-m", "sweep.launch", "--study", "w.toml", *flag, str(k)]
            argv += ["--quiet", "--storage", f"sqlite:///{db}", *extra]
            return _timed(argv, work, env=env)

        yield run


def workers(quick: bool) -> Result:
    """Finished trials per minute of ``python -m sweep.launch --workers 2`` vs ``--workers 1``
    on this machine: a study of trials that all cost the same (Exp 1's network, batch 64, a
    random learning rate, no pruning), 6 trials of 2 epochs on 2,000 images with --quick,
    else 10 of 3 on 5,000; a fresh SQLite file each; wall time of the whole command, the
    faster of 2 interleaved pairs, CPU time beside it."""
    n, epochs = (6, 2) if quick else (10, 3)
    subset = ["--subset", "2000"] if quick else []
    with _launcher(n, epochs, ["--workers"], subset) as run:
        one, two = _interleaved(lambda: run(1), lambda: run(2), rounds=2)
    return Result(
        "workers",
        one.wall / two.wall,
        1.15,
        higher_is_better=True,
        details=f"{60 * n / two.wall:.1f} trials/min with 2 workers, {60 * n / one.wall:.1f} "
        f"with 1 ({n} trials of {epochs} epochs; CPU {two.cpu:.1f} s vs {one.cpu:.1f} s)",
        data={
            "one_worker_s": one.wall,
            "two_workers_s": two.wall,
            "one_worker_cpu_s": one.cpu,
            "two_workers_cpu_s": two.cpu,
            "trials": n,
        },
    )


def gpu_packing(quick: bool) -> Result:
    """Trials per minute with 4 workers on one GPU vs 1 (``--gpus 0 --trials-per-gpu 4``);
    skipped without a GPU."""
    from sweep.devices import visible_gpus

    if not visible_gpus():
        return Result("gpu_packing", None, 1.0, higher_is_better=True, details="no GPU")
    n = 8 if quick else 16
    gpu = {"CUDA_VISIBLE_DEVICES": "0"}
    with _launcher(n, 3, ["--gpus", "0", "--trials-per-gpu"], [], env=gpu) as run:
        one, four = _interleaved(lambda: run(1), lambda: run(4), rounds=2)
    return Result(
        "gpu_packing",
        one.wall / four.wall,
        1.0,
        higher_is_better=True,
        details=f"{60 * n / four.wall:.1f} trials/min with 4 workers on GPU 0, "
        f"{60 * n / one.wall:.1f} with 1 (CPU {four.cpu:.1f} s vs {one.cpu:.1f} s)",
        data={"one_s": one.wall, "four_s": four.wall, "trials": n},
    )


# --------------------------------------------------------------------------- search

SEARCH_IMAGES = 600  # 480 to train, 120 to score: the grid and five searches fit ~15 minutes
SEARCH_SEEDS = 5  # sampler seeds 0 to 4; --quick runs the first 3


@dataclass
class _SearchResult(Result):
    """The search's floor is two: the median seed's ratio, and every seed reaching the grid's
    best within its study's budget."""

    every_seed_reached: bool = True

    @property
    def met(self) -> bool | None:
        return bool(super().met) and self.every_seed_reached


@dataclass(frozen=True)
class _Seed:
    """One sampler seed's search."""

    seed: int
    reached: float  # epochs spent when a trial first reached the target; inf: never
    best: float  # best val accuracy of the trials finished within the grid's epochs
    trials: int
    epochs: int


def _search_seed(
    seed: int,
    run_one: Callable[[int], Any],
    *,
    budget: int,
    target: float,
    horizon: int,
    stop_at_target: bool,
) -> _Seed:
    """Run a search one trial at a time (``run_one(n)`` runs it to ``n`` finished trials and
    returns the study) until it has reached ``target`` and spent ``horizon`` epochs (or, with
    ``stop_at_target``, either), or its budget is spent."""
    from sweep import records

    spent, reached, best, n = 0, math.inf, 0.0, 0
    for n in range(1, budget + 1):
        last = run_one(n).get_trials(deepcopy=False)[-1]
        spent += records.read(last).epochs_run or 0
        if last.state.name == "COMPLETE":
            if spent <= horizon:
                best = max(best, last.value)
            if last.value >= target:
                reached = min(reached, spent)
        found = not math.isinf(reached)
        if stop_at_target and (found or spent >= horizon):
            break
        if found and spent >= horizon:
            break
    return _Seed(seed, reached, best, n, spent)


def search(quick: bool) -> Result:
    """Epochs the ``search`` study (TPE over family, learning rate, batch size, epochs,
    dropout and augmentation, Hyperband pruning) spends until one of its trials first
    reaches the best validation accuracy of the full ``exp3`` grid (27 points, 270 epochs),
    for each of 5 sampler seeds (``sampler_seed`` 0 to 4) on the same data and training
    seeds: the first 600 synthetic images (480 to train, 120 to score), one worker. The
    baseline is reused from the grid, as ``sweep launch`` reuses it, and its 10 epochs are
    counted all the same. The ratio is the median seed's epochs over the grid's; the floor
    also needs every seed to reach the grid's best within its study's budget (``n_trials``).

    A seed runs until it has reached the grid's best and spent the grid's epochs, or its
    budget is spent; its best validation accuracy is the best of the trials it finished
    within the grid's epochs, the compute the grid had. With --quick, seeds 0 to 2, each
    stopped once it reaches the grid's best or has spent the grid's epochs."""
    import functools
    from dataclasses import replace

    import optuna

    from sweep import data, records
    from sweep import study as studies
    from sweep.config import load_study
    from sweep.loop import run_trials
    from sweep.run import RunOptions
    from sweep.stop import StopEvent
    from sweep.storage import open_storage
    from sweep.trial import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # each trial retraces, by design
    splits = data.load("synthetic", seed=0, subset=SEARCH_IMAGES)
    stop = StopEvent()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'search.db'}"
        storage = open_storage(url)

        def runner(spec: Any, name: str, budget: int) -> Callable[[int], optuna.Study]:
            """Opens the study; called with ``n``, runs it to ``n`` finished trials."""
            run = RunOptions(
                study_name=name, url=url, spec=spec, budget=budget, subset=SEARCH_IMAGES
            )
            study = studies.open_study(run, storage=storage)
            reuse = functools.partial(studies.reusable_baseline, storage, run)
            objective = Objective(spec, splits, reuse=reuse)

            def run_to(n: int) -> optuna.Study:
                run_trials(study, objective, storage=storage, budget=n, stop=stop)
                return study

            return run_to

        grid_spec = replace(load_study("exp3"), dataset="synthetic")
        grid = runner(grid_spec, "grid", 27)(27)
        target = grid.best_value
        grid_epochs = sum(r.epochs_run or 0 for r in records.read_all(grid))

        search_spec = replace(load_study("search"), dataset="synthetic")
        budget = search_spec.n_trials or 0
        seeds = [
            _search_seed(
                k,
                runner(replace(search_spec, sampler_seed=k), f"search-{k}", budget),
                budget=budget,
                target=target,
                horizon=grid_epochs,
                stop_at_target=quick,
            )
            for k in range(3 if quick else SEARCH_SEEDS)
        ]
    reached = [s.reached for s in seeds]
    median, worst = statistics.median(reached), max(reached)
    best = [s.best for s in seeds]

    def shown(e: float) -> str:
        return "never" if math.isinf(e) else f"{e:.0f}"

    every = not math.isinf(worst)
    within = (
        f"every seed reached it within {budget} trials"
        if every
        else f"not every seed reached it within {budget} trials"
    )
    if quick:
        within = "each stopped there or at the grid's epochs"
    best_label = "when it stopped" if quick else f"in its first {grid_epochs} epochs"
    return _SearchResult(
        "search",
        median / grid_epochs,
        0.25,
        details=f"epochs to reach the grid's best val accuracy {target:.4f}: median "
        f"{shown(median)}, worst {shown(worst)} vs the grid's {grid_epochs} (sampler seeds "
        f"{seeds[0].seed}-{seeds[-1].seed}: {', '.join(map(shown, reached))}; {within}); "
        f"best val accuracy {best_label}: median {statistics.median(best):.4f}, worst "
        f"{min(best):.4f} ({', '.join(f'{b:.4f}' for b in best)})",
        data={
            "target": target,
            "grid_epochs": grid_epochs,
            "images": SEARCH_IMAGES,
            "budget": budget,
            "sampler_seeds": [s.seed for s in seeds],
            "epochs_to_reach": [None if math.isinf(e) else e for e in reached],  # None: never
            "median_epochs": None if math.isinf(median) else median,
            "worst_epochs": None if math.isinf(worst) else worst,
            "best_val_accuracy": best,
            "trials": [s.trials for s in seeds],
            "epochs": [s.epochs for s in seeds],
        },
        every_seed_reached=every or quick,
    )
